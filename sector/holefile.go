package sector

import (
	"cmp"
	"crypto/cipher"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// The hole map as a File keeps it: loaded from HolesXattr the first time
// an all-zero sector is met (a file without holes never reads it), and
// extended before a write or truncate makes new holes.

// setHolesXattr is unix.Fsetxattr; tests stand in for a backing without
// extended attributes.
var setHolesXattr = unix.Fsetxattr

// maxHolesXattr bounds the attribute read: a sealed map of MaxHoleExtents.
const maxHolesXattr = NonceSize + 3 + 16*MaxHoleExtents + TagSize

// holeErr is nil when sector i of a Version3 file may be a hole, else
// ErrZeroed, or what kept the map from loading (ErrHoleMap, I/O). aead is
// the file's, used under the Cipher's shared lock the caller holds.
func (f *File) holeErr(aead cipher.AEAD, h *header, i int64) error {
	if h.ver() < Version3 {
		return nil
	}
	m, err := f.holeMap(aead, h)
	if err != nil {
		return err
	}
	if !m.contains(i) {
		return ErrZeroed
	}
	return nil
}

// checkHole is holeErr for a stored sector st that opened: only an
// all-zero one (a hole) needs the map. It returns an *AuthError.
func (f *File) checkHole(aead cipher.AEAD, h *header, i int64, st []byte) error {
	if h.ver() < Version3 || len(st) < NonceSize || !isZero(st[:NonceSize]) {
		return nil
	}
	if err := f.holeErr(aead, h, i); err != nil {
		return &AuthError{Path: f.path, Index: i, Err: err}
	}
	return nil
}

// holeMap returns the file's map, reading and opening HolesXattr on first
// use. A file without the attribute, or on a backing without extended
// attributes, has an empty map.
func (f *File) holeMap(aead cipher.AEAD, h *header) (*holeMap, error) {
	if m := f.holes.Load(); m != nil && m.h == h {
		return m, nil
	}
	f.holesMu.Lock()
	defer f.holesMu.Unlock()
	if m := f.holes.Load(); m != nil && m.h == h {
		return m, nil
	}
	var buf [maxHolesXattr + 1]byte
	var n int
	var gerr error
	if err := f.rc.Control(func(fd uintptr) { n, gerr = unix.Fgetxattr(int(fd), HolesXattr, buf[:]) }); err != nil {
		gerr = err
	}
	m := &holeMap{h: h}
	switch {
	case gerr == nil:
		if n > maxHolesXattr {
			return nil, fmt.Errorf("%w: %s: %d bytes", ErrHoleMap, f.path, n)
		}
		ext, err := openHoles(aead, h, buf[:n])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.path, err)
		}
		m.ext = ext
	case errors.Is(gerr, unix.ERANGE):
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrHoleMap, f.path, maxHolesXattr)
	case errors.Is(gerr, unix.ENODATA), errors.Is(gerr, unix.EOPNOTSUPP):
	default:
		return nil, fmt.Errorf("sector: read hole map of %s: %w", f.path, gerr)
	}
	f.holes.Store(m)
	return m, nil
}

// addHoles extends the map of a Version3 file to cover sectors [lo, hi)
// before they become holes. It reports false, with nothing changed, when
// the backing file takes no extended attributes: the caller then writes
// those sectors as sealed zeros instead.
func (f *File) addHoles(c *Cipher, fk *fileKey, h *header, lo, hi int64) (bool, error) {
	if h.ver() < Version3 || lo >= hi {
		return true, nil
	}
	if err := c.rlock(); err != nil {
		return false, err
	}
	aead := fk.aead
	if aead == nil {
		c.runlock()
		return false, ErrClosed
	}
	m, err := f.holeMap(aead, h)
	c.runlock()
	if err != nil {
		return false, err
	}
	if m.covers(lo, hi) {
		f.madeHoles(h, lo, hi)
		return true, nil
	}
	next, fill := fitExtents(normalizeExtents(append(slices.Clone(m.ext), Extent{lo, hi}), math.MaxInt), MaxHoleExtents)
	for _, e := range fill {
		if e.Start < hi && lo < e.End {
			// The new gap is among the smallest holes: the caller
			// writes it as zeros, and the map stays as it is.
			return false, nil
		}
	}
	if err := f.sealHoleExtents(c, fill); err != nil {
		return false, err
	}
	ok, err := f.replaceHoles(c, fk, h, next)
	if ok {
		f.madeHoles(h, lo, hi)
	}
	return ok, err
}

