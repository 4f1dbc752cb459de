package volume

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap/names"
)

// Long symlink targets live in side files under names.LongLinkDir at the
// backing root (docs/format.md). The walker resolves them, remembers which
// it met, and after the walk reports the side files no symlink refers to.

// loadLink returns the encrypted target a backing symlink target stands
// for, reading its side file when it has one.
func (s *BackingSource) loadLink(stored string) (string, error) {
	if !names.IsLongLink(stored) {
		return stored, nil
	}
	fd, err := unix.Open(s.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	enc, err := names.LoadLink(fd, stored)
	if err != nil {
		return "", err
	}
	s.linksMu.Lock()
	if s.links == nil {
		s.links = map[string]bool{}
	}
	s.links[names.LongLinkFile(stored)] = true
	s.linksMu.Unlock()
	return enc, nil
}

// orphanLinks reports, as strays, the side files under the backing root
// rootfd that no symlink met during the walk refers to.
func (s *BackingSource) orphanLinks(rootfd int) error {
	if s.plaintext {
		return nil
	}
	// Listed without moving its access time, as the walk leaves every
	// other directory: a copy must not change its source at all.
	dfd, err := fusefs.OpenatNoAtime(rootfd, names.LongLinkDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("walk %s: open %s: %w", s.root, names.LongLinkDir, err)
	}
	f := os.NewFile(uintptr(dfd), names.LongLinkDir)
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("walk %s: list %s: %w", s.root, names.LongLinkDir, err)
	}
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	for _, e := range ents {
		if s.links[e.Name()] {
			continue
		}
		var size int64
		if fi, err := e.Info(); err == nil {
			size = fi.Size()
		}
		if err := s.stray(&Stray{Kind: StrayOrphanLongLink, Backing: names.LongLinkDir + "/" + e.Name(), Dir: names.LongLinkDir, PathKnown: false, Size: size}); err != nil {
			return err
		}
	}
	return nil
}
