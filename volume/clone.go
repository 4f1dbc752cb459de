package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
)

// A tree clone copies a directory tree (a backing directory: ciphertext,
// never decrypted) file by file, in parallel, keeping holes, extended
// attributes, modes, owners, times, symlinks and hard links, by reflink
// where the file system allows. It can then be brought up to date with its
// source (Update): the snapshot of a mounted volume copies once while writes
// go on and once more, for what changed, while they wait.
//
// Change detection: every source entry is stat'ed before it is copied;
// Update copies again what differs in type, inode, size, modification or
// change time. A change in the same clock tick as that stat leaves the
// times as they were on file systems with coarse timestamps, so an entry
// whose change time was within racyMargin of the stat counts as changed
// whatever Update sees (as git does with "racily clean" entries).

// racyMargin is more than a clock tick at HZ=100.
const racyMargin = 20_000_000 // nanoseconds

// CloneOptions tune a tree clone.
type CloneOptions struct {
	// Workers copy files in parallel; 0 means twice the CPUs (at least 4):
	// copies wait on I/O as much as on the CPU.
	Workers int
	// Progress is told the bytes to copy and those copied (nil: none).
	Progress Progress
	// Skip leaves out the entries at these slash-separated paths relative
	// to the root (and everything below them).
	Skip func(rel string) bool
	// Live says the source may change while it is read: entries that
	// vanish between listing and copying are left to Update.
	Live bool
}

// CloneStats counts what a clone or an update did.
type CloneStats struct {
	Entries   int   `json:"entries"`   // entries of the clone, the root not counted
	Files     int   `json:"files"`     // regular files written
	Reflinked int   `json:"reflinked"` // of those, by reflink
	Bytes     int64 `json:"bytes"`     // bytes of the regular files written
	Removed   int   `json:"removed"`   // entries removed (Update)
}

// Clone methods.
const (
	MethodReflink = "reflink"
	MethodCopy    = "copy"
)

// treeEntry is one source entry as stat'ed before it was copied.
type treeEntry struct {
	rel          string
	mode         uint16
	uid, gid     uint32
	nlink        uint32
	ino, dev     uint64
	rdev         uint64
	size         int64
	atime, mtime unix.Timespec
	ctime        unix.Timespec
	racy         bool
	// reflinked: the clone's copy shares extents with this version of the
	// file; patch: Update brings that copy up to date in place.
	reflinked, patch bool
}

func (e *treeEntry) kind() uint32 { return uint32(e.mode) & unix.S_IFMT }
func (e *treeEntry) isDir() bool  { return e.kind() == unix.S_IFDIR }

// same reports whether o is e unchanged.
func (e *treeEntry) same(o *treeEntry) bool {
	return !e.racy && e.mode == o.mode && e.ino == o.ino && e.dev == o.dev && e.size == o.size &&
		e.mtime == o.mtime && e.ctime == o.ctime && e.uid == o.uid && e.gid == o.gid
}

// TreeClone is a copy of a directory tree that Update can bring up to date.
type TreeClone struct {
	src, dst string
	opt      CloneOptions
	entries  map[string]*treeEntry // the source as last copied, by relative path
	root     *treeEntry
	reflink  atomic.Int32
	anyCopy  atomic.Bool // some regular file was copied, not reflinked
	progMu   sync.Mutex
}

// CloneTree copies the tree at src to dst, which must be missing or an
// empty directory. On error dst may hold part of the tree; the caller
// removes it.
func CloneTree(ctx context.Context, src, dst string, opt CloneOptions) (*TreeClone, CloneStats, error) {
	if opt.Workers <= 0 {
		opt.Workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	c := &TreeClone{src: src, dst: dst, opt: opt}
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, CloneStats{}, fmt.Errorf("clone %s: %w", src, err)
	}
	root, entries, err := c.walk()
	if err != nil {
		return nil, CloneStats{}, err
	}
	c.root = root
	st, err := c.apply(ctx, nil, entries)
	if err != nil {
		return nil, st, err
	}
	return c, st, nil
}

// Update copies again what changed in the source since it was last copied
// and removes what is gone, so that dst equals src as it is now. It is
// meant for a source that no longer changes.
func (c *TreeClone) Update(ctx context.Context) (CloneStats, error) {
	root, entries, err := c.walk()
	if err != nil {
		return CloneStats{}, err
	}
	old := c.entries
	c.root = root
	return c.apply(ctx, old, entries)
}

