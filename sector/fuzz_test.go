package sector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

const fuzzSS = 512

// validBacking builds a backing file with n plaintext bytes (byte j = j mod
// 256) under fixedKey(7), for seeds.
func validBacking(tb testing.TB, n int64) []byte {
	tb.Helper()
	c, err := NewCipher(fixedKey(7), fuzzSS)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	path := filepath.Join(tb.TempDir(), "seed")
	osf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer osf.Close()
	f, err := NewFile(osf, fuzzSS)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := f.WriteAt(c, mod256(n), 0); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// memFile returns an empty read-write in-memory file (memfd).
func memFile(tb testing.TB) *os.File {
	tb.Helper()
	fd, err := unix.MemfdCreate("sector-fuzz", unix.MFD_CLOEXEC)
	if err != nil {
		tb.Fatalf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:sector-fuzz")
	tb.Cleanup(func() { f.Close() })
	return f
}

// knownError reports whether err is one of the errors a damaged backing
// file may produce.
func knownError(err error) bool {
	return err == nil || err == io.EOF || errors.Is(err, ErrAuth) || errors.Is(err, ErrHeader)
}

// FuzzOpen feeds arbitrary backing bytes to a File: it must never panic,
// only report known errors, never return bytes from a sector that does not
// authenticate, and stay writable after the damage is truncated away.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{0, 1}, uint16(3))
	f.Add(validBacking(f, 1), uint16(0))
	f.Add(validBacking(f, 700), uint16(600))
	f.Add(validBacking(f, 1024), uint16(100))
	c, err := NewCipher(fixedKey(7), fuzzSS)
	if err != nil {
		f.Fatal(err)
	}
	// An in-memory file keeps executions fast; the sector code only needs
	// pread, pwrite, ftruncate and fstat.
	osf := memFile(f)
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		if err := osf.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if _, err := osf.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		file, err := NewFile(osf, fuzzSS)
		if err != nil {
			t.Fatal(err)
		}
		size, serr := file.Size()
		if !knownError(serr) {
			t.Fatalf("Size: %v", serr)
		}
		if serr == nil && size != PlainSize(int64(len(data)), fuzzSS) {
			t.Fatalf("Size %d != PlainSize %d", size, PlainSize(int64(len(data)), fuzzSS))
		}
		p := make([]byte, PlainSize(int64(len(data)), fuzzSS)+10)
		n, err := file.ReadAt(c, p, 0)
		if !knownError(err) || n > len(p) || n < 0 {
			t.Fatalf("ReadAt: %d, %v", n, err)
		}
		if err != nil && err != io.EOF && !isZero(p[n:]) {
			t.Fatalf("ReadAt filled bytes past the failure point")
		}
		// Seeds are mod-256 files: any authenticated non-hole byte must match
		// what was sealed (the fuzzer cannot forge tags).
		for i := 0; i < n; i++ {
			if p[i] != 0 && p[i] != byte(i) {
				t.Fatalf("byte %d = %d: unauthenticated data returned", i, p[i])
			}
		}
		// A partial write either fails with a known error or reads back.
		off := int64(cut) % (size + 600)
		if _, err := file.WriteAt(c, []byte("fuzz"), off); err != nil {
			if !knownError(err) {
				t.Fatalf("WriteAt: %v", err)
			}
		} else {
			q := make([]byte, 4)
			if _, err := file.ReadAt(c, q, off); err != nil || string(q) != "fuzz" {
				t.Fatalf("read back after successful write: %q, %v", q, err)
			}
		}
		// Truncating to 0 always repairs; then the file works normally.
		if err := file.Truncate(c, 0); err != nil {
			t.Fatalf("Truncate(0): %v", err)
		}
		if _, err := file.WriteAt(c, []byte("ok"), 3); err != nil {
			t.Fatalf("write after repair: %v", err)
		}
		q := make([]byte, 5)
		if _, err := file.ReadAt(c, q, 0); err != nil || !bytes.Equal(q, []byte("\x00\x00\x00ok")) {
			t.Fatalf("read after repair: %q, %v", q, err)
		}
	})
}

