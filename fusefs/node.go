package fusefs

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// nameMax is the longest plaintext name accepted, as on common Linux file
// systems; longer encrypted forms go through the long-name scheme.
const nameMax = 255

// Node is one file, directory, symlink or special file of the volume. Its
// identity is the backing inode, so all hard links of a file share one Node
// and therefore one content lock.
type Node struct {
	fs.Inode
	fsys *FS

	// dirID is the directory's name-encryption ID, read once: the ID file
	// moves with the directory on rename and is never rewritten.
	dirID atomic.Pointer[[]byte]

	// content serializes everything that changes the backing file content
	// (write, truncate, allocate: exclusive) against reads (shared), so a
	// read-modify-write of a sector never interleaves with another. It also
	// guards of.
	content sync.RWMutex
	of      *openFile // GUARDED_BY(content); the backing file, open from first use until forgotten or evicted

	// meta caches the stored mode and owner (metacache.go); nil: not read yet.
	meta atomic.Pointer[metaEntry]
}

// openFile is the backing file shared by every open handle of a node. One
// sector.File per inode keeps the cached file header consistent between
// handles.
type openFile struct {
	f    *sector.File
	fd   int
	rw   bool
	refs int // handles from create; the file also serves handle-less I/O
	// pinned: the node's last known name was removed while the kernel
	// still knew the inode, so this descriptor is the only way to the
	// content; it is never evicted, only closed by OnForget.
	pinned bool
}

var (
	_ fs.InodeEmbedder     = (*Node)(nil)
	_ fs.NodeLookuper      = (*Node)(nil)
	_ fs.NodeGetattrer     = (*Node)(nil)
	_ fs.NodeOnForgetter   = (*Node)(nil)
	_ fs.NodeSetattrer     = (*Node)(nil)
	_ fs.NodeCreater       = (*Node)(nil)
	_ fs.NodeOpener        = (*Node)(nil)
	_ fs.NodeMkdirer       = (*Node)(nil)
	_ fs.NodeMknoder       = (*Node)(nil)
	_ fs.NodeSymlinker     = (*Node)(nil)
	_ fs.NodeReadlinker    = (*Node)(nil)
	_ fs.NodeLinker        = (*Node)(nil)
	_ fs.NodeUnlinker      = (*Node)(nil)
	_ fs.NodeRmdirer       = (*Node)(nil)
	_ fs.NodeRenamer       = (*Node)(nil)
	_ fs.NodeReaddirer     = (*Node)(nil)
	_ fs.NodeStatfser      = (*Node)(nil)
	_ fs.NodeGetxattrer    = (*Node)(nil)
	_ fs.NodeSetxattrer    = (*Node)(nil)
	_ fs.NodeListxattrer   = (*Node)(nil)
	_ fs.NodeRemovexattrer = (*Node)(nil)
	_ fs.NodeFsyncer       = (*Node)(nil)
	_ fs.NodeFlusher       = (*Node)(nil)
	_ fs.NodeReleaser      = (*Node)(nil)
	_ fs.NodeReader        = (*Node)(nil)
	_ fs.NodeWriter        = (*Node)(nil)
	_ fs.NodeAllocater     = (*Node)(nil)
	_ fs.NodeLseeker       = (*Node)(nil)
)

func (n *Node) isRoot() bool { return n == n.fsys.root }

// path returns a path that reaches n's backing entry: the root's backing
// directory, or the cached descriptor of the parent directory (through
// /proc/self/fd) plus n's encrypted name. Only the last level is
// encrypted, and renames of ancestors never invalidate it. The caller must
// call release when done with the path. A node without a parent
// (unlinked) has no path: ENOENT.
func (n *Node) path(k *Keys) (string, func(), error) {
	p, _, rel, err := n.pathEntry(k)
	return p, rel, err
}

// pathEntry is path that also names the entry (the root has none).
func (n *Node) pathEntry(k *Keys) (string, Place, func(), error) {
	if n.isRoot() {
		return n.fsys.backing, Place{}, func() {}, nil
	}
	name, p := n.Parent()
	if p == nil {
		return "", Place{}, nil, syscall.ENOENT
	}
	pn, ok := p.Operations().(*Node)
	if !ok {
		return "", Place{}, nil, syscall.EIO
	}
	d, err := pn.openDir(k)
	if err != nil {
		return "", Place{}, nil, err
	}
	b, _, err := k.Names.EncryptName(d.id, name)
	if err != nil {
		d.close()
		return "", Place{}, nil, err
	}
	return fdPath(d.fd, b), Place{DirID: d.id, Name: name}, d.close, nil
}

