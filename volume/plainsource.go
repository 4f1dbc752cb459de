package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap/names"
)

// PlainSource is a plaintext directory tree, the source of an import. It
// only reads: directories and files are opened with O_NOATIME (always for
// root, otherwise where the caller owns them), so the walk leaves access
// times as they were, except on symlinks, whose targets cannot be read
// without the kernel touching them.
type PlainSource struct {
	root   string
	rootfd int
	dev    uint64
	ino    uint64
	log    zerolog.Logger

	warned sync.Map // attribute name → struct{}: attributes left out, warned about once
}

var _ Source = (*PlainSource)(nil)

// OpenPlainSource opens the directory dir for reading.
func OpenPlainSource(dir string, log zerolog.Logger) (*PlainSource, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, syscall.EPERM) {
		fd, err = unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("%s does not exist: give the directory whose content is to be imported", abs)
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("%s is not a directory: give the directory whose content is to be imported", abs)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", abs, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", abs, err)
	}
	return &PlainSource{root: abs, rootfd: fd, dev: st.Dev, ino: st.Ino, log: log}, nil
}

// Root is the absolute path of the tree.
func (s *PlainSource) Root() string { return s.root }

// Identity names the directory beyond its path: its device and inode, so
// a rerun against another directory at the same path is noticed.
func (s *PlainSource) Identity() string {
	return fmt.Sprintf("dev %d:%d inode %d", unix.Major(s.dev), unix.Minor(s.dev), s.ino)
}

// Close releases the root directory.
func (s *PlainSource) Close() error {
	if s.rootfd < 0 {
		return nil
	}
	err := unix.Close(s.rootfd)
	s.rootfd = -1
	return err
}

// plainWalk is the state of one Walk: inode numbers of other file systems
// mounted inside the tree get walk-local identities, so two files from
// different devices never look like hard links of one another.
type plainWalk struct {
	s       *PlainSource
	fn      func(*Entry) error
	foreign map[[2]uint64]uint64
}

// Walk visits the tree: the root, then each directory's entries in name
// order, every directory followed at once by its own entries.
func (s *PlainSource) Walk(ctx context.Context, fn func(*Entry) error) error {
	w := &plainWalk{s: s, fn: fn, foreign: map[[2]uint64]uint64{}}
	var st unix.Stat_t
	if err := unix.Fstat(s.rootfd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", s.root, err)
	}
	root := w.entry(&st, "")
	var err error
	if root.Xattrs, err = s.xattrs(fdName(s.rootfd, ""), s.root); err != nil {
		return err
	}
	if err := fn(root); err != nil {
		return err
	}
	dfd, err := unix.Dup(s.rootfd)
	if err != nil {
		return fmt.Errorf("walk %s: %w", s.root, err)
	}
	return w.dir(ctx, dfd, "")
}

// dir visits the entries of the directory open as dfd (at rel), and
// closes dfd.
func (w *plainWalk) dir(ctx context.Context, dfd int, rel string) error {
	defer unix.Close(dfd)
	list, err := readDirNames(dfd)
	if err != nil {
		return fmt.Errorf("read directory %s: %w", w.s.path(rel), err)
	}
	sort.Strings(list)
	for _, name := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		path := joinRel(rel, name)
		if len(name) > names.NameMax {
			return fmt.Errorf("%s: the name is %d bytes long, longer than the %d a volume stores; rename it and run the import again", w.s.path(path), len(name), names.NameMax)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				w.s.log.Warn().Str("path", w.s.path(path)).Msg("removed while the tree was read; left out")
				continue
			}
			return fmt.Errorf("stat %s: %w", w.s.path(path), err)
		}
		e := w.entry(&st, path)
		switch e.Type {
		case unix.S_IFLNK:
			if e.Target, err = fusefs.ReadlinkAt(dfd, name); err != nil {
				return fmt.Errorf("read symlink %s: %w", w.s.path(path), err)
			}
		case unix.S_IFREG, unix.S_IFDIR:
			if e.Xattrs, err = w.s.xattrs(fdName(dfd, name), w.s.path(path)); err != nil {
				return err
			}
		}
		if err := w.fn(e); err != nil {
			return err
		}
		if e.Type != unix.S_IFDIR {
			continue
		}
		cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
		if errors.Is(err, syscall.EPERM) {
			cfd, err = unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return fmt.Errorf("open directory %s: %w", w.s.path(path), err)
		}
		if err := w.dir(ctx, cfd, path); err != nil {
			return err
		}
	}
	return nil
}

