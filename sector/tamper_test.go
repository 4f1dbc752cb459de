package sector

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

const tamperSS = 4096

// tamperFixture writes 3.5 sectors of known data and returns the file, its
// backing path, cipher and plaintext.
func tamperFixture(t *testing.T) (*File, string, *Cipher, []byte) {
	t.Helper()
	c := newTestCipher(t, fixedKey(1), tamperSS)
	f, path := tempBacking(t, tamperSS)
	data := make([]byte, 3*tamperSS+tamperSS/2)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	mustWrite(t, f, c, data, 0)
	return f, path, c, data
}

func patchBacking(t *testing.T, path string, fn func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func storedOff(i int) int { return HeaderSize + i*(tamperSS+Overhead) }

// reopen wraps the backing path in a fresh File (no cached header).
func reopen(t *testing.T, path string) *File {
	t.Helper()
	return openBacking(t, path, tamperSS)
}

// readFails reads the whole file and asserts the error names sector index
// with cause want, that no bytes from the bad sector or later are returned,
// and that what was returned is correct.
func readFails(t *testing.T, f *File, c *Cipher, data []byte, index int64, want error) {
	t.Helper()
	p := make([]byte, len(data))
	n, err := f.ReadAt(c, p, 0)
	wantAuth(t, err, index, want)
	if int64(n) != index*tamperSS {
		t.Fatalf("n = %d, want %d (only sectors before the bad one)", n, index*tamperSS)
	}
	if !bytes.Equal(p[:n], data[:n]) {
		t.Fatalf("authenticated prefix differs")
	}
	if !isZero(p[n:]) {
		t.Fatalf("bytes after the failing sector were filled in")
	}
	// Reading only the bad sector fails the same way and returns nothing.
	q := make([]byte, 10)
	n, err = f.ReadAt(c, q, index*tamperSS+5)
	wantAuth(t, err, index, want)
	if n != 0 || !isZero(q) {
		t.Fatalf("bad sector returned %d bytes", n)
	}
}

func TestTamper(t *testing.T) {
	flip := func(at func(b []byte) int) func(b []byte) []byte {
		return func(b []byte) []byte { b[at(b)] ^= 0x01; return b }
	}
	cases := []struct {
		name  string
		patch func(b []byte) []byte
		index int64
		want  error
	}{
		{"nonce byte", flip(func([]byte) int { return storedOff(1) + 3 }), 1, ErrTagMismatch},
		{"ciphertext byte", flip(func([]byte) int { return storedOff(2) + NonceSize + 100 }), 2, ErrTagMismatch},
		{"tag byte", flip(func([]byte) int { return storedOff(1) + NonceSize + tamperSS + 15 }), 1, ErrTagMismatch},
		{"last partial sector tag", flip(func(b []byte) int { return len(b) - 1 }), 3, ErrTagMismatch},
		{"header file ID", flip(func([]byte) int { return 2 + 7 }), 0, ErrTagMismatch},
		{"swapped sectors", func(b []byte) []byte {
			s0 := append([]byte(nil), b[storedOff(0):storedOff(1)]...)
			copy(b[storedOff(0):], b[storedOff(1):storedOff(2)])
			copy(b[storedOff(1):], s0)
			return b
		}, 0, ErrTagMismatch},
		{"truncated last sector by one byte", func(b []byte) []byte { return b[:len(b)-1] }, 3, ErrTagMismatch},
		{"zeroed nonce", func(b []byte) []byte {
			clear(b[storedOff(2) : storedOff(2)+NonceSize])
			return b
		}, 2, ErrBadHole},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, path, c, data := tamperFixture(t)
			patchBacking(t, path, tc.patch)
			f := reopen(t, path)
			if tc.name == "truncated last sector by one byte" {
				data = data[:len(data)-1]
			}
			readFails(t, f, c, data, tc.index, tc.want)
			// A partial write into the damaged sector must fail too, not re-seal garbage.
			if _, err := f.WriteAt(c, []byte("x"), tc.index*tamperSS+1); !errors.Is(err, ErrAuth) {
				t.Fatalf("partial write into tampered sector: %v, want ErrAuth", err)
			}
		})
	}
}

func TestTamperSectorFromOtherFile(t *testing.T) {
	f, path, c, data := tamperFixture(t)
	other, otherPath := tempBacking(t, tamperSS)
	mustWrite(t, other, c, data, 0)
	ob, err := os.ReadFile(otherPath)
	if err != nil {
		t.Fatal(err)
	}
	patchBacking(t, path, func(b []byte) []byte {
		copy(b[storedOff(1):storedOff(2)], ob[storedOff(1):storedOff(2)])
		return b
	})
	_ = f
	readFails(t, reopen(t, path), c, data, 1, ErrTagMismatch)
}