// fdPath names entry name of the directory open as dirfd.
func fdPath(dirfd int, name string) string {
	return "/proc/self/fd/" + itoa(dirfd) + "/" + name
}

// realPath turns a /proc/self/fd path back into the backing path, for log
// lines and error messages.
func realPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/proc/self/fd/")
	if !ok {
		return p
	}
	fd, name, _ := strings.Cut(rest, "/")
	var dir string
	if n, err := strconv.Atoi(fd); err == nil {
		if v, ok := cachedDirPaths.Load(n); ok {
			dir = v.(string)
		}
	}
	if dir == "" {
		var err error
		if dir, err = os.Readlink("/proc/self/fd/" + fd); err != nil {
			return p
		}
	}
	if name == "" {
		return dir
	}
	return dir + "/" + name
}

func (n *Node) dirIDFd(fd int) ([]byte, error) {
	if id := n.dirID.Load(); id != nil {
		return *id, nil
	}
	id, err := names.ReadDirID(fd)
	if err != nil {
		return nil, err
	}
	n.dirID.Store(&id)
	return id, nil
}

// dirRef is an open backing directory plus the ID its names use. The
// descriptor is shared (cached): use it with *at calls only, never for
// getdents or anything that moves its offset.
type dirRef struct {
	fsys *FS
	e    *dirFD
	fd   int
	id   []byte
}

func (d *dirRef) close() {
	if d.e != nil {
		d.fsys.dirs.release(d.e)
		d.e = nil
		d.fd = -1
	}
}

func (d *dirRef) path() string {
	if d.e == nil {
		return ""
	}
	return d.e.path
}

// openDir returns n's backing directory (from the descriptor cache when
// possible). The caller closes it.
func (n *Node) openDir(k *Keys) (dirRef, error) {
	d := dirRef{fsys: n.fsys, fd: -1}
	e := n.fsys.dirs.get(n)
	if e == nil {
		p, rel, err := n.path(k)
		if err != nil {
			return d, err
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			rel()
			return d, err
		}
		rp := p
		if !n.isRoot() {
			rp = realPath(p)
		}
		rel()
		e = n.fsys.dirs.add(n, fd, rp)
	}
	d.e, d.fd = e, e.fd
	id, err := n.dirIDFd(e.fd)
	if err != nil {
		d.close()
		return d, err
	}
	d.id = id
	return d, nil
}

// childOp is the common prologue of every operation on a name in
// directory n: it checks the name, acquires the keys, opens the backing
// directory and encrypts the name. The caller runs done() at the end.
type childOp struct {
	k     *Keys
	d     dirRef
	name  string // plaintext name in d
	bname string // backing name in d
	long  string // full encoded name for the side file, "" if short
	rel   func()
}

func (c *childOp) done() {
	c.d.close()
	if c.rel != nil {
		c.rel()
	}
}

func (n *Node) child(ctx context.Context, op, name string) (*childOp, syscall.Errno) {
	return n.childWith(ctx, op, name, false)
}

// childWith is child; with fromReaddir a backing name that Readdir just
// decrypted is used instead of encrypting name again (c.long stays empty,
// so only for operations that do not create the name).
func (n *Node) childWith(ctx context.Context, op, name string, fromReaddir bool) (*childOp, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	k, rel, errno := n.fsys.keys(ctx, op)
	if errno != 0 {
		return nil, errno
	}
	c := &childOp{k: k, rel: rel, name: name, d: dirRef{fsys: n.fsys, fd: -1}}
	d, err := n.openDir(k)
	if err != nil {
		c.done()
		return nil, n.fsys.errno(err, op, name)
	}
	c.d = d
	if fromReaddir {
		if b, ok := n.fsys.names.take(n, name); ok {
			c.bname = b
			return c, 0
		}
	}
	b, long, err := k.Names.EncryptName(d.id, name)
	if err != nil {
		c.done()
		return nil, n.nameErr(err, op, name)
	}
	c.bname, c.long = b, long
	return c, 0
}