// Method says how the clone's regular files were written: MethodReflink
// when every one shares extents with its source, else MethodCopy.
func (c *TreeClone) Method() string {
	if c.reflink.Load() == reflinkWorks && !c.anyCopy.Load() {
		return MethodReflink
	}
	return MethodCopy
}

// Entries is the number of entries in the clone, the root not counted.
func (c *TreeClone) Entries() int { return len(c.entries) }

// walk lists the source tree in pre-order, stat'ing every entry.
func (c *TreeClone) walk() (*treeEntry, []*treeEntry, error) {
	root, err := statEntry(unix.AT_FDCWD, c.src, "")
	if err != nil {
		return nil, nil, fmt.Errorf("clone %s: %w", c.src, err)
	}
	if !root.isDir() {
		return nil, nil, fmt.Errorf("clone %s: not a directory", c.src)
	}
	var out []*treeEntry
	var walkDir func(rel string) error
	walkDir = func(rel string) error {
		dir := filepath.Join(c.src, rel)
		// O_NOATIME: a snapshot changes nothing in its source, not even
		// the access times of the directories it lists.
		fd, err := fusefs.OpenatNoAtime(unix.AT_FDCWD, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			if c.opt.Live && errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("clone: open %s: %w", dir, err)
		}
		f := os.NewFile(uintptr(fd), dir)
		names, err := f.Readdirnames(-1)
		if err != nil {
			f.Close()
			return fmt.Errorf("clone: list %s: %w", dir, err)
		}
		sort.Strings(names)
		var subdirs []string
		for _, name := range names {
			crel := name
			if rel != "" {
				crel = rel + "/" + name
			}
			if c.opt.Skip != nil && c.opt.Skip(crel) {
				continue
			}
			e, err := statEntry(fd, name, crel)
			if err != nil {
				if c.opt.Live && errors.Is(err, unix.ENOENT) {
					continue
				}
				f.Close()
				return fmt.Errorf("clone: stat %s: %w", filepath.Join(dir, name), err)
			}
			out = append(out, e)
			if e.isDir() {
				subdirs = append(subdirs, crel)
			}
		}
		f.Close()
		for _, d := range subdirs {
			if err := walkDir(d); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walkDir(""); err != nil {
		return nil, nil, err
	}
	return root, out, nil
}

// statEntry stats name in dirfd. It notes the coarse clock first: a change
// time that close to it may hide a change made right after the stat.
func statEntry(dirfd int, name, rel string) (*treeEntry, error) {
	var now unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &now)
	var st unix.Statx_t
	if err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, unix.STATX_BASIC_STATS, &st); err != nil {
		return nil, err
	}
	e := &treeEntry{
		rel: rel, mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: st.Nlink, ino: st.Ino,
		dev:   unix.Mkdev(st.Dev_major, st.Dev_minor),
		rdev:  unix.Mkdev(st.Rdev_major, st.Rdev_minor),
		size:  int64(st.Size),
		atime: unix.Timespec{Sec: st.Atime.Sec, Nsec: int64(st.Atime.Nsec)},
		mtime: unix.Timespec{Sec: st.Mtime.Sec, Nsec: int64(st.Mtime.Nsec)},
		ctime: unix.Timespec{Sec: st.Ctime.Sec, Nsec: int64(st.Ctime.Nsec)},
	}
	e.racy = now.Nano()-e.ctime.Nano() < racyMargin
	return e, nil
}

func (c *TreeClone) srcPath(rel string) string { return filepath.Join(c.src, rel) }
func (c *TreeClone) dstPath(rel string) string { return filepath.Join(c.dst, rel) }

// inodeKey identifies a source inode for hard links.
type inodeKey struct{ dev, ino uint64 }

