package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// SnapshotOptions say what `encvol snapshot create` takes.
type SnapshotOptions struct {
	Volume SnapshotVolume
	// Name of the snapshot directory; "" uses the snapshot ID.
	Name string
	// Lease is the pause lease (DefaultPauseLease when 0).
	Lease    time.Duration
	Progress Progress
	Log      zerolog.Logger
}

// SnapshotResult reports a snapshot taken.
type SnapshotResult struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Path   string `json:"path"`
	Method string `json:"method"` // MethodReflink or MethodCopy
	// PausedMS is how long the mount's writes waited (0 when the volume
	// was not mounted read-write).
	PausedMS float64 `json:"paused_ms"`
	// PausedAt is when the pause was asked for: every write(2) that
	// returned before it is in the snapshot.
	PausedAt *time.Time `json:"paused_at,omitempty"`
	// Mounted names the mountpoint of the volume while it was copied.
	Mounted    string      `json:"mounted,omitempty"`
	VolumeID   string      `json:"volume_id"`
	Entries    int         `json:"entries"`
	FirstPass  CloneStats  `json:"first_pass"`
	SecondPass *CloneStats `json:"second_pass,omitempty"`
	Pause      *PauseInfo  `json:"pause,omitempty"`
	DurationMS float64     `json:"duration_ms"`
}

// CreateSnapshot copies the volume's backing directory into a new snapshot.
// It needs the volume's key (the manifest is authenticated with it): a key
// that is disabled or scheduled for deletion refuses with a *KeyError.
// An unmounted volume is locked while it is copied; a mounted one is copied
// once while writes go on, then paused, copied again where it changed, and
// resumed. The copy is written under a dot name and renamed into place when
// complete, so a snapshot that is killed halfway never looks complete; the
// next snapshot command removes it.
func CreateSnapshot(ctx context.Context, client kmsclient.Client, opt SnapshotOptions) (*SnapshotResult, error) {
	start := time.Now()
	v := opt.Volume
	id, err := NewSnapshotID()
	if err != nil {
		return nil, err
	}
	name := opt.Name
	if name == "" {
		name = id
	}
	if err := CheckSnapshotName(name); err != nil {
		return nil, withKind(ErrSnapshotName, fmt.Errorf("snapshot of %s: %w", v.Backing, err))
	}
	u, err := UnlockHeader(ctx, client, v.KMS, v.Backing, v.Header)
	if err != nil {
		return nil, fmt.Errorf("snapshot of volume %s refused: %w", v.Backing, err)
	}
	defer u.Close()

	dirLock, err := lockSnapshotDir(v)
	if err != nil {
		return nil, err
	}
	defer dirLock.release()
	final := filepath.Join(v.Snapshots, name)
	if _, err := os.Lstat(final); err == nil {
		return nil, withKind(ErrSnapshotName, fmt.Errorf("a snapshot named %q already exists in %s; choose another --name", name, v.Snapshots))
	}

	// Mounted or not: the volume lock tells. Held, it keeps a mount from
	// starting while the copy runs.
	res := &SnapshotResult{ID: id, Name: name, Path: final, VolumeID: v.Header.VolumeID}
	var mount *Status
	lock, err := LockVolume(v.Backing)
	if err != nil {
		var ie *InUseError
		if !errors.As(err, &ie) {
			return nil, err
		}
		if mount, err = FindMountOf(ctx, v.Backing); err != nil {
			return nil, err
		}
		if mount == nil {
			return nil, fmt.Errorf("snapshot of volume %s refused: %w", v.Backing, ie)
		}
		res.Mounted = mount.Mountpoint
		if err := checkOutsideMount(v.Snapshots, mount.Mountpoint); err != nil {
			return nil, err
		}
	}
	defer lock.Release()

	partial := filepath.Join(v.Snapshots, partialPrefix+id)
	if err := os.Mkdir(partial, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", v.Backing, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(partial)
		}
	}()
	live := mount != nil && !mount.ReadOnly
	dst := filepath.Join(partial, SnapshotBackingDir)
	clone, st, err := CloneTree(ctx, v.Backing, dst, CloneOptions{Progress: opt.Progress, Live: mount != nil})
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", v.Backing, err)
	}
	res.FirstPass = st
	if live {
		if err := secondPass(ctx, clone, mount, opt, res); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", v.Backing, err)
		}
	}
	res.Method = clone.Method()
	res.Entries = clone.Entries()

	if err := writeManifest(partial, dst, u, res); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", v.Backing, err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, partial, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE here; the snapshot directory lock keeps
		// other snapshot commands from taking the name meanwhile.
		err = os.Rename(partial, final)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: put %s in place: %w", v.Backing, final, err)
	}
	ok = true
	if err := keywrap.SyncDir(v.Snapshots); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", v.Backing, err)
	}
	res.DurationMS = ms(time.Since(start))
	opt.Log.Debug().Str("volume", v.Header.VolumeID).Str("path", final).Str("method", res.Method).
		Float64("paused_ms", res.PausedMS).Int("entries", res.Entries).Msg("snapshot taken")
	return res, nil
}

// secondPass pauses the mount, copies what changed since the first pass and
// resumes.
func secondPass(ctx context.Context, clone *TreeClone, mount *Status, opt SnapshotOptions, res *SnapshotResult) error {
	lease := opt.Lease
	if lease == 0 {
		lease = DefaultPauseLease
	}
	at := time.Now()
	sess, err := pauseMount(ctx, mount.Socket, lease)
	if err != nil {
		return err
	}
	res.PausedAt, res.Pause = &at, &sess.info
	st, err := clone.Update(ctx)
	if err != nil {
		sess.abort()
		return err
	}
	res.SecondPass = &st
	r, err := sess.resume()
	res.PausedMS = r.PausedMS
	return err
}

// writeManifest makes the copy durable and writes the manifest of res into
// the snapshot directory dir.
func writeManifest(dir, backing string, u *Unlocked, res *SnapshotResult) error {
	sum, err := headerSum(backing)
	if err != nil {
		return err
	}
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		return fmt.Errorf("copied header: %w", err)
	}
	if h.VolumeID != u.Header.VolumeID {
		return fmt.Errorf("the copied header names volume %s, the volume is %s", h.VolumeID, u.Header.VolumeID)
	}
	m := &Manifest{SnapshotID: res.ID, Name: res.Name, VolumeID: h.VolumeID, Created: time.Now().UTC(), Entries: res.Entries, HeaderSHA256: sum}
	b, err := m.Encode(u.DK)
	if err != nil {
		return err
	}
	// One syncfs for the whole copy instead of an fsync per file.
	if err := syncTree(dir); err != nil {
		return err
	}
	return keywrap.WriteFileAtomic(filepath.Join(dir, ManifestFile), b, 0o600)
}

// checkOutsideMount refuses a snapshot directory on the volume's own mount:
// the last pass would write into the mount while its writes wait for it.
func checkOutsideMount(dir, mountpoint string) error {
	var d, m unix.Stat_t
	if err := unix.Stat(dir, &d); err != nil {
		return fmt.Errorf("snapshot directory %s: %w", dir, err)
	}
	if err := unix.Stat(mountpoint, &m); err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if d.Dev == m.Dev {
		return fmt.Errorf("the snapshot directory %s is inside the volume's own mount %s, where the snapshot would wait for itself; set snapshots to a directory outside the mount", dir, mountpoint)
	}
	return nil
}
