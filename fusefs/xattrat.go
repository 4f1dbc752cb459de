package fusefs

import (
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// getxattrAtMissing is set once the kernel lacks getxattrat(2) (before
// Linux 6.13); every later call then takes the path walk.
var getxattrAtMissing atomic.Bool

// xattrArgs is struct xattr_args of getxattrat(2).
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// lgetxattrFast is unix.Lgetxattr for a path of the form
// /proc/self/fd/N/name (what fdPath builds): getxattrat(2) on the open
// directory N skips the walk through procfs that the path costs on every
// lookup and directory listing. Other paths, and kernels without
// getxattrat, use lgetxattr.
func lgetxattrFast(path, attr string, dest []byte) (int, error) {
	if getxattrAtMissing.Load() {
		return unix.Lgetxattr(path, attr, dest)
	}
	rest, ok := strings.CutPrefix(path, "/proc/self/fd/")
	if !ok {
		return unix.Lgetxattr(path, attr, dest)
	}
	fdStr, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.IndexByte(name, '/') >= 0 {
		return unix.Lgetxattr(path, attr, dest)
	}
	dirfd := 0
	for i := 0; i < len(fdStr); i++ {
		c := fdStr[i]
		if c < '0' || c > '9' || i > 9 {
			return unix.Lgetxattr(path, attr, dest)
		}
		dirfd = dirfd*10 + int(c-'0')
	}
	if fdStr == "" {
		return unix.Lgetxattr(path, attr, dest)
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{size: uint32(len(dest))}
	if len(dest) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&dest[0])))
	}
	r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		uintptr(unix.AT_SYMLINK_NOFOLLOW), uintptr(unsafe.Pointer(a)),
		uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	// dest is reached only through the integer in args.
	runtime.KeepAlive(dest)
	switch e {
	case 0:
		return int(r), nil
	case unix.ENOSYS:
		getxattrAtMissing.Store(true)
		return unix.Lgetxattr(path, attr, dest)
	default:
		return 0, e
	}
}
