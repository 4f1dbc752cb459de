package sector

import (
	"slices"
	"sort"
)

// Shrinking the hole map. The map on the backing file only ever grows while
// a File writes (see holes.go), so a sector that was a hole once and has
// been written since stays in it, and zeroing that sector in the backing
// file would read as a hole. The File therefore also keeps the map the file
// will need once its writes are durable: the loaded map without every
// sector written since, and without what lies at or past the last sector
// (never a hole). SettleHoles makes the file's data durable first and then
// writes that smaller map, so a crash at any point leaves a map that still
// covers every hole on the disk: a data sector lost in the crash is still
// a hole in the map that was on the disk then.
//
// The smaller map is only as fresh as the backing file: someone who can
// write the backing directory and kept an older copy of the attribute can
// put it back (the rollback docs/threat-model.md lists as not detected).

// maxSettleExtents bounds the pending map kept in memory: random writes into
// a large hole split it once per write. Once it holds settleSlack extents
// more, the closest are merged back down to maxSettleExtents, which keeps
// written sectors in the map (less precise, never wrong). Merging in
// batches costs one sort per settleSlack writes instead of a scan of the
// whole map per write.
const (
	maxSettleExtents = 4096
	settleSlack      = 1024
)

// knowHoles makes sure the map of a Version3 file is loaded, so that the
// writes that follow are subtracted from it. A map that fails to load is
// left alone: its holes fail anyway, and nothing is subtracted.
func (f *File) knowHoles(c *Cipher, fk *fileKey, h *header) {
	if h.ver() < Version3 {
		return
	}
	if m := f.holes.Load(); m != nil && m.h == h {
		return
	}
	if err := c.rlock(); err != nil {
		return
	}
	if fk.aead != nil {
		_, _ = f.holeMap(fk.aead, h)
	}
	c.runlock()
}

// pendingHoles is the map the file will need once its writes are durable,
// nil when the map of h is not loaded. Writers run alone.
func (f *File) pendingHoles(h *header) *holeMap {
	if s := f.settle; s != nil && s.h == h {
		return s
	}
	if m := f.holes.Load(); m != nil && m.h == h {
		return m
	}
	return nil
}

// wroteSectors notes that sectors [lo, hi) now hold sealed data. It runs on
// every write, and random writes into a large hole leave thousands of
// extents: so the extents hit are found by binary search and cut out of
// the pending map in place (no sort, no copy of the map per write). The
// pending map is the File's own; the loaded one, which readers share, is
// copied once before the first cut.
func (f *File) wroteSectors(h *header, lo, hi int64) {
	p := f.pendingHoles(h)
	if p == nil {
		return
	}
	i, j := p.overlapRange(lo, hi)
	if i == j {
		return
	}
	if p != f.settle {
		p = &holeMap{h: h, ext: append(make([]Extent, 0, len(p.ext)+1), p.ext...)}
		f.settle = p
	}
	var cut [2]Extent
	repl := cut[:0]
	if first := p.ext[i]; first.Start < lo {
		repl = append(repl, Extent{first.Start, lo})
	}
	if last := p.ext[j-1]; hi < last.End {
		repl = append(repl, Extent{hi, last.End})
	}
	p.ext = slices.Replace(p.ext, i, j, repl...)
	if len(p.ext) > maxSettleExtents+settleSlack {
		p.ext = mergeClosest(p.ext, maxSettleExtents)
	}
	f.settleDue.Store(true)
}

// cutHoles notes that the file now has n sectors: none from n-1 on can be
// a hole any more (the last one is always sealed).
func (f *File) cutHoles(h *header, n int64) {
	p := f.pendingHoles(h)
	if n == 0 {
		// An empty file has no holes, whatever the map on the disk says.
		f.settle = &holeMap{h: h}
		f.settleDue.Store(true)
		return
	}
	if p == nil || len(p.ext) == 0 || p.ext[len(p.ext)-1].End <= n-1 {
		return
	}
	f.settle = &holeMap{h: h, ext: removeExtent(p.ext, max(0, n-1), p.ext[len(p.ext)-1].End)}
	f.settleDue.Store(true)
}

