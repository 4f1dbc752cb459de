package fusefs

import (
	"context"
	"encoding/binary"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
)

// OpendirHandle lets the kernel keep the listing in the directory's page
// cache (FOPEN_CACHE_DIR): a second ls of an unchanged directory then costs
// no READDIR, and reading it from the cache does not refresh the entries'
// attributes, which would make the kernel drop what it knows of their ACLs
// (none) and ask again. The kernel drops the cached listing itself when it
// changes the directory (create, unlink, rename, link, mkdir, rmdir all
// bump its version), when the directory's mtime differs at the next
// opendir, and when the gate closes (InvalidateAll drops the pages). The
// one thing it cannot see is the ".." entry of a directory moved to
// another parent: Rename drops the moved directory's listing.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle lists its directory on the first READDIR, not at OPENDIR: an
// opendir whose listing the kernel has cached is never followed by one.
// go-fuse serializes the calls on one handle.
type dirHandle struct {
	n  *Node
	ds fs.DirStream
}

var (
	_ fs.FileReaddirenter   = (*dirHandle)(nil)
	_ fs.FileSeekdirer      = (*dirHandle)(nil)
	_ fs.FileReleasedirer   = (*dirHandle)(nil)
	_ fs.NodeOpendirHandler = (*Node)(nil)
)

// list lists the directory once per handle. A handle that starts past
// offset 0 continues a listing another handle began (opendir.go), which
// the listing cache may still hold.
func (d *dirHandle) list(ctx context.Context, cont bool) syscall.Errno {
	if d.ds != nil {
		return 0
	}
	entries, errno := d.n.list(ctx, cont)
	if errno == 0 {
		d.ds = fs.NewListDirStream(entries)
	}
	return errno
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := d.list(ctx, false); errno != 0 {
		return nil, errno
	}
	if !d.ds.HasNext() {
		return nil, 0
	}
	e, errno := d.ds.Next()
	return &e, errno
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if errno := d.list(ctx, off > 0); errno != 0 {
		return errno
	}
	sd, ok := d.ds.(fs.FileSeekdirer)
	if !ok {
		return syscall.ENOTSUP
	}
	return sd.Seekdir(ctx, off)
}

func (d *dirHandle) Releasedir(context.Context, uint32) {}

// Readdir lists the directory with decrypted names. Reserved backing
// names are hidden; an entry whose name fails to decrypt is skipped with
// a log line rather than failing the whole listing.
func (n *Node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	entries, errno := n.list(ctx, false)
	if errno != 0 {
		return nil, errno
	}
	return fs.NewListDirStream(entries), 0
}

