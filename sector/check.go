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
// is still in the CPU cache when it is opened. (Mapping the file instead
// of reading it saves the copy, but setting up the mapping of 4 KiB pages
// costs more than the copy does.)
const checkBatch = 1 << 20

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

// CheckSectors authenticates the stored sectors [from, to) and calls bad
// for each one that fails, in order, with an *AuthError naming it (holes
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
	buf := checkBufs.Get().(*checkBuf)
	defer checkBufs.Put(buf)
	per := max(1, int64(len(buf.stored))/f.stored)
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
		chunk := buf.stored[:min(n*f.stored, b-start)]
		m, err := f.f.ReadAt(chunk, start)
		if err != nil && !(errors.Is(err, io.EOF) && m == len(chunk)) {
			return read, fmt.Errorf("sector: check %s sectors %d-%d: %w", f.path, i, i+n-1, err)
		}
		read += int64(len(chunk))
		if err := f.openChunk(c, fk, h, buf, chunk, i, size, bad); err != nil {
			return read, err
		}
		i += n
	}
	return read, nil
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

// openChunk opens the stored sectors in chunk, the first of which is
// sector i.
// size is the file's plaintext size (for the final flag).
func (f *File) openChunk(c *Cipher, fk *fileKey, h *header, buf *checkBuf, chunk []byte, i, size int64, bad func(*AuthError)) error {
	if err := c.rlock(); err != nil {
		return err
	}
	defer c.runlock()
	aead := fk.aead
	if aead == nil {
		return ErrClosed
	}
	for k := int64(0); int64(len(chunk)) > k*f.stored; k++ {
		st := chunk[k*f.stored : min(int64(len(chunk)), (k+1)*f.stored)]
		final := h.isFinal(i+k, size, f.sectorSize)
		if err := openSector(aead, buf.plain[:max(0, len(st)-Overhead)], st, h.aad(buf.aad[:], i+k, final), final); err != nil {
			bad(&AuthError{Path: f.path, Index: i + k, Err: err})
		} else if err := f.checkHole(aead, h, i+k, st); err != nil {
			bad(err.(*AuthError))
		}
	}
	clear(buf.plain[:f.sectorSize]) // no plaintext lingers in the pool
	return nil
}

// checkBuf is one CheckSectors call's scratch space.
type checkBuf struct {
	stored []byte
	plain  []byte
	aad    [aadSizeMax]byte
}

var checkBufs = sync.Pool{New: func() any {
	return &checkBuf{stored: make([]byte, checkBatch+MaxSectorSize+Overhead), plain: make([]byte, MaxSectorSize)}
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