func TestWrongKey(t *testing.T) {
	_, path, _, data := tamperFixture(t)
	wrong := newTestCipher(t, fixedKey(2), tamperSS)
	readFails(t, reopen(t, path), wrong, data, 0, ErrTagMismatch)
}

func TestTruncatedTail(t *testing.T) {
	_, path, c, data := tamperFixture(t)
	// Leave only 20 bytes of the last stored sector: not even nonce + tag.
	patchBacking(t, path, func(b []byte) []byte { return b[:storedOff(3)+20] })
	f := reopen(t, path)
	if _, err := f.Size(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Size: %v, want ErrTruncated", err)
	} else {
		wantAuth(t, err, 3, ErrTruncated)
	}
	p := make([]byte, len(data))
	_, err := f.ReadAt(c, p, 0)
	wantAuth(t, err, 3, ErrTruncated)
	// Sectors before the damage are still readable.
	n, err := f.ReadAt(c, p[:tamperSS], tamperSS)
	if err != nil || !bytes.Equal(p[:n], data[tamperSS:2*tamperSS]) {
		t.Fatalf("reading intact sector: %d, %v", n, err)
	}
	if _, err := f.WriteAt(c, []byte("x"), 0); !errors.Is(err, ErrTruncated) {
		t.Fatalf("write with damaged tail: %v, want ErrTruncated", err)
	}
	// Cutting the damaged tail off repairs the file.
	if err := f.Truncate(c, 3*tamperSS); err != nil {
		t.Fatalf("truncate off damaged tail: %v", err)
	}
	checkContent(t, f, c, data[:3*tamperSS])
}

func TestHeaderErrors(t *testing.T) {
	cases := []struct {
		name  string
		patch func(b []byte) []byte
	}{
		{"version", func(b []byte) []byte { b[1] ^= 0x02; return b }},
		{"version high byte", func(b []byte) []byte { b[0] = 0xff; return b }},
		{"zero file ID", func(b []byte) []byte { clear(b[2:HeaderSize]); return b }},
		{"short header", func(b []byte) []byte { return b[:10] }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, path, c, _ := tamperFixture(t)
			patchBacking(t, path, tc.patch)
			f := reopen(t, path)
			p := make([]byte, 100)
			_, err := f.ReadAt(c, p, 0)
			if !errors.Is(err, ErrHeader) || errors.Is(err, ErrAuth) {
				t.Fatalf("ReadAt: %v, want ErrHeader", err)
			}
			if !isZero(p) {
				t.Fatal("data returned despite bad header")
			}
			if _, err := f.WriteAt(c, p, 0); !errors.Is(err, ErrHeader) {
				t.Fatalf("WriteAt: %v, want ErrHeader", err)
			}
		})
	}
}

func TestClosedCipher(t *testing.T) {
	f, _, c, data := tamperFixture(t)
	fk := f.ref.Load().fk
	c.Close()
	c.Close() // idempotent
	if fk.aead != nil {
		t.Fatal("Close left a per-file AEAD in place")
	}
	if f.ref.Load() != nil && f.ref.Load().fk.aead != nil {
		t.Fatal("file still caches a live AEAD")
	}
	p := make([]byte, 10)
	if _, err := f.ReadAt(c, p, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadAt: %v", err)
	}
	if _, err := f.WriteAt(c, p, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteAt: %v", err)
	}
	if err := f.Truncate(c, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Truncate: %v", err)
	}
	if _, err := c.SealSector(nil, make([]byte, 16), 0, p); !errors.Is(err, ErrClosed) {
		t.Fatalf("SealSector: %v", err)
	}
	if f.ref.Load() != nil {
		t.Fatal("file kept a reference to the closed cipher's key")
	}
	// A new Cipher over the same key takes over without reopening the file.
	c2 := newTestCipher(t, fixedKey(1), tamperSS)
	checkContent(t, f, c2, data)
	// A Cipher with another sector size is refused.
	c3 := newTestCipher(t, fixedKey(1), 512)
	if _, err := f.ReadAt(c3, p, 0); !errors.Is(err, ErrSectorSize) {
		t.Fatalf("sector size mismatch: %v", err)
	}
}

func TestReadEOF(t *testing.T) {
	f, _, c, data := tamperFixture(t)
	p := make([]byte, 100)
	n, err := f.ReadAt(c, p, int64(len(data))-10)
	if n != 10 || err != io.EOF || !bytes.Equal(p[:10], data[len(data)-10:]) {
		t.Fatalf("short read at end: %d, %v", n, err)
	}
	if n, err := f.ReadAt(c, p, int64(len(data))); n != 0 || err != io.EOF {
		t.Fatalf("read at EOF: %d, %v", n, err)
	}
	if _, err := f.ReadAt(c, p, -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	if _, err := f.WriteAt(c, p, MaxPlainSize(tamperSS)-5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("write beyond max: %v", err)
	}
	if err := f.Truncate(c, MaxPlainSize(tamperSS)+1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("truncate beyond max: %v", err)
	}
}
