package volume

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CheckOverlap refuses a mountpoint and a backing directory that are the
// same directory or lie one inside the other. Either way the daemon would
// reach its backing files through its own mount: every request it serves
// would ask the kernel for another one, until the daemon runs out of
// threads and everything that touches the mount (ls, umount) hangs.
//
// Directories are compared by device and inode, never by name, so a
// symlink or a bind mount that shows the backing directory under another
// path is caught too. A path that cannot be looked at is left to the
// checks that report missing paths.
func CheckOverlap(backing, mountpoint string) error {
	b, err := dirIdentity(backing)
	if err != nil {
		return nil
	}
	m, err := dirIdentity(mountpoint)
	if err != nil {
		return nil
	}
	if b == m {
		return fmt.Errorf("the mountpoint %s is the backing directory %s itself: the mount would serve its own ciphertext back to itself; choose an empty directory outside the backing directory as the mountpoint", mountpoint, backing)
	}
	inside, err := hasAncestor(mountpoint, b)
	if err != nil {
		return err
	}
	if inside {
		return fmt.Errorf("the mountpoint %s is inside the backing directory %s: the mount would serve its own backing files; choose a mountpoint outside the backing directory", mountpoint, backing)
	}
	inside, err = hasAncestor(backing, m)
	if err != nil {
		return err
	}
	if inside {
		return fmt.Errorf("the backing directory %s is inside the mountpoint %s: once mounted it could only be reached through the mount itself; choose a mountpoint that does not contain the backing directory", backing, mountpoint)
	}
	return nil
}

// fileID names a directory independently of the path used to reach it.
type fileID struct{ dev, ino uint64 }

func identityOf(st *unix.Stat_t) fileID { return fileID{dev: st.Dev, ino: st.Ino} }

func dirIdentity(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return identityOf(&st), nil
}

// hasAncestor reports whether one of the directories above path (after
// resolving its symlinks) is want.
func hasAncestor(path string, want fileID) (bool, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, fmt.Errorf("resolve %s: %w", path, err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return false, err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		id, err := dirIdentity(dir)
		if err != nil && !os.IsPermission(err) {
			return false, fmt.Errorf("stat %s: %w", dir, err)
		}
		if err == nil && id == want {
			return true, nil
		}
		if dir == "/" {
			return false, nil
		}
	}
}
