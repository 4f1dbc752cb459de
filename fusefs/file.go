package fusefs

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/sector"
)

// handle is one open(2) of a regular file. The backing file itself is
// shared per node (openFile); the handle only remembers what this open
// asked for.
type handle struct {
	n    *Node
	sync bool // O_SYNC/O_DSYNC: every write reaches stable storage
	// direct: opened with direct I/O because the backing was nearly full
	// (space.go); its writes come straight from write(2).
	direct bool
}

// attach adds one handle to n's shared backing file, opening it (or taking
// fd, an already open read-write descriptor that attach then owns) when the
// node has none. Only Create makes handles: OPEN is not sent (see Open).
func (n *Node) attach(k *Keys, path string, fd int, flags uint32) (*handle, syscall.Errno) {
	write := flags&unix.O_ACCMODE != unix.O_RDONLY
	n.content.Lock()
	defer n.content.Unlock()
	if errno := n.openBackingLocked(k, path, fd, write); errno != 0 {
		return nil, errno
	}
	n.of.refs++
	return n.newHandle(k, path, flags)
}

// openBackingLocked makes n.of a backing file good for the access wanted:
// it keeps one that serves, opens the backing file by path (or takes fd, an
// already open read-write descriptor, which it then owns), or replaces a
// read-only descriptor by a read-write one. Read-write even for reads where
// the backing allows it: the writeback cache writes through whatever the
// kernel has, and one descriptor serves every use of the node. Caller holds
// n.content exclusively.
func (n *Node) openBackingLocked(k *Keys, path string, fd int, write bool) syscall.Errno {
	if of := n.of; of != nil && (of.rw || !write) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return 0
	}
	rw := true
	if fd < 0 {
		if of := n.of; of != nil && of.pinned {
			// The name is gone; the read-only descriptor is all that is left.
			return syscall.EBADF
		}
		if path == "" {
			p, prel, err := n.path(k)
			if err != nil {
				return n.fsys.errno(err, "open", "")
			}
			defer prel()
			path = p
		}
		var err error
		if fd, rw, err = openBackingFD(unix.AT_FDCWD, path, write, n.fsys.fileNoAtime); err != nil {
			return n.fsys.errno(err, "open", path)
		}
	}
	if err := n.setBackingLocked(fd, rw, realPath(path)); err != nil {
		return n.fsys.errno(err, "open", path)
	}
	return 0
}

// freshBacking tells n's backing file, which Create has just made and
// given the header hdr, that it holds nothing else, so that the first
// write does not read back what Create wrote. hdr came from
// sector.NewFileHeader, so Fresh cannot refuse it; were it to, the file
// would read its header from the disk as any other.
func (n *Node) freshBacking(hdr []byte) {
	n.content.Lock()
	defer n.content.Unlock()
	if n.of != nil {
		_ = n.of.f.Fresh(hdr)
	}
}

// openBackingFD opens the backing file name (relative to dirfd)
// read-write, or read-only when that is all the backing allows and write is
// not needed; rw says which. noatime is O_NOATIME or 0 (atime.go).
func openBackingFD(dirfd int, name string, write bool, noatime int) (fd int, rw bool, err error) {
	fd, err = openatNoAtime(dirfd, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0, noatime)
	if err == nil {
		return fd, true, nil
	}
	if write || !(errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EPERM)) {
		return -1, false, err
	}
	fd, err = openatNoAtime(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0, noatime)
	return fd, false, err
}

// setBackingLocked installs fd (which it then owns) as n's backing file,
// taking over the handle count of a descriptor it replaces. Caller holds
// n.content.
func (n *Node) setBackingLocked(fd int, rw bool, name string) error {
	sf, err := sector.NewFile(os.NewFile(uintptr(fd), name), n.fsys.sectorSize)
	if err != nil {
		unix.Close(fd)
		return err
	}
	// Every change of the backing size goes through the node's one
	// shared file (truncateLocked says when not), so reads need no fstat.
	sf.SoleWriter()
	of := &openFile{f: sf, fd: fd, rw: rw}
	old := n.of
	if old != nil {
		of.refs, of.pinned = old.refs, old.pinned
		old.f.OS().Close()
	}
	n.of = of
	if old == nil {
		n.fsys.trackOpen(n, true)
	}
	return nil
}