// list is Readdir's listing; with cont, one the listing cache kept since
// the backing directory last changed will do.
func (n *Node) list(ctx context.Context, cont bool) ([]fuse.DirEntry, syscall.Errno) {
	k, rel, errno := n.fsys.keys(ctx, "readdir")
	if errno != 0 {
		return nil, errno
	}
	defer rel()
	d, err := n.openDir(k)
	if err != nil {
		return nil, n.fsys.errno(err, "readdir", "")
	}
	defer d.close()
	// Taken before listing: a change made meanwhile leaves a stamp that
	// no longer matches, never a stale listing under a current one.
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return nil, n.fsys.errno(err, "readdir", d.path())
	}
	stamp := listingStamp{st.Mtim, st.Ctim}
	if cont {
		if entries := n.fsys.listings.get(n, stamp); entries != nil {
			return entries, 0
		}
	}

	entries := make([]fuse.DirEntry, 0, 16)
	entries = append(entries, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: n.StableAttr().Ino})
	parentIno := n.StableAttr().Ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	entries = append(entries, fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parentIno})

	// The cached descriptor is shared: list through a private one, whose
	// offset nobody else moves.
	lfd, err := openatNoAtime(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0, n.fsys.dirNoAtime)
	if err != nil {
		return nil, n.fsys.errno(err, "readdir", d.path())
	}
	defer unix.Close(lfd)

	bufp := n.fsys.direntBuf()
	defer n.fsys.bufPool.Put(bufp)
	buf := *bufp
	for {
		m, err := unix.Getdents(lfd, buf)
		if err != nil {
			return nil, n.fsys.errno(err, "readdir", d.path())
		}
		if m <= 0 {
			break
		}
		for rec := buf[:m]; len(rec) >= 19; {
			ino := binary.NativeEndian.Uint64(rec[0:8])
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			if reclen < 19 || reclen > len(rec) {
				break
			}
			typ := rec[18]
			nameb := rec[19:reclen]
			for i, c := range nameb {
				if c == 0 {
					nameb = nameb[:i]
					break
				}
			}
			rec = rec[reclen:]
			bname := string(nameb)
			if bname == "." || bname == ".." || k.Names.IsReserved(bname) {
				continue
			}
			enc := bname
			if names.IsLongName(bname) {
				full, err := names.ReadLongName(d.fd, bname)
				if err != nil {
					n.fsys.log.Warn().Str("op", "readdir").Str("path", d.path()+"/"+bname).Err(err).Msg("long name side file unreadable; entry skipped")
					continue
				}
				enc = full
			}
			plain, err := k.Names.DecryptName(d.id, enc)
			if err != nil {
				n.fsys.log.Warn().Str("op", "readdir").Str("path", d.path()+"/"+bname).Err(err).Msg("name failed to decrypt; entry skipped")
				continue
			}
			if ino == 1 {
				ino = 1<<63 | 1
			}
			if !n.fsys.plaintext {
				n.fsys.names.put(n, plain, bname)
			}
			entries = append(entries, fuse.DirEntry{Name: plain, Mode: dtypeMode(typ), Ino: ino})
		}
	}
	n.fsys.listings.put(n, stamp, entries)
	return entries, 0
}

const (
	// listingKeepMin: a shorter listing fits in one READDIRPLUS reply
	// (32 KiB), so nothing continues it.
	listingKeepMin = 64
	// listingKeepMax bounds the entries kept in all (a few MiB at most).
	listingKeepMax = 1 << 16
)

// listingStamp is when a backing directory last changed.
type listingStamp struct{ mtime, ctime unix.Timespec }

// listingCache keeps the last listing of a few large directories, so that
// the READDIR requests continuing one, each served through a handle of its
// own (opendir.go), do not list and decrypt the whole directory again. A
// listing is used only while the backing directory's modification and
// change times are those it was made at, and a listing from offset 0 is
// always made afresh. Entries are shared read-only.
type listingCache struct {
	mu    sync.Mutex
	m     map[*Node]*keptListing // GUARDED_BY(mu)
	total int                    // entries held; GUARDED_BY(mu)
}

type keptListing struct {
	stamp   listingStamp
	entries []fuse.DirEntry
}

func (c *listingCache) get(n *Node, s listingStamp) []fuse.DirEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[n]; e != nil && e.stamp == s {
		return e.entries
	}
	return nil
}

func (c *listingCache) put(n *Node, s listingStamp, entries []fuse.DirEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(n)
	if len(entries) < listingKeepMin || len(entries) > listingKeepMax {
		return
	}
	for k := range c.m {
		if c.total+len(entries) <= listingKeepMax {
			break
		}
		c.dropLocked(k)
	}
	if c.m == nil {
		c.m = make(map[*Node]*keptListing)
	}
	c.m[n] = &keptListing{stamp: s, entries: entries}
	c.total += len(entries)
}

func (c *listingCache) drop(n *Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(n)
}

func (c *listingCache) dropLocked(n *Node) {
	if e := c.m[n]; e != nil {
		c.total -= len(e.entries)
		delete(c.m, n)
	}
}

func (c *listingCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.total = nil, 0
}

func dtypeMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return syscall.S_IFDIR
	case unix.DT_LNK:
		return syscall.S_IFLNK
	case unix.DT_FIFO:
		return syscall.S_IFIFO
	case unix.DT_SOCK:
		return syscall.S_IFSOCK
	case unix.DT_CHR:
		return syscall.S_IFCHR
	case unix.DT_BLK:
		return syscall.S_IFBLK
	}
	return syscall.S_IFREG
}

func (f *FS) direntBuf() *[]byte {
	if b, ok := f.bufPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 32<<10)
	return &b
}
