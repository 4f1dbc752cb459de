package sector

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"golang.org/x/sys/unix"
)

// checkBatch is how many stored bytes CheckSectors reads at once: large
// enough that the system calls cost little, small enough that the batch
// is still in the core's own (L2) cache when its tags are checked; 1 MiB
// batches checked 15-25 % slower than 256 KiB. (Mapping the file instead
// of reading it saves the copy, but setting up the mapping of 4 KiB pages
// and the TLB misses cost more than the copy does.)
const checkBatch = 256 << 10

// StoredSectors returns how many stored sectors the backing file holds,
// a damaged (too short) last one included. A backing file with a partial
// header fails with ErrHeader.
func (f *File) StoredSectors() (int64, error) {
	b, err := f.backingSize()
	if err != nil {
		return 0, err
	}
	if b > 0 && b < HeaderSize {
		return 0, fmt.Errorf("%w: %s: backing file of %d bytes is shorter than the header", ErrHeader, f.path, b)
	}
	if b == 0 {
		return 0, nil
	}
	return (b - HeaderSize + f.stored - 1) / f.stored, nil
}

// CheckSectors authenticates the stored sectors [from, to), without
// decrypting them (tagcheck.go), and calls bad for each one that fails, in order, with an *AuthError naming it (holes
// pass). It returns how many backing bytes it read; its error is what
// stopped the check (I/O, a damaged header: ErrHeader, a closed Cipher).
// Several calls may check different ranges of one File at once.
func (f *File) CheckSectors(c *Cipher, from, to int64, bad func(*AuthError)) (int64, error) {
	if err := f.checkCipher(c); err != nil {
		return 0, err
	}
	b, err := f.backingSize()
	if err != nil {
		return 0, err
	}
	if b == 0 || from >= to {
		return 0, nil
	}
	h, fk, err := f.headerKey(c, b, false)
	if err != nil {
		return 0, err
	}
	size, _ := f.plainSize(b)
	// The last sector of a version 2 file must be sealed: a hole skipped
	// below would hide a cut or zeroed end.
	last := int64(-1)
	if size > 0 && h.ver() >= Version2 {
		last = (size - 1) / int64(f.sectorSize)
	}
	stored := (b - HeaderSize + f.stored - 1) / f.stored
	skipped := func(lo, hi int64) error {
		if lo <= last && last < hi && last < to && last >= from {
			bad(&AuthError{Path: f.path, Index: last, Err: ErrNotFinal})
		}
		// Version3: the skipped sectors are holes, which the hole map
		// must allow.
		return f.checkHoles(c, fk, h, max(lo, from), min(hi, to, stored, last), bad)
	}
	tc, err := f.tagChecker(c, fk, h)
	if err != nil {
		return 0, err
	}
	defer tc.close()
	buf := checkBufs.Get().(*checkBuf)
	defer checkBufs.Put(buf)
	per := max(1, int64(checkBatch)/f.stored)
	var read int64
	for i := from; i < to; {
		if f.storedOffset(i) >= b {
			break
		}
		// Skip what the backing file system holds as a hole: its sectors
		// read as zeros, which is a valid hole.
		if next, done := f.skipHole(i, b); done {
			if err := skipped(i, math.MaxInt64); err != nil {
				return read, err
			}
			break
		} else if next > i {
			if err := skipped(i, next); err != nil {
				return read, err
			}
			i = next
			continue
		}
		n := min(per, to-i)
		start := f.storedOffset(i)
		// The stored sectors go in after a headroom (see checkSectors).
		chunk := buf.stored[checkHeadroom : checkHeadroom+min(n*f.stored, b-start)]
		m, err := f.f.ReadAt(chunk, start)
		if err != nil && !(errors.Is(err, io.EOF) && m == len(chunk)) {
			return read, fmt.Errorf("sector: check %s sectors %d-%d: %w", f.path, i, i+n-1, err)
		}
		read += int64(len(chunk))
		if err := f.checkSectors(c, tc, fk, h, buf, len(chunk), i, size, bad); err != nil {
			return read, err
		}
		i += n
	}
	return read, nil
}

// tagChecker returns the tag checker of the file whose header is h.
func (f *File) tagChecker(c *Cipher, fk *fileKey, h *header) (*tagChecker, error) {
	if err := c.rlock(); err != nil {
		return nil, err
	}
	defer c.runlock()
	if fk.aead == nil {
		return nil, ErrClosed
	}
	return c.newTagChecker(fk.aead, &h.id)
}

// checkHeadroom is the room before the first stored sector in a check
// buffer. The tag check (tagcheck.go) needs a sector's additional data,
// padded to aadSlot bytes, right before its ciphertext. Before the
// ciphertext of a stored sector lie its nonce and the previous sector's
// tag, exactly aadSlot bytes, which are no longer needed once the nonce is
// saved and the previous sector checked; the first sector of a batch gets
// the headroom in place of a previous tag.
const checkHeadroom = aadSlot - NonceSize

