package fusefs

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// spaceFS applies the space reservation (space.go) to the requests that
// write, create and report attributes. Until the mount has started
// tracking (and on read-only mounts) it passes everything through.
type spaceFS struct {
	fuse.RawFileSystem
	fsys *FS
}

func (s *spaceFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	sp := s.fsys.space.Load()
	if sp == nil {
		return s.RawFileSystem.Write(c, in, data)
	}
	n, st := s.RawFileSystem.Write(c, in, data)
	sp.wrote(int(n))
	return n, st
}

func (s *spaceFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	sp := s.fsys.space.Load()
	if sp == nil {
		return s.RawFileSystem.Writev(c, in, data)
	}
	n, st := s.RawFileSystem.Writev(c, in, data)
	sp.wrote(int(n))
	return n, st
}

// Forget lets the reservation see that inodes, and maybe the blocks of
// removed files, are being let go.
func (s *spaceFS) Forget(nodeid, nlookup uint64) {
	sp := s.fsys.space.Load()
	if sp == nil {
		s.RawFileSystem.Forget(nodeid, nlookup)
		return
	}
	sp.forgetting.Add(1)
	s.RawFileSystem.Forget(nodeid, nlookup)
	sp.forgetting.Add(-1)
}

// Fallocate reserves backing space directly: in careful mode it must leave
// what cached writes were promised.
func (s *spaceFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	sp := s.fsys.space.Load()
	if sp != nil && in.Mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE) == 0 && sp.careful.Load() {
		if uint64(sp.admitDirect(int(min(in.Length, 1<<40)))) < in.Length {
			return fuse.Status(unix.ENOSPC)
		}
	}
	return s.RawFileSystem.Fallocate(c, in)
}

// Create counts the new file's first block; while the mount is careful
// the node opens it with direct I/O (admit.go).
func (s *spaceFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := s.RawFileSystem.Create(c, in, name, out)
	if sp := s.fsys.space.Load(); sp != nil && st.Ok() {
		sp.expireEntry(&out.EntryOut)
		sp.wrote(4096)
	}
	return st
}

// Lookup, Mknod and Link hand the kernel a regular file's attributes too.
func (s *spaceFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	st := s.RawFileSystem.Lookup(c, h, name, out)
	if st.Ok() {
		s.fsys.space.Load().expireEntry(out)
	}
	return st
}

func (s *spaceFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	st := s.RawFileSystem.Mknod(c, in, name, out)
	if st.Ok() {
		s.fsys.space.Load().expireEntry(out)
	}
	return st
}

func (s *spaceFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	st := s.RawFileSystem.Link(c, in, name, out)
	if st.Ok() {
		s.fsys.space.Load().expireEntry(out)
	}
	return st
}

// GetAttr tells the node (admit.go) which callers ask with a file handle:
// write(2) does, stat(2) does not, so a caller that cannot be inspected is
// taken for a writer only then.
func (s *spaceFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	sp := s.fsys.space.Load()
	if sp != nil && sp.careful.Load() && in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		sp.markWritePath(in.Caller.Pid)
		defer sp.unmarkWritePath(in.Caller.Pid)
	}
	st := s.RawFileSystem.GetAttr(c, in, out)
	if st.Ok() {
		sp.expireAttr(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
	}
	return st
}

func (s *spaceFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := s.RawFileSystem.SetAttr(c, in, out)
	if st.Ok() {
		s.fsys.space.Load().expireAttr(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
	}
	return st
}

// dirtyLimit is the most the kernel holds dirty for the mount on device
// dev: the per-device limit in /sys/class/bdi (max_bytes, Linux 6.2 and
// later), else the device's share (max_ratio) of the machine's dirty
// threshold.
func dirtyLimit(dev uint64) int64 {
	if dev == 0 {
		return spaceDefaultDirtyLimit // the mount could not be looked at
	}
	dir := fmt.Sprintf("/sys/class/bdi/%d:%d/", unix.Major(dev), unix.Minor(dev))
	if v, ok := readInt(dir + "max_bytes"); ok && v > 0 {
		return v
	}
	ratio, ok := readInt(dir + "max_ratio")
	if !ok {
		return spaceDefaultDirtyLimit
	}
	if v, ok := readInt("/proc/sys/vm/dirty_bytes"); ok && v > 0 {
		return v * ratio / 100
	}
	dr, ok := readInt("/proc/sys/vm/dirty_ratio")
	if !ok {
		return spaceDefaultDirtyLimit
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return spaceDefaultDirtyLimit
	}
	return int64(si.Totalram) * int64(si.Unit) * dr / 100 * ratio / 100
}

func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}