// madeHoles notes that sectors [lo, hi) are holes again (the on-disk map
// covers them already). Like wroteSectors it changes the pending map, the
// File's own, in place.
func (f *File) madeHoles(h *header, lo, hi int64) {
	s := f.settle
	if s == nil || s.h != h || lo >= hi {
		return
	}
	// Extents never touch: those [lo, hi) overlaps or touches are one run,
	// which becomes one extent.
	i := sort.Search(len(s.ext), func(k int) bool { return s.ext[k].End >= lo })
	j := i + sort.Search(len(s.ext)-i, func(k int) bool { return s.ext[i+k].Start > hi })
	if i < j {
		lo, hi = min(lo, s.ext[i].Start), max(hi, s.ext[j-1].End)
	}
	s.ext = slices.Replace(s.ext, i, j, Extent{lo, hi})
	if len(s.ext) > maxSettleExtents+settleSlack {
		s.ext = mergeClosest(s.ext, maxSettleExtents)
	}
}

// HolesUnsettled reports whether SettleHoles has a smaller hole map to
// write. Safe to call while other calls run.
func (f *File) HolesUnsettled() bool { return f.settleDue.Load() }

// SettleHoles shrinks the file's hole map to the sectors that can still be
// holes: it syncs the file's data, then writes the smaller map. It needs
// exclusive access, like WriteAt; readers may run meanwhile. Where the
// key is closed it leaves the map as it is and returns ErrClosed.
func (f *File) SettleHoles(c *Cipher) error {
	if !f.settleDue.Load() {
		return nil
	}
	if err := f.checkCipher(c); err != nil {
		return err
	}
	h, s := f.hdr.Load(), f.settle
	if h == nil || s == nil || s.h != h {
		f.forgetSettle()
		return nil
	}
	b, err := f.backingSize()
	if err != nil {
		return err
	}
	size, err := f.plainSize(b)
	if err != nil {
		return err
	}
	_, fk, err := f.headerKey(c, b, false)
	if err != nil {
		return err
	}
	if err := c.rlock(); err != nil {
		return err
	}
	if fk.aead == nil {
		c.runlock()
		return ErrClosed
	}
	m, err := f.holeMap(fk.aead, h)
	c.runlock()
	if err != nil {
		return err
	}
	S := int64(f.sectorSize)
	next, fill := fitExtents(removeExtent(s.ext, max(0, (size-1)/S), 1<<62), MaxHoleExtents)
	if len(fill) == 0 && slices.Equal(next, m.ext) {
		f.forgetSettle()
		return nil
	}
	// Writes that split holes can leave more than the map keeps: the
	// smallest become sealed zeros, synced with the rest.
	if len(fill) > 0 {
		err = f.sealHoleExtents(c, fill)
	} else {
		err = f.datasync()
	}
	if err != nil {
		return err
	}
	if _, err := f.replaceHoles(c, fk, h, next); err != nil {
		return err
	}
	f.forgetSettle()
	return nil
}

// forgetSettle notes that the map on the backing file is the one SettleHoles
// would write.
func (f *File) forgetSettle() {
	f.settle = nil
	f.settleDue.Store(false)
}

// overlapRange returns the extents of the map that hold a sector of
// [lo, hi), as the index range [i, j) (i == j: none).
func (m *holeMap) overlapRange(lo, hi int64) (i, j int) {
	// Sorted, disjoint extents: both ends ascend.
	i = sort.Search(len(m.ext), func(k int) bool { return m.ext[k].End > lo })
	j = i + sort.Search(len(m.ext)-i, func(k int) bool { return m.ext[i+k].Start >= hi })
	return i, j
}

// removeExtent returns ext (normalized) without the sectors [lo, hi).
func removeExtent(ext []Extent, lo, hi int64) []Extent {
	out := make([]Extent, 0, len(ext)+1)
	for _, e := range ext {
		if e.End <= lo || hi <= e.Start {
			out = append(out, e)
			continue
		}
		if e.Start < lo {
			out = append(out, Extent{e.Start, lo})
		}
		if hi < e.End {
			out = append(out, Extent{hi, e.End})
		}
	}
	return out
}