// checkSectors authenticates the stored sectors of n bytes that follow
// checkHeadroom in buf.stored, the first of which is sector i, in order
// (each overwrites the tag of the one before). size is the file's
// plaintext size (for the final flag).
func (f *File) checkSectors(c *Cipher, tc *tagChecker, fk *fileKey, h *header, buf *checkBuf, n int, i, size int64, bad func(*AuthError)) error {
	if err := c.rlock(); err != nil {
		return err
	}
	defer c.runlock()
	if fk.aead == nil {
		return ErrClosed
	}
	for k := int64(0); int64(n) > k*f.stored; k++ {
		at := k * f.stored // the slot: headroom or previous tag, then nonce
		st := min(int64(n)-at, f.stored)
		slot := buf.stored[at : checkHeadroom+at+st]
		// Read before checkSector writes the additional data over the
		// nonce; a zero nonce is a hole, which the hole map must allow.
		hole := isZero(slot[checkHeadroom:min(len(slot), checkHeadroom+NonceSize)])
		final := h.isFinal(i+k, size, f.sectorSize)
		if err := checkSector(tc, h, buf, slot, i+k, final); err != nil {
			bad(&AuthError{Path: f.path, Index: i + k, Err: err})
		} else if hole {
			if err := f.checkHole(fk.aead, h, i+k, slot[checkHeadroom:]); err != nil {
				bad(err.(*AuthError))
			}
		}
	}
	return nil
}

// checkSector is openSector's verdict on one stored sector, without
// decrypting it. slot is checkHeadroom bytes that may be overwritten, then
// the stored sector (nonce, ciphertext, tag).
func checkSector(tc *tagChecker, h *header, buf *checkBuf, slot []byte, index int64, final bool) error {
	st := slot[checkHeadroom:]
	if len(st) <= Overhead {
		return fmt.Errorf("%w: %d bytes, need more than %d", ErrTruncated, len(st), Overhead)
	}
	body := st[NonceSize:]
	if isZero(st[:NonceSize]) {
		switch {
		case final:
			return ErrNotFinal
		case isZero(body):
			return nil
		default:
			return ErrBadHole
		}
	}
	nonce := buf.nonce[:]
	copy(nonce, st[:NonceSize])
	ad := h.aad(slot[:aadSlot], index, final)
	clear(slot[len(ad):aadSlot])
	ct := len(slot) - TagSize
	if !tc.check(nonce, slot[:ct], len(ad), slot[ct:]) {
		return ErrTagMismatch
	}
	return nil
}

// skipHole returns the first sector at or after i that holds data (i when
// sector i does), and done when only a hole follows. Without SEEK_DATA
// nothing is skipped.
func (f *File) skipHole(i, backing int64) (next int64, done bool) {
	off := f.storedOffset(i)
	var d int64
	var serr error
	if err := f.rc.Control(func(fd uintptr) { d, serr = unix.Seek(int(fd), off, unix.SEEK_DATA) }); err != nil {
		return i, false
	}
	switch {
	case errors.Is(serr, unix.ENXIO):
		return 0, true
	case serr != nil, d <= off:
		return i, false
	}
	if d >= backing {
		return 0, true
	}
	return (d - HeaderSize) / f.stored, false
}

// checkBuf is one CheckSectors call's scratch space.
type checkBuf struct {
	stored []byte
	nonce  [NonceSize]byte
}

var checkBufs = sync.Pool{New: func() any {
	return &checkBuf{stored: make([]byte, checkHeadroom+checkBatch+MaxSectorSize+Overhead)}
}}

// checkHoles reports each sector of [lo, hi) of a Version3 file that the
// hole map does not allow to be a hole; the caller knows they are holes.
func (f *File) checkHoles(c *Cipher, fk *fileKey, h *header, lo, hi int64, bad func(*AuthError)) error {
	if h.ver() < Version3 || lo >= hi {
		return nil
	}
	if err := c.rlock(); err != nil {
		return err
	}
	var m *holeMap
	var err error
	if fk.aead == nil {
		err = ErrClosed
	} else {
		m, err = f.holeMap(fk.aead, h)
	}
	c.runlock()
	if errors.Is(err, ErrClosed) {
		return err
	}
	for i := lo; i < hi; i++ {
		switch {
		case err != nil:
			bad(&AuthError{Path: f.path, Index: i, Err: err})
		case !m.contains(i):
			bad(&AuthError{Path: f.path, Index: i, Err: ErrZeroed})
		default:
			// Jump over the extent that holds i.
			for _, e := range m.ext {
				if e.Start <= i && i < e.End {
					i = e.End - 1
					break
				}
			}
		}
	}
	return nil
}
