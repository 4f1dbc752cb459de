package fusefs

import (
	"golang.org/x/sys/unix"
)

// chmodEntry sets the permission bits of a backing entry: through fd when
// the entry is open, else by name without following a final symlink.
// fchmodat(2) has no flag for that, and the daemon usually runs as root:
// a symlink that someone who can write the backing directory put in an
// entry's place would otherwise redirect the chmod to any file on the
// host. The entry is opened with O_PATH|O_NOFOLLOW, which pins the inode
// the name refers to now, and changed through /proc/self/fd, which names
// exactly that inode.
func chmodEntry(fd, dirfd int, name string, mode uint32) error {
	if fd >= 0 {
		return unix.Fchmod(fd, mode)
	}
	pfd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// Symlinks have no mode of their own on Linux; this one is not
		// what the mount created here.
		return unix.ELOOP
	}
	return unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+itoa(pfd), mode, 0)
}