// nameErr maps a name-encryption failure (reserved or invalid names carry
// their own errno; anything else is a key problem).
func (n *Node) nameErr(err error, op, name string) syscall.Errno {
	return n.fsys.errno(err, op, name)
}

// writeLong stores the side file for a long backing name. It reports
// whether it created one that did not exist, so a failed create can clean up.
// place names the entry c works on.
func (c *childOp) place() Place { return Place{DirID: c.d.id, Name: c.name} }

func (c *childOp) writeLong() (created bool, err error) {
	if c.long == "" {
		return false, nil
	}
	if _, err := names.ReadLongName(c.d.fd, c.bname); err == nil {
		return false, nil
	}
	if err := names.WriteLongName(c.d.fd, c.bname, c.long); err != nil {
		return false, err
	}
	return true, nil
}

func (c *childOp) dropLong() {
	if c.long != "" {
		_ = names.RemoveLongName(c.d.fd, c.bname)
	}
}

// newChild registers the backing entry bname of d (stat'ed into st) as a
// child node and fills out.
func (n *Node) newChild(ctx context.Context, c *childOp, st *unix.Statx_t, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.newChildMeta(ctx, c, st, out, nil, nil)
}

// newChildMeta is newChild for an entry whose stored mode and owner the
// caller has just written (seed), so they need not be read back, or that
// the kernel already knows as the node known (whose cache answers).
//
// The kernel looks a known inode up again whenever its entry expires, and
// go-fuse then keeps the node it has and drops the new one. The new node
// therefore never inherits known's cache: should known be forgotten before
// the new node is registered, a copy could miss a change made through
// known in between.
func (n *Node) newChildMeta(ctx context.Context, c *childOp, st *unix.Statx_t, out *fuse.EntryOut, seed *metaEntry, known *Node) (*fs.Inode, syscall.Errno) {
	k, d, bname := c.k, &c.d, c.bname
	cn := &Node{fsys: n.fsys}
	if seed != nil && n.fsys.metaEnabled() {
		// Written for this very entry, so it names it.
		at := c.place()
		seed.placed.Store(&at)
		cn.meta.Store(seed)
	}
	from := cn
	if known != nil {
		from = known
	}
	if errno := from.fillAttrMeta(k, st, -1, fdPath(d.fd, bname), &out.Attr); errno != 0 {
		return nil, errno
	}
	if errno := from.checkEntry(k, st, c); errno != 0 {
		return nil, errno
	}
	n.fsys.expireAttr(&out.Attr, &out.AttrValid, &out.AttrValidNsec, true)
	n.fsys.symlinkSize(k, st, d.fd, bname, Place{DirID: d.id, Name: c.name}, &out.Attr)
	return n.NewInode(ctx, cn, n.fsys.stableAttr(st)), 0
}

// setOwner gives a new backing symlink or special file (which mirror
// their owner) the owner o, as the kernel would for a local file system.
// A daemon that is not root cannot, and leaves its own.
func (n *Node) setOwner(d *dirRef, bname string, o owner) error {
	if !n.fsys.euidRoot {
		return nil
	}
	return unix.Fchownat(d.fd, bname, int(o.uid), int(o.gid), unix.AT_SYMLINK_NOFOLLOW)
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		m, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if m < size {
			return string(buf[:m]), nil
		}
	}
}

// Lookup finds name in the directory.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.childWith(ctx, "lookup", name, true)
	if errno != 0 {
		return nil, errno
	}
	defer c.done()
	var st unix.Statx_t
	if err := statxAt(c.d.fd, c.bname, &st); err != nil {
		return nil, n.fsys.errno(err, "lookup", name)
	}
	var known *Node
	if old := n.GetChild(name); old != nil && old.StableAttr() == n.fsys.stableAttr(&st) {
		known, _ = old.Operations().(*Node)
	}
	return n.newChildMeta(ctx, c, &st, out, nil, known)
}

