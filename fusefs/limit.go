package fusefs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Why the daemon bounds the requests it serves at once:
//
// go-fuse starts another reader goroutine whenever all of its readers are
// busy, so every request the kernel has queued can be in service at the
// same time. A request in service that waits in a system call on the
// backing file system pins an OS thread, and the Go runtime kills the
// process when it reaches 10,000 threads. Backing calls that never return
// are the common case of a daemon that reaches its own mount (a backing
// directory inside the mountpoint) or of a dead network file system under
// the backing directory; then each waiting client costs a thread until
// the daemon dies and takes every open file with it.
//
// limitFS admits at most a fixed number of requests into the file system;
// the rest wait in goroutines, which cost memory but no thread, and leave
// when the kernel interrupts them for a signal that is not quiet
// (gatesignal.go). FORGET and
// releases of directories carry no interrupt and never block; they pass
// unlimited so that the kernel can always drop what it no longer uses.

// DefaultMaxRequests bounds the requests served at once: far above what
// two CPUs keep busy, far below the runtime's thread limit.
const DefaultMaxRequests = 256

// limitFS passes requests to the wrapped file system, at most cap(slots)
// at a time.
type limitFS struct {
	fuse.RawFileSystem
	slots chan struct{}
	ops   *opCounts
}

func newLimitFS(fs fuse.RawFileSystem, max int, ops *opCounts) *limitFS {
	if max <= 0 {
		max = DefaultMaxRequests
	}
	return &limitFS{RawFileSystem: fs, slots: make(chan struct{}, max), ops: ops}
}

// enter counts the request h and takes a slot, waiting for one unless the
// request is interrupted by a signal that is not quiet (gatesignal.go).
func (l *limitFS) enter(cancel <-chan struct{}, h *fuse.InHeader) bool {
	l.ops.count(h.Opcode)
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	q := quietWaiter{cancel: cancel, tid: h.Caller.Pid}
	defer q.stop()
	for {
		select {
		case l.slots <- struct{}{}:
			return true
		case <-q.cancel:
		case <-q.poll:
		}
		if q.wake() {
			return false
		}
	}
}

func (l *limitFS) exit() { <-l.slots }

func (l *limitFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if !l.enter(c, h) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Lookup(c, h, name, out)
}

func (l *limitFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.GetAttr(c, in, out)
}

func (l *limitFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.SetAttr(c, in, out)
}

func (l *limitFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Mknod(c, in, name, out)
}

func (l *limitFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Mkdir(c, in, name, out)
}

func (l *limitFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !l.enter(c, h) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Unlink(c, h, name)
}

func (l *limitFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !l.enter(c, h) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Rmdir(c, h, name)
}

func (l *limitFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Rename(c, in, oldName, newName)
}

func (l *limitFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Link(c, in, name, out)
}

func (l *limitFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if !l.enter(c, h) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Symlink(c, h, target, name, out)
}

func (l *limitFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if !l.enter(c, h) {
		return nil, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Readlink(c, h)
}

func (l *limitFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Access(c, in)
}

func (l *limitFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !l.enter(c, h) {
		return 0, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (l *limitFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if !l.enter(c, h) {
		return 0, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.ListXAttr(c, h, dest)
}

func (l *limitFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.SetXAttr(c, in, attr, data)
}

func (l *limitFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if !l.enter(c, h) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.RemoveXAttr(c, h, attr)
}

func (l *limitFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Create(c, in, name, out)
}

func (l *limitFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Tmpfile(c, in, out)
}

func (l *limitFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Open(c, in, out)
}

func (l *limitFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if !l.enter(c, &in.InHeader) {
		return nil, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Read(c, in, buf)
}

func (l *limitFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Lseek(c, in, out)
}

func (l *limitFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	if !l.enter(c, &in.InHeader) {
		// Interrupted releases do not exist (the kernel never interrupts
		// them); should one come, the handle must still be dropped.
		l.RawFileSystem.Release(c, in)
		return
	}
	defer l.exit()
	l.RawFileSystem.Release(c, in)
}

func (l *limitFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if !l.enter(c, &in.InHeader) {
		return 0, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Write(c, in, data)
}

func (l *limitFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if !l.enter(c, &in.InHeader) {
		return 0, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Writev(c, in, data)
}

func (l *limitFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if !l.enter(c, &in.InHeader) {
		return 0, fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.CopyFileRange(c, in)
}

func (l *limitFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Fsync(c, in)
}

func (l *limitFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Fallocate(c, in)
}

func (l *limitFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.OpenDir(c, in, out)
}

func (l *limitFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.ReadDir(c, in, out)
}

func (l *limitFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.ReadDirPlus(c, in, out)
}

func (l *limitFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.FsyncDir(c, in)
}

func (l *limitFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	if !l.enter(c, h) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.StatFs(c, h, out)
}

func (l *limitFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if !l.enter(c, &in.InHeader) {
		return fuse.EINTR
	}
	defer l.exit()
	return l.RawFileSystem.Statx(c, in, out)
}
