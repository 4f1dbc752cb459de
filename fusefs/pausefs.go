package fusefs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// pauseFS holds requests back while the mount is paused for a snapshot
// (pause.go). It sits outside the request bound, so what waits here takes
// no slot from the requests that still flow.
type pauseFS struct {
	fuse.RawFileSystem
	fsys *FS
	p    *pauser
}

func newPauseFS(inner fuse.RawFileSystem, f *FS) *pauseFS {
	return &pauseFS{RawFileSystem: inner, fsys: f, p: f.pause}
}

// timesOnly are the SETATTR bits the kernel sends when it writes back the
// times it keeps for a file with cached writes (and that touch(1) sends):
// part of the write-back that step 1 of a pause waits for.
const timesOnly = fuse.FATTR_MTIME | fuse.FATTR_CTIME | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER

func (s *pauseFS) expireEntry(out *fuse.EntryOut) {
	s.p.expire(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
}

// GetAttr holds the GETATTR that a write(2) sends before it copies into the
// page cache (caller.go) while the pause holds new writes.
func (s *pauseFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if s.p.level.Load() >= levelWrites && in.Flags()&fuse.FUSE_GETATTR_FH != 0 && inspectCaller(in.Caller.Pid).write {
		if !s.p.wait(levelWrites, c, in.Caller.Pid) {
			return fuse.EINTR
		}
	}
	st := s.RawFileSystem.GetAttr(c, in, out)
	if st.Ok() {
		s.p.expire(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
	}
	return st
}

func (s *pauseFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	st := s.RawFileSystem.Statx(c, in, out)
	if st.Ok() && s.p.level.Load() != levelNone && uint32(out.Mode)&unix.S_IFMT == unix.S_IFREG {
		out.AttrValid, out.AttrValidNsec = 0, 0
	}
	return st
}

func (s *pauseFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	st := s.RawFileSystem.Lookup(c, h, name, out)
	if st.Ok() {
		s.expireEntry(out)
	}
	return st
}

// Fsync of the pause's own flush needs only the kernel's write-back, which
// is done when the request arrives; the backing need not reach the disk
// for a copy to see it.
func (s *pauseFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if s.p.flushing.Load() && ownThread(in.Caller.Pid) {
		return fuse.OK
	}
	return s.RawFileSystem.Fsync(c, in)
}

func (s *pauseFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	class := classMeta
	if in.Valid&^timesOnly == 0 {
		class = classData
	}
	if !s.p.enter(class, c, in.Caller.Pid) {
		return fuse.EINTR
	}
	defer s.p.exit(class)
	st := s.RawFileSystem.SetAttr(c, in, out)
	if st.Ok() {
		s.p.expire(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
	}
	return st
}

func (s *pauseFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if !s.p.enter(classData, c, in.Caller.Pid) {
		return 0, fuse.EINTR
	}
	defer s.p.exit(classData)
	return s.RawFileSystem.Write(c, in, data)
}

func (s *pauseFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if !s.p.enter(classData, c, in.Caller.Pid) {
		return 0, fuse.EINTR
	}
	defer s.p.exit(classData)
	return s.RawFileSystem.Writev(c, in, data)
}

// meta runs a change to names or attributes once the pause lets it.
func (s *pauseFS) meta(c <-chan struct{}, tid uint32, fn func() fuse.Status) fuse.Status {
	if !s.p.enter(classMeta, c, tid) {
		return fuse.EINTR
	}
	defer s.p.exit(classMeta)
	return fn()
}

func (s *pauseFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	st := s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Mknod(c, in, name, out) })
	if st.Ok() {
		s.expireEntry(out)
	}
	return st
}

func (s *pauseFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Mkdir(c, in, name, out) })
}

func (s *pauseFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return s.meta(c, h.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Unlink(c, h, name) })
}

func (s *pauseFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return s.meta(c, h.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Rmdir(c, h, name) })
}

func (s *pauseFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Rename(c, in, oldName, newName) })
}

func (s *pauseFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	st := s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Link(c, in, name, out) })
	if st.Ok() {
		s.expireEntry(out)
	}
	return st
}

func (s *pauseFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return s.meta(c, h.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Symlink(c, h, target, name, out) })
}

func (s *pauseFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.SetXAttr(c, in, attr, data) })
}

func (s *pauseFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return s.meta(c, h.Caller.Pid, func() fuse.Status { return s.RawFileSystem.RemoveXAttr(c, h, attr) })
}

func (s *pauseFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Create(c, in, name, out) })
	if st.Ok() {
		s.expireEntry(&out.EntryOut)
	}
	return st
}

func (s *pauseFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Tmpfile(c, in, out) })
}

func (s *pauseFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&unix.O_TRUNC == 0 {
		return s.RawFileSystem.Open(c, in, out)
	}
	return s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Open(c, in, out) })
}

func (s *pauseFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return s.meta(c, in.Caller.Pid, func() fuse.Status { return s.RawFileSystem.Fallocate(c, in) })
}

func (s *pauseFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	var n uint32
	st := s.meta(c, in.Caller.Pid, func() fuse.Status {
		var st fuse.Status
		n, st = s.RawFileSystem.CopyFileRange(c, in)
		return st
	})
	return n, st
}