// Getattr reports the attributes with the plaintext size. An open file is
// answered from its backing descriptor, which needs no key and works after
// its last name is gone. In hang mode even that waits while the gate is
// closed (Gate.Wait says why).
func (n *Node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if err := n.fsys.gate.Wait(ctx); err != nil {
		return syscall.EINTR
	}
	if n.isRoot() {
		var st unix.Statx_t
		if err := statxAt(unix.AT_FDCWD, n.fsys.backing, &st); err != nil {
			return n.fsys.errno(err, "getattr", "/")
		}
		return n.fillAttrMeta(nil, &st, -1, n.fsys.backing, &out.Attr)
	}
	if sp := n.fsys.careful(); sp != nil && n.StableAttr().Mode == unix.S_IFREG {
		if errno := n.admitWrite(ctx, sp); errno != 0 {
			return errno
		}
	}
	n.content.RLock()
	if n.of != nil {
		var st unix.Statx_t
		err := statxFd(n.of.fd, &st)
		var errno syscall.Errno
		if err == nil {
			errno = n.fillAttrMeta(nil, &st, n.of.fd, "", &out.Attr)
		}
		n.content.RUnlock()
		if err != nil {
			return n.fsys.errno(err, "getattr", "")
		}
		return errno
	}
	n.content.RUnlock()
	k, rel, errno := n.fsys.keys(ctx, "getattr")
	if errno != 0 {
		return errno
	}
	defer rel()
	if n.IsDir() {
		// The kernel re-asks for a directory's attributes after every
		// entry created or removed in it (untar, rm -r); its cached
		// descriptor answers without encrypting names up the tree.
		if e := n.fsys.dirs.get(n); e != nil {
			var st unix.Statx_t
			err := statxFd(e.fd, &st)
			var errno syscall.Errno
			if err == nil {
				errno = n.fillAttrMeta(k, &st, e.fd, "", &out.Attr)
			}
			n.fsys.dirs.release(e)
			if err != nil {
				return n.fsys.errno(err, "getattr", e.path)
			}
			return errno
		}
	}
	p, le, prel, err := n.pathEntry(k)
	if err != nil {
		return n.fsys.errno(err, "getattr", "")
	}
	defer prel()
	var st unix.Statx_t
	if err := statxAt(unix.AT_FDCWD, p, &st); err != nil {
		return n.fsys.errno(err, "getattr", p)
	}
	if errno := n.fillAttrMeta(k, &st, -1, p, &out.Attr); errno != 0 {
		return errno
	}
	n.fsys.symlinkSize(k, &st, unix.AT_FDCWD, p, le, &out.Attr)
	return 0
}

// setattrNameless answers, without the key gate, the setattr the kernel
// sends for every regular file it just unlinked when the writeback cache is
// on (it flushes mtime and ctime). A node with neither a name nor an open
// backing file has nothing left to change. One whose backing file is still
// open (pinned at the unlink, as the kernel may have it open) needs no change
// either: the kernel keeps the mtime and ctime of a cached regular file
// itself and ignores ours, so only the attributes are answered. It reports
// whether it answered.
func (n *Node) setattrNameless(in *fuse.SetAttrIn, out *fuse.AttrOut) (bool, syscall.Errno) {
	n.content.RLock()
	defer n.content.RUnlock()
	of := n.of
	if of == nil {
		return true, syscall.ENOENT
	}
	if in.Valid&^timesOnly != 0 || !n.fsys.writeback.Load() {
		return false, 0
	}
	var st unix.Statx_t
	if err := statxFd(of.fd, &st); err != nil {
		return true, n.fsys.errno(err, "setattr", "")
	}
	return true, n.fillAttrMeta(nil, &st, of.fd, "", &out.Attr)
}

