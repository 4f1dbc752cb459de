package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
)

// checkTransfer reads the written volume back and compares it with the
// source, then mounts it once. It returns the regular files compared. A
// difference fails the transfer naming the file; the entry is removed
// from the volume, so that running the command again writes it anew.
func checkTransfer(ctx context.Context, t *target, h *keywrap.Header, opt TransferOptions, tot totals, prog Progress) (int64, error) {
	dst, err := NewBackingSource(t.backing, &fusefs.Keys{Content: t.cipher, Names: t.names})
	if err != nil {
		return 0, fmt.Errorf("read back %s: %w", t.backing, err)
	}
	prog.Start("check", tot.entries, tot.bytes)
	n, err := compareTrees(ctx, opt.Source, dst, opt.Workers, prog)
	prog.Done()
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("read back %s: %w", t.backing, cerr)
	}
	if err != nil {
		var m *Mismatch
		if errors.As(err, &m) && m.Backing != "" {
			if rerr := t.discard(m.Backing); rerr != nil {
				opt.Log.Warn().Err(rerr).Str("path", m.Path).Msg("cannot remove the entry that differs")
			}
			return n, fmt.Errorf("check of %s against %s: %w (removed from the volume, to be written anew)", t.backing, opt.SourcePath, err)
		}
		return n, fmt.Errorf("check of %s against %s: %w", t.backing, opt.SourcePath, err)
	}
	if err := mountCheck(ctx, h, opt, tot.rootNames); err != nil {
		return n, fmt.Errorf("check of %s: %w", t.backing, err)
	}
	return n, nil
}

// discard removes the entry at the backing path rel (a directory with
// everything in it).
func (t *target) discard(rel string) error {
	dir, name := splitRel(rel)
	if name == "" {
		return nil
	}
	dfd, err := openDirRel(t.rootfd, dir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return t.remove(&dirRec{fd: dfd}, name)
}

// mountCheck mounts the written volume read-only, with its own key
// unwrapped by the KMS as any mount would, and lists its root.
func mountCheck(ctx context.Context, h *keywrap.Header, opt TransferOptions, rootNames int) error {
	dir, err := os.MkdirTemp("", checkMountPrefix+"*")
	if err != nil {
		return fmt.Errorf("temporary mountpoint: %w", err)
	}
	defer os.Remove(dir)
	mnt, err := CanonicalMountpoint(dir)
	if err != nil {
		return err
	}
	var flags MountFlags
	flags.put(FlagNoAtime, true)
	flags.put(FlagNoDirAtime, true)
	spec := MountSpec{
		Backing: opt.Target.Backing, Mountpoint: mnt, Header: h, KMS: opt.Target.KMSName, KMSConfig: opt.KMSConfig,
		ReadOnly: true, OnRevoke: OnRevokeEIO, KeyCheckInterval: DefaultKeyCheckInterval, OfflineGrace: DefaultOfflineGrace,
		Flags: flags,
	}
	// The mount's own log lines would interleave with the progress.
	log := opt.Log
	if log.GetLevel() > zerolog.DebugLevel {
		log = log.Level(zerolog.ErrorLevel)
	}
	m, err := mountTemporary(ctx, spec, log)
	if err != nil {
		return fmt.Errorf("the volume does not mount: %w", err)
	}
	list, lerr := os.ReadDir(mnt)
	if err := UnmountTemporary(m); err != nil {
		return fmt.Errorf("unmount the check mount %s: %w", mnt, err)
	}
	if lerr != nil {
		return fmt.Errorf("list the mounted volume: %w", lerr)
	}
	if len(list) != rootNames {
		return fmt.Errorf("the mounted volume shows %d names in its root, the source has %d", len(list), rootNames)
	}
	return nil
}

// checkMountPrefix starts the name of the temporary mountpoint of the
// check.
const checkMountPrefix = "encvol-check-"

// dropDeadCheckMounts detaches the check mounts of backing that a killed
// run left behind: the caller holds the volume's lock, so no live process
// serves them.
func dropDeadCheckMounts(backing string, log zerolog.Logger) {
	mounts, err := EncvolMounts()
	if err != nil {
		return
	}
	for _, m := range mounts {
		if m.Source != backing || !strings.HasPrefix(filepath.Base(m.Mountpoint), checkMountPrefix) {
			continue
		}
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil {
			log.Warn().Err(err).Str("path", m.Mountpoint).Msg("cannot detach the check mount of a stopped run")
			continue
		}
		_ = os.Remove(m.Mountpoint)
	}
}
