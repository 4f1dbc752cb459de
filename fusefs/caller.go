package fusefs

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Why the daemon looks at what a caller is doing:
//
// With the writeback cache the kernel takes write(2) into its page cache
// and tells the daemon nothing; the only request that a write(2) to a file
// with expired attributes sends first is a GETATTR carrying the file
// handle flag. Reads past the cached end of file and lseek(SEEK_END) send
// the same request. When the backing file system is nearly full (space.go)
// the daemon answers a write's GETATTR with ENOSPC if the data would not
// fit, and it must not answer a read that way. The thread that sent the
// request is asleep in its system call, so /proc/TID/syscall names the
// call and its arguments; for the vectored calls the iovec array is read
// from the caller's memory. Reading either needs the same access as
// ptrace, which a daemon running as root (or as the caller's user) has.

// callerOp is what the thread behind a request is doing.
type callerOp struct {
	known bool  // the system call could be read
	write bool  // a call that writes into a file: write(2) and its kin
	size  int64 // bytes the call writes; -1 when not known
}

// inspectCaller reads the system call of thread tid. A caller that cannot
// be inspected counts as a write of unknown size: refusing a read in
// error is a smaller harm than losing a write.
func inspectCaller(tid uint32) callerOp {
	unknown := callerOp{write: true, size: -1}
	if tid == 0 {
		return unknown
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/syscall")
	if err != nil {
		return unknown
	}
	f := strings.Fields(string(b))
	// "NR arg0 ... arg5 sp pc"; "running" or "-1 sp pc" when not in a call.
	if len(f) < 7 {
		return unknown
	}
	nr, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return unknown
	}
	var args [6]uint64
	for i := range args {
		v, err := strconv.ParseUint(strings.TrimPrefix(f[i+1], "0x"), 16, 64)
		if err != nil {
			return unknown
		}
		args[i] = v
	}
	return classifySyscall(tid, nr, args)
}

// classifySyscall tells writes from everything else. Calls that write
// through a file descriptor: write, pwrite64 (count in the third
// argument), the vectored ones (count in the iovecs), copy_file_range and
// splice (fifth), sendfile (fourth). Writes submitted through io_uring or
// aio have no count here.
func classifySyscall(tid uint32, nr int64, a [6]uint64) callerOp {
	switch nr {
	case unix.SYS_WRITE, unix.SYS_PWRITE64:
		return callerOp{known: true, write: true, size: clampSize(a[2])}
	case unix.SYS_WRITEV, unix.SYS_PWRITEV, unix.SYS_PWRITEV2:
		return callerOp{known: true, write: true, size: iovecBytes(tid, a[1], a[2])}
	case unix.SYS_COPY_FILE_RANGE, unix.SYS_SPLICE:
		return callerOp{known: true, write: true, size: clampSize(a[4])}
	case unix.SYS_SENDFILE:
		return callerOp{known: true, write: true, size: clampSize(a[3])}
	case unix.SYS_IO_SUBMIT, unix.SYS_IO_URING_ENTER:
		return callerOp{known: true, write: true, size: -1}
	}
	return callerOp{known: true}
}

func clampSize(v uint64) int64 {
	if v > 1<<40 {
		return 1 << 40
	}
	return int64(v)
}

// maxIovecs is the kernel's UIO_MAXIOV.
const maxIovecs = 1024

// iovecBytes sums the lengths of the iovec array at addr in the memory of
// tid, or returns -1.
func iovecBytes(tid uint32, addr, count uint64) int64 {
	if count == 0 {
		return 0
	}
	if count > maxIovecs {
		return -1
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", tid))
	if err != nil {
		return -1
	}
	defer f.Close()
	buf := make([]byte, 16*count)
	if _, err := f.ReadAt(buf, int64(addr)); err != nil {
		return -1
	}
	var total uint64
	for i := uint64(0); i < count; i++ {
		total += binary.NativeEndian.Uint64(buf[16*i+8:])
	}
	return clampSize(total)
}
