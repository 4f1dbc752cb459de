package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// Restoring a snapshot replaces the volume's backing directory with a copy
// of the snapshot's, through three siblings of the backing directory:
//
//	BACKING.restore-partial  the copy being made
//	BACKING.restore-ready    the copy, complete
//	BACKING.restore-old      the replaced backing directory, until the end
//
// The copy is made while the volume stays as it was; then BACKING becomes
// restore-old, restore-ready becomes BACKING, and restore-old is removed.
// Whatever step a kill interrupts, running the restore again (or any
// restore of that volume) first finishes or undoes it (recoverRestore): a
// complete copy is put in place, an incomplete one removed, and the old
// state comes back when no complete copy exists.

const (
	restorePartialSuffix = ".restore-partial"
	restoreReadySuffix   = ".restore-ready"
	restoreOldSuffix     = ".restore-old"
)

// RestoreResult reports a restore.
type RestoreResult struct {
	Backing    string     `json:"backing"`
	Snapshot   string     `json:"snapshot"`
	SnapshotID string     `json:"snapshot_id"`
	VolumeID   string     `json:"volume_id"`
	Method     string     `json:"method"`
	Copied     CloneStats `json:"copied"`
}

// RestoreSnapshot puts volume v back to snapshot s. The volume must not be
// mounted; the snapshot's manifest must authenticate under its key and
// belong to v. The replaced state is kept until the restore has succeeded.
func RestoreSnapshot(ctx context.Context, client kmsclient.Client, v SnapshotVolume, s *Snapshot, progress Progress) (*RestoreResult, error) {
	dirLock, err := lockSnapshotDir(v)
	if err != nil {
		return nil, err
	}
	defer dirLock.release()
	lock, err := LockVolume(v.Backing)
	if err != nil {
		var ie *InUseError
		if errors.As(err, &ie) && ie.Mountpoint != "" {
			return nil, &reworded{msg: fmt.Sprintf("volume %s is mounted on %s: a snapshot can only be restored onto an unmounted volume; unmount it first (`encvol umount %s`)",
				v.Backing, ie.Mountpoint, ie.Mountpoint), err: err}
		}
		return nil, err
	}
	defer lock.Release()
	if err := recoverRestore(v.Backing); err != nil {
		return nil, err
	}

	u, err := UnlockHeader(ctx, client, v.KMS, s.Backing, s.Header)
	if err != nil {
		return nil, fmt.Errorf("restore of %s from snapshot %s refused: %w", v.Backing, s.Path, err)
	}
	err = s.Verify(u.DK)
	u.Close()
	if err != nil {
		return nil, fmt.Errorf("restore of %s refused: %w", v.Backing, err)
	}
	if s.Manifest.VolumeID != v.Header.VolumeID {
		return nil, fmt.Errorf("restore of %s refused: snapshot %s belongs to volume %s, not %s", v.Backing, s.Path, s.Manifest.VolumeID, v.Header.VolumeID)
	}

	partial := v.Backing + restorePartialSuffix
	clone, st, err := CloneTree(ctx, s.Backing, partial, CloneOptions{Progress: progress})
	if err != nil {
		_ = os.RemoveAll(partial)
		return nil, fmt.Errorf("restore of %s from %s failed, the volume is unchanged: %w", v.Backing, s.Path, err)
	}
	if err := syncTree(partial); err != nil {
		_ = os.RemoveAll(partial)
		return nil, fmt.Errorf("restore of %s from %s failed, the volume is unchanged: %w", v.Backing, s.Path, err)
	}
	ready := v.Backing + restoreReadySuffix
	if err := os.Rename(partial, ready); err != nil {
		_ = os.RemoveAll(partial)
		return nil, fmt.Errorf("restore of %s failed, the volume is unchanged: %w", v.Backing, err)
	}
	if err := swapRestored(v.Backing); err != nil {
		return nil, err
	}
	return &RestoreResult{Backing: v.Backing, Snapshot: s.Path, SnapshotID: s.Manifest.SnapshotID, VolumeID: v.Header.VolumeID,
		Method: clone.Method(), Copied: st}, nil
}

// swapRestored puts BACKING.restore-ready in the place of backing, keeping
// the old directory as BACKING.restore-old until the new one is in place.
func swapRestored(backing string) error {
	ready, old := backing+restoreReadySuffix, backing+restoreOldSuffix
	parent := filepath.Dir(backing)
	if err := os.Rename(backing, old); err != nil {
		return fmt.Errorf("restore of %s: move the current backing directory aside: %w (the restored copy waits in %s; rerun the restore)", backing, err, ready)
	}
	if err := os.Rename(ready, backing); err != nil {
		return fmt.Errorf("restore of %s: put the restored copy in place: %w (the old state is in %s; rerun the restore)", backing, err, old)
	}
	if err := keywrap.SyncDir(parent); err != nil {
		return fmt.Errorf("restore of %s: %w", backing, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("restore of %s: the volume is restored, but the old backing directory %s could not be removed: %w", backing, old, err)
	}
	return nil
}

// recoverRestore finishes or undoes a restore of backing that was
// interrupted, from the siblings it left.
func recoverRestore(backing string) error {
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	partial, ready, old := backing+restorePartialSuffix, backing+restoreReadySuffix, backing+restoreOldSuffix
	if exists(partial) {
		if err := os.RemoveAll(partial); err != nil {
			return fmt.Errorf("remove the unfinished restore copy %s: %w", partial, err)
		}
	}
	switch {
	case exists(ready) && exists(old) && !exists(backing):
		// Killed between the two renames: the copy is complete.
		if err := os.Rename(ready, backing); err != nil {
			return fmt.Errorf("finish the interrupted restore of %s: %w", backing, err)
		}
	case exists(ready) && exists(backing):
		// Killed after the copy, before the swap: it is complete too.
		return swapRestored(backing)
	case !exists(backing) && exists(old):
		// The copy never completed; the old state comes back.
		if err := os.Rename(old, backing); err != nil {
			return fmt.Errorf("undo the interrupted restore of %s: %w", backing, err)
		}
	}
	if exists(old) && exists(backing) {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("remove %s left by an earlier restore: %w", old, err)
		}
	}
	return nil
}

// syncTree makes a copied tree durable with one syncfs of its file system.
func syncTree(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
