package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/sector"
)

// BackingSource is the plaintext tree of a volume's (or a snapshot's)
// backing directory, decrypted as it is read, without a mount: what copy
// reads and fsck checks. It shows every entry as a mount of the volume
// would (names, modes, owners, sizes, symlink targets, user attributes)
// and reads nothing but the backing directory, which it never changes.
//
// Entries that do not decode are yielded with Err set and the walk goes
// on; what the backing holds beside the tree (stray temporary files,
// orphaned long-name side files, missing directory IDs) goes to the
// handler set with OnStray, and is skipped without one.
type BackingSource struct {
	root       string // absolute backing directory
	keys       *fusefs.Keys
	release    func() // closes keys the source owns; nil when borrowed
	sectorSize int
	plaintext  bool // plaintext-names volume
	onStray    func(*Stray) error

	linksMu sync.Mutex
	links   map[string]bool // long symlink targets the walk has met (longlinks.go)
}

var _ Source = (*BackingSource)(nil)

// NewBackingSource reads the backing directory backing with keys, which
// stay the caller's: they must stay open until Close, and the caller
// closes them afterwards.
func NewBackingSource(backing string, keys *fusefs.Keys) (*BackingSource, error) {
	if keys == nil || keys.Content == nil || keys.Names == nil {
		return nil, fmt.Errorf("backing source %s: no keys", backing)
	}
	abs, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("backing source %s: %w", backing, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, fmt.Errorf("backing source %s: %w", abs, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("backing source %s: not a directory", abs)
	}
	return &BackingSource{
		root:       abs,
		keys:       keys,
		sectorSize: keys.Content.SectorSize(),
		plaintext:  keys.Names.Plaintext(),
	}, nil
}

// OpenBackingSource reads the volume u unlocked. The source takes u over
// (u must not be used afterwards) and zeroizes its keys on Close.
func OpenBackingSource(u *Unlocked) (*BackingSource, error) {
	backing := u.Backing
	keys, err := openKeys(u)
	if err != nil {
		return nil, err
	}
	s, err := NewBackingSource(backing, keys)
	if err != nil {
		closeUnused(keys)
		return nil, err
	}
	s.release = func() { closeUnused(keys) }
	return s, nil
}

// OnStray sets the handler for what the backing directory holds beside
// the tree's entries (see Stray). It is called during Walk, before the
// entries of the directory holding the stray are yielded; an error from
// it stops the walk. Without a handler strays are skipped.
func (s *BackingSource) OnStray(fn func(*Stray) error) { s.onStray = fn }

// Root is the absolute backing directory.
func (s *BackingSource) Root() string { return s.root }

// SectorSize is the volume's plaintext sector size.
func (s *BackingSource) SectorSize() int { return s.sectorSize }

// Keys are the keys the source reads with.
func (s *BackingSource) Keys() *fusefs.Keys { return s.keys }

// Close drops the keys the source owns.
func (s *BackingSource) Close() error {
	if s.release != nil {
		s.release()
		s.release = nil
	}
	return nil
}

// Walk yields the root, then every directory before its children, the
// children of a directory in plaintext-name order (those whose names do
// not decode last, in backing-name order). Only one directory listing per
// level of depth is held at a time.
func (s *BackingSource) Walk(ctx context.Context, fn func(*Entry) error) error {
	fd, err := fusefs.OpenatNoAtime(unix.AT_FDCWD, s.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("walk %s: %w", s.root, err)
	}
	defer unix.Close(fd)
	e := &Entry{}
	s.fillEntry(e, fd, "", s.root, linkName{})
	if e.Type != unix.S_IFDIR {
		return fmt.Errorf("walk %s: the backing root is not a directory", s.root)
	}
	if err := fn(e); err != nil {
		return err
	}
	if err := s.walkDir(ctx, &backingDir{fd: fd, pathKnown: true}, fn); err != nil {
		return err
	}
	return s.orphanLinks(fd)
}

// backingDir is a backing directory being walked.
type backingDir struct {
	fd        int
	rel       string // backing path relative to the root
	path      string // plaintext path
	pathKnown bool   // false below a directory whose name did not decode
	id        []byte // directory ID; nil when idErr is set
	idErr     error
}

// procPath names entry name of d for the path-based calls (xattrs) that
// have no *at form: through /proc the path stays short at any depth.
func (d *backingDir) procPath(name string) string {
	return "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + name
}

func (s *BackingSource) walkDir(ctx context.Context, d *backingDir, fn func(*Entry) error) error {
	s.readDirID(d)
	if d.idErr != nil {
		kind := StrayBadDirID
		if errors.Is(d.idErr, unix.ENOENT) {
			kind = StrayMissingDirID
		}
		if err := s.stray(&Stray{Kind: kind, Dir: d.rel, DirPath: d.path, PathKnown: d.pathKnown,
			Backing: joinRel(d.rel, dirIDName), Err: d.idErr}); err != nil {
			return err
		}
	}
	children, err := s.list(d)
	if err != nil {
		return err
	}
	for i := range children {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := &children[i]
		e := &Entry{Backing: joinRel(d.rel, c.backing), Err: c.err}
		if c.err == nil && d.pathKnown {
			e.Path = joinRel(d.path, c.plain)
		}
		e.PathUnknown = e.Path == "" && c.err == nil
		ln := linkName{}
		if c.err == nil && d.idErr == nil {
			ln = linkName{dirID: d.id, name: c.plain, ok: true}
		}
		s.fillEntry(e, d.fd, c.backing, d.procPath(c.backing), ln)
		if err := fn(e); err != nil {
			return err
		}
		if e.Type != unix.S_IFDIR {
			continue
		}
		if err := s.descend(ctx, d, c, e, fn); err != nil {
			return err
		}
	}
	return nil
}

// descend walks the child directory c of d, yielded as e.
func (s *BackingSource) descend(ctx context.Context, d *backingDir, c *listed, e *Entry, fn func(*Entry) error) error {
	fd, err := fusefs.OpenatNoAtime(d.fd, c.backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("walk %s: open directory %s: %w", s.root, e.Backing, err)
	}
	defer unix.Close(fd)
	sub := &backingDir{fd: fd, rel: e.Backing, path: e.Path, pathKnown: e.Path != ""}
	return s.walkDir(ctx, sub, fn)
}

func (s *BackingSource) stray(st *Stray) error {
	if s.onStray == nil {
		return nil
	}
	return s.onStray(st)
}

// joinRel joins backing or plaintext path components with "/"; "" is the
// root.
func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Open opens the plaintext content of the regular file e.
func (s *BackingSource) Open(e *Entry) (Content, error) {
	if e.Type != unix.S_IFREG {
		return nil, fmt.Errorf("open %s: not a regular file", e.describe())
	}
	f, err := openBackingFile(s.root, e.Backing)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", e.describe(), err)
	}
	sf, err := sector.NewFile(f, s.sectorSize)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", e.describe(), err)
	}
	return &backingContent{f: sf, c: s.keys.Content, name: e.describe()}, nil
}

// describe names an entry in messages: its plaintext path when known,
// else its backing path.
func (e *Entry) describe() string {
	switch {
	case e.Path != "":
		return e.Path
	case e.Backing == "":
		return "the root directory"
	}
	return "backing entry " + e.Backing
}