func (w *plainWalk) entry(st *unix.Stat_t, path string) *Entry {
	e := &Entry{
		Path:    path,
		Backing: path,
		Type:    st.Mode & unix.S_IFMT,
		Mode:    st.Mode & 07777,
		UID:     st.Uid,
		GID:     st.Gid,
		Rdev:    st.Rdev,
		Atime:   time.Unix(st.Atim.Unix()),
		Mtime:   time.Unix(st.Mtim.Unix()),
		Nlink:   uint32(st.Nlink),
		Inode:   st.Ino,
	}
	if e.Type == unix.S_IFREG {
		e.Size = st.Size
	}
	if st.Dev != w.s.dev {
		key := [2]uint64{st.Dev, st.Ino}
		id, ok := w.foreign[key]
		if !ok {
			id = 1<<63 | uint64(len(w.foreign)+1)
			w.foreign[key] = id
		}
		e.Inode = id
	}
	return e
}

func (s *PlainSource) path(rel string) string { return filepath.Join(s.root, rel) }

// xattrs reads the user.* attributes of the entry at path (a /proc/self/fd
// path; shown is its name for messages). Attributes of other namespaces
// (ACLs, security labels) have no place in a volume: each name is warned
// about once.
func (s *PlainSource) xattrs(path, shown string) ([]Xattr, error) {
	list, err := fusefs.ListXattrs(path)
	if err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("list extended attributes of %s: %w", shown, err)
	}
	var out []Xattr
	for _, name := range list {
		if !strings.HasPrefix(name, "user.") {
			if _, seen := s.warned.LoadOrStore(name, struct{}{}); !seen {
				s.log.Warn().Str("path", shown).Str("xattr", name).Msg("only user.* extended attributes are stored in a volume; this one is left out (here and on every other file)")
			}
			continue
		}
		v, err := fusefs.GetXattr(path, name)
		if errors.Is(err, syscall.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read extended attribute %s of %s: %w", name, shown, err)
		}
		out = append(out, Xattr{Name: name, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Open opens a regular file of the tree for reading. It fails when the
// file was replaced since the walk saw it.
func (s *PlainSource) Open(e *Entry) (Content, error) {
	fd, err := openNoAtime(s.rootfd, e.Path, unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.path(e.Path), err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", s.path(e.Path), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (st.Dev == s.dev && st.Ino != e.Inode) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s was replaced while the tree was read; run the command again when it is quiet", s.path(e.Path))
	}
	return &plainContent{fd: fd, size: e.Size, path: s.path(e.Path)}, nil
}

// plainContent reads a plaintext file with pread and finds its holes with
// SEEK_DATA/SEEK_HOLE. size is what the walk saw: the content is read up
// to there.
type plainContent struct {
	fd   int
	size int64
	path string
}

func (c *plainContent) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(c.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("read %s: %w", c.path, err)
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (c *plainContent) NextData(off int64) (int64, int64, error) {
	if off >= c.size {
		return 0, 0, io.EOF
	}
	start, err := unix.Seek(c.fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return 0, 0, io.EOF
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.EOPNOTSUPP):
		return off, c.size, nil // holes unknown: all data
	case err != nil:
		return 0, 0, fmt.Errorf("seek data in %s: %w", c.path, err)
	}
	if start >= c.size {
		return 0, 0, io.EOF
	}
	end, err := unix.Seek(c.fd, start, unix.SEEK_HOLE)
	if err != nil || end > c.size {
		end = c.size
	}
	return start, end, nil
}

func (c *plainContent) Close() error { return unix.Close(c.fd) }
