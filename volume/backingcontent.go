package volume

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/sector"
)

// nextDataScan bounds how many stored bytes one NextData call reads to
// find stored holes (all-zero sectors) inside allocated data: a caller
// reads the extent again, so a longer scan would only delay its first
// byte. An extent is then returned in pieces of about this size.
const nextDataScan = 4 << 20

// backingContent is the plaintext of one sector file, authenticated as it
// is read. ReadAt and NextData may run concurrently.
type backingContent struct {
	f    *sector.File
	c    *sector.Cipher
	name string // the entry, for messages
}

var _ Content = (*backingContent)(nil)

// ReadAt reads plaintext; a sector that fails authentication is an error
// naming the file and the sector.
func (c *backingContent) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.f.ReadAt(c.c, p, off)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("read %s: %w", c.name, err)
	}
	return n, err
}

// NextData finds the next data extent from off: the backing file system's
// holes (SEEK_DATA, SEEK_HOLE) mapped to whole sectors, and stored sectors
// that are all zero, which the format defines as holes too.
func (c *backingContent) NextData(off int64) (start, end int64, err error) {
	ss := int64(c.c.SectorSize())
	stored := ss + sector.Overhead
	backing, err := c.backingSize()
	if err != nil {
		return 0, 0, err
	}
	size := sector.PlainSize(backing, int(ss))
	if off < 0 {
		off = 0
	}
	if off >= size {
		return 0, 0, io.EOF
	}
	fd := int(c.f.OS().Fd())
	for i := off / ss; i*ss < size; {
		d, err := unix.Seek(fd, sector.HeaderSize+i*stored, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return 0, 0, io.EOF
		}
		if err != nil {
			// No SEEK_DATA here: the rest is one extent.
			return off, size, nil
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			h = backing
		}
		first := max(i, (d-sector.HeaderSize)/stored)
		last := (h - sector.HeaderSize + stored - 1) / stored // one past the sector holding byte h-1
		s0, s1, err := c.scanStored(first, last, backing, stored)
		if err != nil {
			return 0, 0, err
		}
		if s0 < 0 {
			i = last
			continue
		}
		return max(off, s0*ss), min(size, s1*ss), nil
	}
	return 0, 0, io.EOF
}

// scanStored looks at stored sectors [first, last) and returns the first
// one that is not all zero, s0 (-1 when every one is), and s1, the first
// all-zero sector after it (or where the scan stopped).
func (c *backingContent) scanStored(first, last, backing, stored int64) (s0, s1 int64, err error) {
	s0 = -1
	buf := make([]byte, min(nextDataScan, (last-first)*stored))
	per := int64(len(buf)) / stored
	for i := first; i < last; {
		n := min(per, last-i)
		at := sector.HeaderSize + i*stored
		b := buf[:min(n*stored, backing-at)]
		if _, err := c.f.OS().ReadAt(b, at); err != nil && err != io.EOF {
			return 0, 0, fmt.Errorf("read %s: %w", c.name, err)
		}
		for k := int64(0); k < n; k++ {
			sec := b[min(k*stored, int64(len(b))):min((k+1)*stored, int64(len(b)))]
			zero := isZero(sec)
			switch {
			case s0 < 0 && !zero:
				s0 = i + k
			case s0 >= 0 && zero:
				return s0, i + k, nil
			}
		}
		i += n
		if s0 >= 0 && (i-s0)*stored >= nextDataScan {
			return s0, i, nil
		}
	}
	return s0, last, nil
}

func (c *backingContent) backingSize() (int64, error) {
	fi, err := c.f.OS().Stat()
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", c.name, err)
	}
	return fi.Size(), nil
}

func (c *backingContent) Close() error { return c.f.OS().Close() }