// apply makes dst hold entries, given that it holds old (nil: nothing yet).
func (c *TreeClone) apply(ctx context.Context, old map[string]*treeEntry, entries []*treeEntry) (CloneStats, error) {
	var st CloneStats
	next := make(map[string]*treeEntry, len(entries))
	for _, e := range entries {
		next[e.rel] = e
	}
	keep := func(e *treeEntry) bool { // e's copy in dst is still right
		o := old[e.rel]
		if o == nil || o.kind() != e.kind() {
			return false
		}
		return e.isDir() || o.same(e)
	}
	// patchable: e's copy is a reflink of the same file, which changed in
	// place; remapping what changed suffices (clone_reflink.go).
	patchable := func(e *treeEntry) bool {
		o := old[e.rel]
		return o != nil && o.reflinked && e.kind() == unix.S_IFREG && o.kind() == unix.S_IFREG &&
			o.ino == e.ino && o.dev == e.dev && o.nlink == 1 && e.nlink == 1
	}
	// touched: directories whose entries change, so their times must be
	// set again; metaDirs: directories whose own metadata changed.
	touched := map[string]bool{}
	parent := func(rel string) string {
		if i := strings.LastIndexByte(rel, '/'); i >= 0 {
			return rel[:i]
		}
		return ""
	}

	// Removals, deepest first, so a directory goes after its content.
	var gone []*treeEntry
	for rel, o := range old {
		if e := next[rel]; e == nil || !keep(e) && !patchable(e) {
			gone = append(gone, o)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].rel > gone[j].rel })
	for _, o := range gone {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		p := c.dstPath(o.rel)
		var err error
		if o.isDir() {
			err = os.RemoveAll(p)
		} else {
			err = os.Remove(p)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return st, fmt.Errorf("clone: remove %s: %w", p, err)
		}
		st.Removed++
		touched[parent(o.rel)] = true
	}

	// What to write: directories in order (parents first), then files by
	// the workers, then the other names of hard-linked inodes.
	var files []*treeEntry
	var total int64
	linkTo := map[inodeKey]string{} // inode -> a dst name that is complete
	type link struct{ from, to string }
	var links []link
	var metaDirs []*treeEntry
	for _, e := range entries {
		if keep(e) {
			if e.isDir() {
				if o := old[e.rel]; !o.same(e) {
					metaDirs = append(metaDirs, e)
				}
			} else if e.nlink > 1 {
				linkTo[inodeKey{e.dev, e.ino}] = e.rel
			}
			continue
		}
		touched[parent(e.rel)] = true
		if patchable(e) {
			e.patch = true
			files = append(files, e)
			total += e.size
			continue
		}
		if e.isDir() {
			if err := os.Mkdir(c.dstPath(e.rel), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return st, fmt.Errorf("clone: %w", err)
			}
			metaDirs = append(metaDirs, e)
			continue
		}
		if e.nlink > 1 {
			k := inodeKey{e.dev, e.ino}
			if first, ok := linkTo[k]; ok {
				links = append(links, link{first, e.rel})
				continue
			}
			linkTo[k] = e.rel
		}
		if e.kind() == unix.S_IFREG {
			files = append(files, e)
			total += e.size
			continue
		}
		if err := c.makeSpecial(e); err != nil {
			if c.opt.Live && errors.Is(err, os.ErrNotExist) {
				delete(next, e.rel)
				continue
			}
			return st, err
		}
	}

	if c.opt.Progress != nil {
		c.opt.Progress.Start("copying backing files", int64(len(files)), total)
		defer c.opt.Progress.Done()
	}
	vanished, err := c.copyFiles(ctx, files, &st)
	if err != nil {
		return st, err
	}
	for _, rel := range vanished {
		delete(next, rel)
	}
	for _, l := range links {
		if _, ok := next[l.from]; !ok {
			delete(next, l.to) // its inode vanished with the first name
			continue
		}
		if err := os.Link(c.dstPath(l.from), c.dstPath(l.to)); err != nil {
			return st, fmt.Errorf("clone: hard link %s: %w", l.to, err)
		}
	}

	// Directory metadata deepest first: setting a directory's times must
	// come after everything inside it.
	for _, e := range metaDirs {
		touched[e.rel] = true
	}
	var dirs []*treeEntry
	for rel := range touched {
		if rel == "" {
			continue
		}
		if e := next[rel]; e != nil && e.isDir() {
			dirs = append(dirs, e)
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].rel > dirs[j].rel })
	for _, e := range dirs {
		if err := applyMeta(c.dstPath(e.rel), c.srcPath(e.rel), e); err != nil {
			if c.opt.Live && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return st, fmt.Errorf("clone: %w", err)
		}
	}
	if err := applyMeta(c.dst, c.src, c.root); err != nil {
		return st, fmt.Errorf("clone: %w", err)
	}
	c.entries = next
	st.Entries = len(next)
	return st, nil
}