// lockBacking locks n.content (exclusive or shared) with n.of open for the
// access wanted. The kernel sends no OPEN (see Open), so the first read or
// write of a file opens its backing file here; it stays open until the
// kernel forgets the inode or the file is evicted as idle.
func (n *Node) lockBacking(k *Keys, write, exclusive bool) (unlock func(), errno syscall.Errno) {
	if exclusive {
		n.content.Lock()
		if errno := n.openBackingLocked(k, "", -1, write); errno != 0 {
			n.content.Unlock()
			return nil, errno
		}
		return n.content.Unlock, 0
	}
	for {
		n.content.RLock()
		if of := n.of; of != nil && (of.rw || !write) {
			return n.content.RUnlock, 0
		}
		n.content.RUnlock()
		n.content.Lock()
		errno := n.openBackingLocked(k, "", -1, write)
		n.content.Unlock()
		if errno != 0 {
			return nil, errno
		}
		// Loop for the shared lock: an idle eviction may have closed the
		// file in between, and then it is opened again.
	}
}

// pinLocked keeps the content of n reachable after its name goes: the
// kernel may hold the file open, and without OPEN the daemon cannot know,
// so the backing file is opened through its directory (dirfd, bname)
// before the name is removed. The descriptor then lives until the kernel
// forgets the inode. Caller holds n.content exclusively.
func (n *Node) pinLocked(dirfd int, bname string) {
	if n.of == nil {
		fd, rw, err := openBackingFD(dirfd, bname, false, n.fsys.fileNoAtime)
		if err == nil {
			err = n.setBackingLocked(fd, rw, bname)
		}
		if err != nil {
			n.fsys.log.Warn().Str("op", "unlink").Err(err).Msg("cannot keep the file open past its removal; processes that still have it open will get EIO")
			return
		}
	}
	n.of.pinned = true
}

// pinChild pins the regular file that parent's entry name refers to, if the
// kernel knows it, and returns the function that unlocks it again; call it
// once the name is gone (or the removal failed: the pin is harmless).
func (f *FS) pinChild(parent *Node, name string, dirfd int, bname string) func() {
	ch := parent.GetChild(name)
	if ch == nil || ch.StableAttr().Mode != syscall.S_IFREG {
		return func() {}
	}
	cn, ok := ch.Operations().(*Node)
	if !ok {
		return func() {}
	}
	cn.content.Lock()
	cn.pinLocked(dirfd, bname)
	return cn.content.Unlock
}

// newHandle finishes an open: O_TRUNC empties the file through the sector
// layer (the kernel may also send it as a separate setattr). Caller holds
// n.content.
func (n *Node) newHandle(k *Keys, path string, flags uint32) (*handle, syscall.Errno) {
	write := flags&unix.O_ACCMODE != unix.O_RDONLY
	h := &handle{n: n, sync: flags&(unix.O_SYNC|unix.O_DSYNC) != 0}
	if flags&unix.O_TRUNC != 0 && write && !n.emptyLocked() {
		if err := n.of.f.Truncate(k.Content, 0); err != nil {
			n.detachLocked()
			return nil, n.fsys.errno(err, "open", path)
		}
	}
	return h, 0
}

// emptyLocked reports whether the backing file holds no content (no bytes,
// or only the header every file of a volume with authenticated metadata
// has from its creation), so an
// O_TRUNC open (every file tar or an editor creates) has nothing to do:
// truncating anyway costs an fstat and an ftruncate, and the ftruncate would
// move mtime past what Create just reported to the kernel. Caller holds
// n.content and n.of is set.
func (n *Node) emptyLocked() bool {
	var st unix.Statx_t
	return statxFd(n.of.fd, &st) == nil && (st.Size == 0 || st.Size == sector.HeaderSize)
}

// detachLocked drops one handle. The backing file stays open for
// handle-less reads and writes until the kernel forgets the inode (OnForget)
// or it is evicted as idle. Caller holds n.content.
func (n *Node) detachLocked() {
	if n.of != nil && n.of.refs > 0 {
		n.of.refs--
	}
}

// closeBackingLocked closes n's backing file, shrinking its hole map
// first. Caller holds n.content.
func (n *Node) closeBackingLocked() {
	of := n.of
	if of == nil {
		return
	}
	n.settleHolesLocked(of, "close")
	n.of = nil
	if err := of.f.OS().Close(); err != nil {
		n.fsys.log.Warn().Str("op", "release").Err(err).Msg("closing the backing file failed")
	}
	n.fsys.trackOpen(n, false)
}

