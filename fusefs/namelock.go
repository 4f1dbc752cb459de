package fusefs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Why lookups exclude renames and removals of the same directory. The
// kernel revalidates a cached entry with a LOOKUP that does not hold the
// directory's lock, so such a LOOKUP can run while a RENAME replaces the
// name. go-fuse records the node a LOOKUP answered under its name only
// after the node file system returned; a LOOKUP that read the old entry
// could record it after the RENAME had moved the new file there, taking
// the name away from the new file's node. That node, a live file that may
// be open, then had neither a name nor an open backing file, and its next
// GETATTR (an fstat of the open file) failed with ENOENT: go-fuse's
// posixtest OpenSymlinkRace, in a few runs out of a hundred under load.
//
// nameLockFS holds, per parent directory, a shared lock over each LOOKUP
// (the answer and its record) and an exclusive one over each RENAME,
// UNLINK and RMDIR (the change and go-fuse's update of its names), so a
// LOOKUP sees and records either the names before or the names after.
// Lookups never wait for each other. The locks are striped by node ID: a
// rename or removal delays only the lookups in directories of its stripes,
// for as long as it takes.
type nameLockFS struct {
	fuse.RawFileSystem
	stripes [nameLockStripes]sync.RWMutex
}

const nameLockStripes = 64

func newNameLockFS(inner fuse.RawFileSystem) *nameLockFS {
	return &nameLockFS{RawFileSystem: inner}
}

// stripe returns the lock of directory node ID dir.
func (l *nameLockFS) stripe(dir uint64) int { return int(dir % nameLockStripes) }

// lockDirs takes the stripes of dirs exclusively, in stripe order so two
// renames cannot deadlock, and returns the function that releases them.
func (l *nameLockFS) lockDirs(dirs ...uint64) func() {
	var held [2]int
	n := 0
	for _, d := range dirs {
		s := l.stripe(d)
		if n == 1 && held[0] == s {
			continue
		}
		held[n] = s
		n++
	}
	if n == 2 && held[1] < held[0] {
		held[0], held[1] = held[1], held[0]
	}
	for _, s := range held[:n] {
		l.stripes[s].Lock()
	}
	return func() {
		for k := n - 1; k >= 0; k-- {
			l.stripes[held[k]].Unlock()
		}
	}
}

func (l *nameLockFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	m := &l.stripes[l.stripe(h.NodeId)]
	m.RLock()
	defer m.RUnlock()
	return l.RawFileSystem.Lookup(c, h, name, out)
}

func (l *nameLockFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer l.lockDirs(in.NodeId, in.Newdir)()
	return l.RawFileSystem.Rename(c, in, oldName, newName)
}

func (l *nameLockFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer l.lockDirs(h.NodeId)()
	return l.RawFileSystem.Unlink(c, h, name)
}

func (l *nameLockFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer l.lockDirs(h.NodeId)()
	return l.RawFileSystem.Rmdir(c, h, name)
}