// FuzzFileOps interprets the input as a sequence of operations (5 bytes
// each: opcode, 2-byte offset, 2-byte length) on a 512-byte-sector file and
// checks every result against an in-memory model.
func FuzzFileOps(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 10})
	f.Add([]byte{0, 1, 0xfe, 0x02, 0x05, 1, 0, 0, 0x10, 0, 2, 0, 0x07, 0, 0})
	f.Add([]byte{2, 0x40, 0, 0, 0, 0, 0x3f, 0xff, 0, 3, 1, 0x3f, 0xf0, 0, 0x40, 3, 0, 0, 0, 0, 2, 0, 0x01, 0, 0})
	key := fixedKey(9)
	f.Fuzz(func(t *testing.T, ops []byte) {
		const limit = 40 * fuzzSS
		c, err := NewCipher(key, fuzzSS)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { c.Close() }()
		mem := memFile(t)
		// open wraps a new descriptor of the same in-memory file, like
		// reopening a path.
		open := func() *File {
			fd, err := unix.Dup(int(mem.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			osf := os.NewFile(uintptr(fd), mem.Name())
			t.Cleanup(func() { osf.Close() })
			file, err := NewFile(osf, fuzzSS)
			if err != nil {
				t.Fatal(err)
			}
			return file
		}
		file := open()
		var model []byte
		for k := 0; k+5 <= len(ops) && k < 5*200; k += 5 {
			op := ops[k] % 5
			off := int64(binary.BigEndian.Uint16(ops[k+1:])) % limit
			n := int64(binary.BigEndian.Uint16(ops[k+3:])) % (3 * fuzzSS)
			switch op {
			case 0: // write
				n = min(n+1, limit-off)
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(int(off)+i) ^ ops[k]
				}
				if _, err := file.WriteAt(c, p, off); err != nil {
					t.Fatalf("WriteAt(%d at %d): %v", n, off, err)
				}
				if end := off + n; end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
				copy(model[off:], p)
			case 1: // read
				p := make([]byte, n)
				got, err := file.ReadAt(c, p, off)
				var want []byte
				if off < int64(len(model)) {
					want = model[off:min(int64(len(model)), off+n)]
				}
				if got != len(want) || !bytes.Equal(p[:got], want) {
					t.Fatalf("ReadAt(%d at %d) = %d, %v; model has %d", n, off, got, err, len(want))
				}
				if err != nil && !(err == io.EOF && int64(got) < n) {
					t.Fatalf("ReadAt(%d at %d): %v", n, off, err)
				}
			case 2: // truncate
				if err := file.Truncate(c, off); err != nil {
					t.Fatalf("Truncate(%d): %v", off, err)
				}
				if off <= int64(len(model)) {
					model = model[:off]
				} else {
					model = append(model, make([]byte, off-int64(len(model)))...)
				}
			case 3: // reopen
				file = open()
			case 4: // new cipher, old one closed
				nc, err := NewCipher(key, fuzzSS)
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				c = nc
			}
			if size, err := file.Size(); err != nil || size != int64(len(model)) {
				t.Fatalf("after op %d: Size = %d, %v; model %d", op, size, err, len(model))
			}
		}
		got, err := readAll(file, c)
		if err != nil || !bytes.Equal(got, model) {
			t.Fatalf("final content differs (%v)", err)
		}
	})
}

// FuzzDecodeHoles feeds arbitrary plaintexts to the hole map decoder: it
// must never panic, and whatever it accepts is a normalized map that
// encodes back to the same bytes and survives a seal and open.
func FuzzDecodeHoles(f *testing.F) {
	f.Add(encodeHoles(nil))
	f.Add(encodeHoles([]Extent{{1, 10}, {11, 41}}))
	f.Add(encodeHoles([]Extent{{0, 1 << 40}}))
	f.Add([]byte{holeMapFormat, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 5})
	f.Add([]byte{2, 0, 0})
	c, err := NewCipher(fixedKey(9), DefaultSectorSize)
	if err != nil {
		f.Fatal(err)
	}
	c.UseVersion3()
	h := &header{version: Version3, id: [FileIDSize]byte{1, 2, 3}}
	fk, err := c.fileKeyFor(&h.id)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ext, err := decodeHoles(b)
		if err != nil {
			if !errors.Is(err, ErrHoleMap) {
				t.Fatalf("error %v does not match ErrHoleMap", err)
			}
			// The same bytes sealed must fail the same way when opened.
			if _, oerr := openHoles(fk.aead, h, sealRaw(fk, c, h, b)); !errors.Is(oerr, ErrHoleMap) {
				t.Fatalf("sealed malformed map opened: %v", oerr)
			}
			return
		}
		if len(ext) > MaxHoleExtents {
			t.Fatalf("%d extents accepted", len(ext))
		}
		for k, e := range ext {
			if e.Start >= e.End || (k > 0 && ext[k-1].End >= e.Start) {
				t.Fatalf("extent %d %v not normalized in %v", k, e, ext)
			}
		}
		if !bytes.Equal(encodeHoles(ext), b) {
			t.Fatalf("re-encoding differs")
		}
		got, err := openHoles(fk.aead, h, sealHoles(fk.aead, c.nonces, h, ext))
		if err != nil || !slices.Equal(got, ext) {
			t.Fatalf("seal and open: %v, %v", got, err)
		}
	})
}

// sealRaw seals arbitrary bytes as a hole map plaintext.
func sealRaw(fk *fileKey, c *Cipher, h *header, pt []byte) []byte {
	out := make([]byte, NonceSize, NonceSize+len(pt)+TagSize)
	c.nonces.next(out)
	return fk.aead.Seal(out, out[:NonceSize], pt, h.holesAAD())
}
