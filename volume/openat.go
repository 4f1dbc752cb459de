package volume

import (
	"errors"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Copy, import and the check after them reach entries by their path below
// a root directory they hold open. Paths are resolved without following
// any symlink (a tree that changes under us must not lead outside it), and
// component by component when they are too long for one system call.

// maxOneCallPath is the longest relative path passed to one openat2; deeper
// paths are walked a directory at a time, since PATH_MAX is 4096.
const maxOneCallPath = 3072

// openRel opens rel (a "/"-separated path relative to the directory open
// as rootfd; "" is that directory) with flags, following no symlink.
func openRel(rootfd int, rel string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	if rel == "" {
		return unix.Openat(rootfd, ".", flags, 0)
	}
	if len(rel) <= maxOneCallPath {
		fd, err := unix.Openat2(rootfd, rel, &unix.OpenHow{
			Flags:   uint64(flags),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if !errors.Is(err, unix.ENOSYS) {
			return fd, err
		}
	}
	dir, name := splitRel(rel)
	dfd, err := openDirRel(rootfd, dir)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dfd)
	return unix.Openat(dfd, name, flags, 0)
}

// splitRel splits a relative path into its directory ("" for the root)
// and last name.
func splitRel(rel string) (dir, name string) {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i], rel[i+1:]
	}
	return "", rel
}

// fdName names entry name of the directory open as dirfd for the system
// calls that take only a path (l*xattr, utimensat of a descriptor).
func fdName(dirfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if name == "" {
		return p
	}
	return p + "/" + name
}

// openNoAtime opens rel for reading without updating its access time where
// the caller may ask for that (the owner, or CAP_FOWNER); elsewhere it
// opens it plainly rather than failing.
func openNoAtime(rootfd int, rel string, flags int) (int, error) {
	fd, err := openRel(rootfd, rel, flags|unix.O_NOATIME)
	if errors.Is(err, syscall.EPERM) {
		return openRel(rootfd, rel, flags)
	}
	return fd, err
}