// Setattr changes mode, owner, size (through the sector layer, under the
// content lock) and times.
func (n *Node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var k *Keys
	if !n.isRoot() {
		// With the writeback cache the kernel flushes the times of every
		// file it just unlinked: a node with neither a name nor an open
		// file has nothing left to change, so skip the key gate and locks.
		if _, p := n.Parent(); p == nil {
			if done, errno := n.setattrNameless(in, out); done {
				return errno
			}
		}
		var rel func()
		var errno syscall.Errno
		k, rel, errno = n.fsys.keys(ctx, "setattr")
		if errno != 0 {
			return errno
		}
		defer rel()
	}
	n.content.Lock()
	defer n.content.Unlock()

	fd := -1
	if n.of != nil {
		fd = n.of.fd
	}
	path := ""
	var le Place
	if fd < 0 {
		p, e, prel, err := n.pathEntry(k)
		if err != nil {
			return n.fsys.errno(err, "setattr", "")
		}
		defer prel()
		path, le = p, e
	}
	metaDone := false
	if _, mok := in.GetMode(); (mok || in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0) &&
		n.fsys.metaEnabled() && hasMeta(n.StableAttr().Mode) {
		handled, errno := n.setMetaAttr(k, in, fd, path)
		if errno != 0 {
			return errno
		}
		metaDone = handled
	}
	if m, ok := in.GetMode(); ok && !metaDone {
		if err := chmodEntry(fd, unix.AT_FDCWD, path, m); err != nil {
			return n.fsys.errno(err, "chmod", path)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if (uok || gok) && !metaDone {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		var err error
		if fd >= 0 {
			err = unix.Fchown(fd, su, sg)
		} else {
			err = unix.Fchownat(unix.AT_FDCWD, path, su, sg, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return n.fsys.errno(err, "chown", path)
		}
	}
	// Truncate before times, so an explicit mtime survives.
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncateLocked(k, path, int64(sz)); errno != 0 {
			return errno
		}
	}
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		if err := n.killSUIDLocked(fd, path); err != nil {
			return n.fsys.errno(err, "setattr", path)
		}
	}
	if errno := setTimes(in, fd, path); errno != 0 {
		return n.fsys.errno(errno, "utimens", path)
	}

	var st unix.Statx_t
	err := statxFdOrPath(fd, path, &st)
	if err != nil {
		return n.fsys.errno(err, "setattr", path)
	}
	if errno := n.fillAttrMeta(k, &st, fd, path, &out.Attr); errno != 0 {
		return errno
	}
	if k != nil {
		n.fsys.symlinkSize(k, &st, unix.AT_FDCWD, path, le, &out.Attr)
	}
	return 0
}

func setTimes(in *fuse.SetAttrIn, fd int, path string) syscall.Errno {
	_, mok := in.GetMTime()
	_, aok := in.GetATime()
	if !mok && !aok {
		return 0
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if aok {
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
		} else {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
	}
	if mok {
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
		} else {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
	}
	var err error
	if fd >= 0 {
		err = futimens(fd, ts)
	} else {
		err = unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return e
		}
		return syscall.EIO
	}
	return 0
}

// futimens sets the times of the file open as fd, even one with no name
// left: utimensat(fd, NULL, ...), which x/sys/unix does not offer (its
// Futimes goes through /proc/self/fd, a path walk per call).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func itoa(i int) string {
	var b [20]byte
	p := len(b)
	if i == 0 {
		return "0"
	}
	for i > 0 {
		p--
		b[p] = byte('0' + i%10)
		i /= 10
	}
	return string(b[p:])
}

// truncateLocked sets the plaintext size; the caller holds n.content.
func (n *Node) truncateLocked(k *Keys, path string, size int64) syscall.Errno {
	if size < 0 {
		return syscall.EINVAL
	}
	if n.StableAttr().Mode != syscall.S_IFREG {
		if n.IsDir() {
			return syscall.EISDIR
		}
		return syscall.EINVAL
	}
	f := (*sector.File)(nil)
	if n.of != nil && n.of.rw {
		f = n.of.f
	} else {
		if path == "" {
			p, prel, err := n.path(k)
			if err != nil {
				return n.fsys.errno(err, "truncate", "")
			}
			defer prel()
			path = p
		}
		osf, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return n.fsys.errno(err, "truncate", path)
		}
		defer osf.Close()
		f, err = sector.NewFile(osf, n.fsys.sectorSize)
		if err != nil {
			return n.fsys.errno(err, "truncate", path)
		}
	}
	err := f.Truncate(k.Content, size)
	if n.of != nil && f != n.of.f {
		// The shared file is read-only here and remembers its size.
		n.of.f.ForgetSize()
	}
	if err != nil {
		return n.fsys.errno(err, "truncate", path)
	}
	return 0
}

// Statfs reports the backing file system's numbers.
func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Statfs(n.fsys.backing, &s); err != nil {
		return n.fsys.errno(err, "statfs", n.fsys.backing)
	}
	out.FromStatfsT(&s)
	out.NameLen = nameMax
	return 0
}
