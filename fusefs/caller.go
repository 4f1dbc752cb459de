package fusefs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

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

const (
	callerTries = 50
	callerRetry = 100 * time.Microsecond
)

// callerOp is what the thread behind a request is doing.
type callerOp struct {
	known bool  // the system call could be read
	write bool  // a call that writes into a file: write(2) and its kin
	size  int64 // bytes the call writes; -1 when not known
	// off is where the write starts; -1 when not known or when it appends
	// (O_APPEND: at an end of file only the kernel knows).
	off int64
}

// inspectCaller reads the system call of thread tid. A caller that cannot
// be inspected counts as a write of unknown size: refusing a read in
// error is a smaller harm than losing a write.
func inspectCaller(tid uint32) callerOp {
	unknown := callerOp{write: true, size: -1}
	if tid == 0 {
		return unknown
	}
	path := "/proc/" + strconv.FormatUint(uint64(tid), 10) + "/syscall"
	// The kernel answers "running" until the caller has gone to sleep
	// waiting for this request, which it does within microseconds.
	var b []byte
	for try := 0; ; try++ {
		var err error
		b, err = os.ReadFile(path)
		if err != nil {
			return unknown
		}
		if !bytes.HasPrefix(b, []byte("running")) {
			break
		}
		if try == callerTries {
			return unknown
		}
		time.Sleep(callerRetry)
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
	op := callerOp{known: true, write: true, size: -1, off: -1}
	switch nr {
	case unix.SYS_WRITE:
		op.size, op.off = clampSize(a[2]), filePosition(tid, a[0])
	case unix.SYS_PWRITE64:
		op.size, op.off = clampSize(a[2]), offset(a[3])
	case unix.SYS_WRITEV:
		op.size, op.off = iovecBytes(tid, a[1], a[2]), filePosition(tid, a[0])
	case unix.SYS_PWRITEV, unix.SYS_PWRITEV2:
		op.size, op.off = iovecBytes(tid, a[1], a[2]), offset(a[3])
		if int64(a[3]) == -1 { // pwritev2 at the file position
			op.off = filePosition(tid, a[0])
		}
	case unix.SYS_COPY_FILE_RANGE, unix.SYS_SPLICE:
		op.size = clampSize(a[4])
	case unix.SYS_SENDFILE:
		op.size = clampSize(a[3])
	case unix.SYS_IO_SUBMIT, unix.SYS_IO_URING_ENTER:
	default:
		return callerOp{known: true, off: -1}
	}
	return op
}

func offset(v uint64) int64 {
	if v > 1<<62 {
		return -1
	}
	return int64(v)
}

// filePosition reads where a write through descriptor fd of thread tid
// starts: its file position, or -1 for O_APPEND or when unknown.
func filePosition(tid uint32, fd uint64) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", tid, fd))
	if err != nil {
		return -1
	}
	pos := int64(-1)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			if p, err := strconv.ParseInt(v, 10, 64); err == nil {
				pos = p
			}
		case "flags":
			if fl, err := strconv.ParseUint(v, 8, 64); err != nil || fl&unix.O_APPEND != 0 {
				return -1
			}
		}
	}
	return pos
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