// fitExtents splits ext (normalized) into the extents a map of at most
// limit keeps, and the smallest ones beyond that, which are to be written
// as sealed zeros: a map never covers a sector that holds data.
func fitExtents(ext []Extent, limit int) (keep, fill []Extent) {
	if len(ext) <= limit {
		return ext, nil
	}
	bySize := slices.Clone(ext)
	slices.SortStableFunc(bySize, func(a, b Extent) int { return cmp.Compare(a.End-a.Start, b.End-b.Start) })
	fill = bySize[:len(ext)-limit]
	for _, e := range ext {
		if !slices.Contains(fill, e) {
			keep = append(keep, e)
		}
	}
	slices.SortFunc(fill, func(a, b Extent) int { return cmp.Compare(a.Start, b.Start) })
	return keep, fill
}

// sealHoleExtents writes the holes ext (inner sectors of the file) as
// sealed zero sectors and syncs them, before a map without them is
// written: after a crash the map must still cover every hole on the disk.
func (f *File) sealHoleExtents(c *Cipher, ext []Extent) error {
	if len(ext) == 0 {
		return nil
	}
	S := int64(f.sectorSize)
	for _, e := range ext {
		if err := f.fillZeros(c, e.Start*S, e.End*S); err != nil {
			return err
		}
	}
	return f.datasync()
}

// datasync makes the file's data durable before a smaller hole map is
// written.
func (f *File) datasync() error {
	var serr error
	if err := f.rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		serr = err
	}
	if serr != nil {
		return fmt.Errorf("sector: sync %s before writing its hole map: %w", f.path, serr)
	}
	return nil
}

// fillZeros writes plaintext zeros over [from, to): a gap past the end
// where no hole map can be kept, or holes the map has no room for.
func (f *File) fillZeros(c *Cipher, from, to int64) error {
	zeros := make([]byte, min(to-from, batchBytes))
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(c, zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// Holes returns the sector ranges the file's hole map lets be holes (nil
// for a file of an older version, or without holes).
func (f *File) Holes(c *Cipher) ([]Extent, error) {
	if err := f.checkCipher(c); err != nil {
		return nil, err
	}
	b, err := f.backingSize()
	if err != nil || b == 0 {
		return nil, err
	}
	h, fk, err := f.headerKey(c, b, false)
	if err != nil || h.ver() < Version3 {
		return nil, err
	}
	if err := c.rlock(); err != nil {
		return nil, err
	}
	defer c.runlock()
	if fk.aead == nil {
		return nil, ErrClosed
	}
	m, err := f.holeMap(fk.aead, h)
	if err != nil {
		return nil, err
	}
	return append([]Extent(nil), m.ext...), nil
}

// SetHoles replaces the hole map of a Version3 file by one that covers
// holes (sector ranges), for a writer that made the whole file and knows
// every sector it left unwritten: a copy that filled a presized file out
// of order. Unlike the map WriteAt and Truncate keep, it may shrink, so
// the caller vouches that no other sector is a hole, and calls it before
// anyone else sees the file. Where the backing takes no extended
// attributes the file has no holes (they were written as zeros) and
// nothing changes.
func (f *File) SetHoles(c *Cipher, holes []Extent) error {
	if err := f.checkCipher(c); err != nil {
		return err
	}
	b, err := f.backingSize()
	if err != nil || b == 0 {
		return err
	}
	h, fk, err := f.headerKey(c, b, false)
	if err != nil || h.ver() < Version3 {
		return err
	}
	ext, fill := fitExtents(normalizeExtents(slices.Clone(holes), math.MaxInt), MaxHoleExtents)
	if err := f.sealHoleExtents(c, fill); err != nil {
		return err
	}
	if _, err := f.replaceHoles(c, fk, h, ext); err != nil {
		return err
	}
	f.forgetSettle()
	return nil
}

// replaceHoles makes ext (normalized) the whole hole map of the file, on
// the backing file (no attribute for an empty map) and in f. Where the
// backing takes no extended attributes nothing changes. Writers run alone.
func (f *File) replaceHoles(c *Cipher, fk *fileKey, h *header, ext []Extent) (stored bool, err error) {
	if err := c.rlock(); err != nil {
		return false, err
	}
	if fk.aead == nil {
		c.runlock()
		return false, ErrClosed
	}
	sealed := sealHoles(fk.aead, c.nonces, h, ext)
	c.runlock()
	f.holesMu.Lock()
	defer f.holesMu.Unlock()
	var serr error
	if err := f.rc.Control(func(fd uintptr) {
		if len(ext) == 0 {
			serr = unix.Fremovexattr(int(fd), HolesXattr)
			if errors.Is(serr, unix.ENODATA) {
				serr = nil
			}
			return
		}
		serr = setHolesXattr(int(fd), HolesXattr, sealed, 0)
	}); err != nil {
		serr = err
	}
	switch {
	case serr == nil:
		f.holes.Store(&holeMap{h: h, ext: ext})
		return true, nil
	case errors.Is(serr, unix.EOPNOTSUPP):
		return false, nil
	}
	return false, fmt.Errorf("sector: write hole map of %s: %w", f.path, &os.PathError{Op: "fsetxattr", Path: f.path, Err: serr})
}