// makeSpecial creates a symlink, FIFO, socket or device node like e.
func (c *TreeClone) makeSpecial(e *treeEntry) error {
	src, dst := c.srcPath(e.rel), c.dstPath(e.rel)
	switch e.kind() {
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("clone: %w", err)
		}
		if err := os.Symlink(target, dst); err != nil {
			return fmt.Errorf("clone: %w", err)
		}
	default:
		if err := unix.Mknod(dst, uint32(e.mode), int(e.rdev)); err != nil {
			return fmt.Errorf("clone: mknod %s: %w", dst, err)
		}
	}
	if err := applyMeta(dst, src, e); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	return nil
}

// copyFiles copies the regular files in parallel. It returns the entries
// that vanished before they could be copied (a live source only).
func (c *TreeClone) copyFiles(ctx context.Context, files []*treeEntry, st *CloneStats) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *treeEntry)
	var (
		mu       sync.Mutex
		firstErr error
		vanished []string
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	for range min(c.opt.Workers, max(1, len(files))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				n, reflinked, err := c.copyFile(e)
				mu.Lock()
				switch {
				case err == nil:
					e.reflinked = reflinked
					st.Files++
					st.Bytes += n
					if reflinked {
						st.Reflinked++
					}
				case c.opt.Live && errors.Is(err, os.ErrNotExist):
					vanished = append(vanished, e.rel)
					if e.patch { // its old copy is still there
						if rerr := os.Remove(c.dstPath(e.rel)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
							err = fmt.Errorf("clone: %w", rerr)
							break
						}
					}
					err = nil
				}
				mu.Unlock()
				if err != nil {
					fail(err)
				}
			}
		}()
	}
feed:
	for _, e := range files {
		select {
		case jobs <- e:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return vanished, ctx.Err()
}

// copyFile copies one regular file with its metadata.
func (c *TreeClone) copyFile(e *treeEntry) (int64, bool, error) {
	srcPath, dstPath := c.srcPath(e.rel), c.dstPath(e.rel)
	src, err := openSource(srcPath)
	if err != nil {
		return 0, false, fmt.Errorf("clone: %w", err)
	}
	defer src.Close()
	var sst unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &sst); err != nil {
		return 0, false, fmt.Errorf("clone: stat %s: %w", srcPath, err)
	}
	add := func(n int64) {
		if c.opt.Progress != nil {
			c.progMu.Lock()
			c.opt.Progress.AddBytes(n)
			c.progMu.Unlock()
		}
	}
	if e.patch {
		if ok, err := c.patchFile(e, src, sst.Size, add); ok || err != nil {
			return sst.Size, ok, err
		}
	}
	dst, err := os.OpenFile(dstPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, false, fmt.Errorf("clone: %w", err)
	}
	reflinked, err := c.copyRegular(dst, src, sst.Size, add)
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("clone: close %s: %w", dstPath, cerr)
	}
	if err != nil {
		return 0, false, fmt.Errorf("clone: %w", err)
	}
	if !reflinked && sst.Size > 0 {
		c.anyCopy.Store(true)
	}
	if err := applyMeta(dstPath, srcPath, e); err != nil {
		return 0, false, fmt.Errorf("clone: %w", err)
	}
	return sst.Size, reflinked, nil
}

// patchFile updates the reflinked copy of e in place from src (size bytes).
// It reports false, having removed the copy, when the file system cannot
// tell what changed: the caller copies the file whole.
func (c *TreeClone) patchFile(e *treeEntry, src *os.File, size int64, add func(int64)) (bool, error) {
	dstPath := c.dstPath(e.rel)
	dst, err := os.OpenFile(dstPath, os.O_WRONLY, 0)
	if err != nil {
		return false, fmt.Errorf("clone: %w", err)
	}
	err = patchReflinked(dst, src, size)
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if rerr := os.Remove(dstPath); rerr != nil {
			return false, fmt.Errorf("clone: %w", rerr)
		}
		return false, nil
	}
	add(size)
	if err := applyMeta(dstPath, c.srcPath(e.rel), e); err != nil {
		return false, fmt.Errorf("clone: %w", err)
	}
	return true, nil
}
