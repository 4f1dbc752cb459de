package sector

import "slices"

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
// a large hole split it once per write. Beyond it, the closest extents are
// merged again, which keeps written sectors in the map (less precise, never
// wrong).
const maxSettleExtents = 4096

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

// wroteSectors notes that sectors [lo, hi) now hold sealed data.
func (f *File) wroteSectors(h *header, lo, hi int64) {
	p := f.pendingHoles(h)
	if p == nil || !p.overlaps(lo, hi) {
		return
	}
	f.settle = &holeMap{h: h, ext: normalizeExtents(removeExtent(p.ext, lo, hi), maxSettleExtents)}
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
// covers them already).
func (f *File) madeHoles(h *header, lo, hi int64) {
	if s := f.settle; s != nil && s.h == h {
		f.settle = &holeMap{h: h, ext: normalizeExtents(append(slices.Clone(s.ext), Extent{lo, hi}), maxSettleExtents)}
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

// overlaps reports whether any sector of [lo, hi) is in the map.
func (m *holeMap) overlaps(lo, hi int64) bool {
	for _, e := range m.ext {
		if e.Start < hi && lo < e.End {
			return true
		}
	}
	return false
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
