package fusefs

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// The kernel never updates the access time of a FUSE inode (it marks them
// S_NOATIME): a stat(2) on the mount reports the backing file's access
// time, which the backing file system changes when the daemon reads it.
// So noatime and nodiratime are honoured here, by reading backing files
// and listing backing directories with O_NOATIME (fileNoAtime and
// dirNoAtime of FS).

// openatNoAtime is unix.Openat with noatime (O_NOATIME or 0) added. Only
// the owner of a file or a holder of CAP_FOWNER may ask for O_NOATIME; for
// a backing file that the daemon does not own, the open is retried
// without it rather than failing.
func openatNoAtime(dirfd int, name string, flags int, mode uint32, noatime int) (int, error) {
	if noatime != 0 {
		fd, err := unix.Openat(dirfd, name, flags|noatime, mode)
		if !errors.Is(err, syscall.EPERM) {
			return fd, err
		}
	}
	return unix.Openat(dirfd, name, flags, mode)
}