// settleHolesLocked drops the sectors written into former holes from the
// file's hole map (sector.File.SettleHoles), so that zeroing them in the
// backing file is detected. Without the key (a closed gate) the map stays
// as it is: too large, which is safe. Caller holds n.content exclusively.
func (n *Node) settleHolesLocked(of *openFile, op string) {
	// IsOpen first: tryAcquire counts a closed gate as a refused call,
	// and a close after the gate shut refuses nothing a caller asked for.
	if !of.rw || !of.f.HolesUnsettled() || !n.fsys.gate.IsOpen() {
		return
	}
	k, rel := n.fsys.gate.tryAcquire()
	if k == nil {
		return
	}
	defer rel()
	if err := of.f.SettleHoles(k.Content); err != nil {
		n.fsys.log.Warn().Str("op", op).Str("path", realPath(of.f.OS().Name())).Err(err).
			Msg("cannot shrink the file's hole map: sectors written where holes were read as zeros if someone zeroes them in the backing file, until it is shrunk")
	}
}

// OnForget closes the backing file once the kernel has forgotten the inode:
// nothing can reach the node any more.
func (n *Node) OnForget() {
	n.fsys.listings.drop(n)
	n.content.Lock()
	n.closeBackingLocked()
	n.content.Unlock()
}

// Open answers ENOSYS: with FUSE_NO_OPEN_SUPPORT negotiated, the kernel
// then never sends OPEN (nor RELEASE) for regular files again on this
// mount, and each open(2) of an existing file costs no round trip. The
// kernel checks permissions itself (default_permissions), sends O_TRUNC as
// a setattr (atomic O_TRUNC is not negotiated) and applies O_APPEND and
// O_SYNC itself; the daemon opens the backing file at the first read or
// write (lockBacking). Files made by create still get a handle.
func (n *Node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.StableAttr().Mode != syscall.S_IFREG {
		// FIFOs and devices never reach here (the kernel opens them
		// itself); anything else has no content to serve.
		return nil, 0, syscall.EINVAL
	}
	return nil, 0, syscall.ENOSYS
}

// Read decrypts from the shared backing file under the shared content lock.
func (n *Node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	k, rel, errno := n.fsys.keys(ctx, "read")
	if errno != 0 {
		return nil, errno
	}
	defer rel()
	governor.Load().noteRequest(len(dest))
	unlock, errno := n.lockBacking(k, false, false)
	if errno != 0 {
		return nil, errno
	}
	defer unlock()
	m, err := n.of.f.ReadAt(k.Content, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, n.fsys.errno(err, "read", n.of.f.OS().Name())
	}
	n.fsys.reads.Add(1)
	n.fsys.bytesRead.Add(uint64(m))
	return fuse.ReadResultData(dest[:m]), 0
}

// Write encrypts into the shared backing file under the exclusive content
// lock, so concurrent writers never tear a sector.
func (n *Node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	k, rel, errno := n.fsys.keys(ctx, "write")
	if errno != 0 {
		return 0, errno
	}
	defer rel()
	h, _ := fh.(*handle)
	direct := h != nil && h.direct
	if sp := n.fsys.careful(); sp != nil && direct {
		// A caller waits in write(2): store what fits, a short write.
		// Decided before the content lock, which a write-back the
		// decision may wait for needs.
		fit := sp.admitDirect(len(data))
		if fit == 0 {
			n.fsys.noteFull("write", "", errNoRoom)
			return 0, syscall.ENOSPC
		}
		data = data[:fit]
	}
	governor.Load().noteRequest(len(data))
	unlock, errno := n.lockBacking(k, true, true)
	if errno != 0 {
		return 0, errno
	}
	defer unlock()
	if !n.of.rw {
		return 0, syscall.EBADF
	}
	if sp := n.fsys.careful(); sp != nil && !direct {
		if before := blocksOf(n.of.fd); before >= 0 {
			// Write-back of cached data that its write(2) reserved.
			defer func() {
				if after := blocksOf(n.of.fd); after >= 0 {
					sp.settle(after - before)
				}
			}()
		}
	}
	m, err := n.of.f.WriteAt(k.Content, data, off)
	if err != nil {
		errno := n.fsys.errno(err, "write", n.of.f.OS().Name())
		if direct && m > 0 {
			// write(2) reports the bytes stored; the next one fails.
			n.fsys.writes.Add(1)
			n.fsys.bytesWritten.Add(uint64(m))
			return uint32(m), 0
		}
		return uint32(m), errno
	}
	if h != nil && h.sync {
		if err := n.of.f.Sync(); err != nil {
			return uint32(m), n.fsys.errno(err, "write", n.of.f.OS().Name())
		}
	}
	n.fsys.writes.Add(1)
	n.fsys.bytesWritten.Add(uint64(m))
	return uint32(m), 0
}

