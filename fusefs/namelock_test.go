package fusefs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// lockProbe is a node file system that, inside each call, reports whether
// the stripes of the directories involved could be taken: the calls must
// run with them held (shared for a lookup, exclusive otherwise).
type lockProbe struct {
	fuse.RawFileSystem
	l   *nameLockFS
	got map[string][]bool // per call: could each stripe be read-locked, write-locked
}

func (p *lockProbe) probe(op string, dirs ...uint64) {
	for _, d := range dirs {
		m := &p.l.stripes[p.l.stripe(d)]
		r := m.TryRLock()
		if r {
			m.RUnlock()
		}
		w := m.TryLock()
		if w {
			m.Unlock()
		}
		p.got[op] = append(p.got[op], r, w)
	}
}

func (p *lockProbe) Lookup(_ <-chan struct{}, h *fuse.InHeader, _ string, _ *fuse.EntryOut) fuse.Status {
	p.probe("lookup", h.NodeId)
	return fuse.OK
}

func (p *lockProbe) Rename(_ <-chan struct{}, in *fuse.RenameIn, _, _ string) fuse.Status {
	p.probe("rename", in.NodeId, in.Newdir)
	return fuse.OK
}

func (p *lockProbe) Unlink(_ <-chan struct{}, h *fuse.InHeader, _ string) fuse.Status {
	p.probe("unlink", h.NodeId)
	return fuse.OK
}

func (p *lockProbe) Rmdir(_ <-chan struct{}, h *fuse.InHeader, _ string) fuse.Status {
	p.probe("rmdir", h.NodeId)
	return fuse.OK
}

// TestNameLockCovers: a lookup runs with its directory's stripe shared
// (other lookups may run, no rename or removal), and renames (within one
// directory, across two stripes, and across two directories of one
// stripe) and removals run with theirs exclusive; every stripe is free
// again afterwards.
func TestNameLockCovers(t *testing.T) {
	p := &lockProbe{RawFileSystem: fuse.NewDefaultRawFileSystem(), got: map[string][]bool{}}
	l := newNameLockFS(p)
	p.l = l
	h := func(id uint64) *fuse.InHeader { return &fuse.InHeader{NodeId: id} }
	l.Lookup(nil, h(7), "a", &fuse.EntryOut{})
	l.Rename(nil, &fuse.RenameIn{InHeader: *h(7), Newdir: 7}, "a", "b")
	l.Rename(nil, &fuse.RenameIn{InHeader: *h(7), Newdir: 9}, "a", "b")
	l.Rename(nil, &fuse.RenameIn{InHeader: *h(9 + nameLockStripes), Newdir: 9}, "a", "b")
	l.Unlink(nil, h(3), "a")
	l.Rmdir(nil, h(4), "a")
	want := map[string][]bool{
		"lookup": {true, false},
		"rename": {false, false, false, false, false, false, false, false, false, false, false, false},
		"unlink": {false, false},
		"rmdir":  {false, false},
	}
	for op, w := range want {
		g := p.got[op]
		if len(g) != len(w) {
			t.Fatalf("%s: %d probes, want %d", op, len(g), len(w))
		}
		for k := range w {
			if g[k] != w[k] {
				t.Errorf("%s probe %d: could lock = %v, want %v (probes %v)", op, k, g[k], w[k], g)
			}
		}
	}
	for s := range l.stripes {
		if !l.stripes[s].TryLock() {
			t.Fatalf("stripe %d still held", s)
		}
		l.stripes[s].Unlock()
	}
}