// Flush answers ENOSYS, which tells the kernel never to send FLUSH again
// on this mount: the daemon buffers no writes and holds no POSIX locks, so
// FLUSH has nothing to do, yet it costs every close(2) a round trip (a
// third of the round trips of opening, reading and closing a small file).
// The kernel still writes dirty pages back on close and reports their
// errors from close(2); only the message to the daemon goes.
func (n *Node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

// Release drops one handle of a created file; needs no key.
func (n *Node) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if _, ok := fh.(*handle); !ok {
		return 0
	}
	n.content.Lock()
	n.detachLocked()
	n.content.Unlock()
	return 0
}

// Fsync reaches the backing file (or backing directory).
func (n *Node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	n.content.RLock()
	if of := n.of; of != nil {
		err := of.f.Sync()
		n.content.RUnlock()
		if err != nil {
			return n.fsys.errno(err, "fsync", of.f.OS().Name())
		}
		if of.f.HolesUnsettled() {
			n.content.Lock()
			if n.of == of {
				n.settleHolesLocked(of, "fsync")
			}
			n.content.Unlock()
		}
		return 0
	}
	n.content.RUnlock()
	var p string
	if n.isRoot() {
		p = n.fsys.backing
	} else {
		k, rel, errno := n.fsys.keys(ctx, "fsync")
		if errno != 0 {
			return errno
		}
		defer rel()
		var prel func()
		var err error
		if p, prel, err = n.path(k); err != nil {
			return n.fsys.errno(err, "fsync", "")
		}
		defer prel()
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return n.fsys.errno(err, "fsync", p)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return n.fsys.errno(err, "fsync", p)
	}
	return 0
}

// Allocate implements fallocate(2). Mode 0 extends the plaintext size with
// a hole where needed; both mode 0 and FALLOC_FL_KEEP_SIZE reserve the
// backing bytes of the sectors in the range, so later writes there do not
// run out of space. Punching holes, zeroing and collapsing ranges are not
// supported (EOPNOTSUPP).
func (n *Node) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	k, rel, errno := n.fsys.keys(ctx, "fallocate")
	if errno != 0 {
		return errno
	}
	defer rel()
	unlock, errno := n.lockBacking(k, true, true)
	if errno != 0 {
		return errno
	}
	defer unlock()
	if !n.of.rw {
		return syscall.EBADF
	}
	end := off + size
	if end < off || end > uint64(sector.MaxPlainSize(n.fsys.sectorSize)) {
		return syscall.EFBIG
	}
	name := n.of.f.OS().Name()
	if c, ok := fuse.FromContext(ctx); ok && c.Uid != 0 {
		// FALLOCATE carries no kill flag; an unprivileged caller stands
		// in for "lacks CAP_FSETID" (see killpriv.go).
		if err := n.killSUIDLocked(n.of.fd, ""); err != nil {
			return n.fsys.errno(err, "fallocate", name)
		}
	}
	ss := uint64(n.fsys.sectorSize)
	stored := ss + sector.Overhead
	bStart := sector.HeaderSize + off/ss*stored
	bEnd := sector.HeaderSize + (end+ss-1)/ss*stored
	if err := unix.Fallocate(n.of.fd, unix.FALLOC_FL_KEEP_SIZE, int64(bStart), int64(bEnd-bStart)); err != nil &&
		!errors.Is(err, syscall.EOPNOTSUPP) {
		return n.fsys.errno(err, "fallocate", name)
	}
	if mode&unix.FALLOC_FL_KEEP_SIZE != 0 {
		return 0
	}
	cur, err := n.of.f.Size()
	if err != nil {
		return n.fsys.errno(err, "fallocate", name)
	}
	if int64(end) <= cur {
		return 0
	}
	if err := n.of.f.Truncate(k.Content, int64(end)); err != nil {
		return n.fsys.errno(err, "fallocate", name)
	}
	return 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE conservatively: the whole file is
// data and the only hole is at the end. That is what POSIX allows for file
// systems that do not track holes.
func (n *Node) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	k, rel, errno := n.fsys.keys(ctx, "lseek")
	if errno != 0 {
		return 0, errno
	}
	defer rel()
	unlock, errno := n.lockBacking(k, false, false)
	if errno != 0 {
		return 0, errno
	}
	defer unlock()
	size, err := n.of.f.Size()
	if err != nil {
		return 0, n.fsys.errno(err, "lseek", n.of.f.OS().Name())
	}
	if int64(off) >= size {
		return 0, syscall.ENXIO
	}
	switch whence {
	case unix.SEEK_DATA:
		return off, 0
	case unix.SEEK_HOLE:
		return uint64(size), 0
	}
	return 0, syscall.EINVAL
}
