package sector

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// testKey is a KeySource over a plain slice.
type testKey []byte

func (k testKey) Bytes() []byte { return k }

func fixedKey(b byte) testKey {
	k := make(testKey, keySize)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func newTestCipher(t testing.TB, key testKey, sectorSize int) *Cipher {
	t.Helper()
	c, err := NewCipher(key, sectorSize)
	if err != nil {
		t.Fatalf("NewCipher: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// openBacking opens (creating) a backing file read-write and wraps it.
func openBacking(t testing.TB, path string, sectorSize int) *File {
	t.Helper()
	osf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { osf.Close() })
	f, err := NewFile(osf, sectorSize)
	if err != nil {
		t.Fatalf("NewFile: %v", err)
	}
	return f
}

func tempBacking(t testing.TB, sectorSize int) (*File, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	return openBacking(t, p, sectorSize), p
}

func mustWrite(t testing.TB, f *File, c *Cipher, p []byte, off int64) {
	t.Helper()
	n, err := f.WriteAt(c, p, off)
	if err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
	}
}

// readAll reads the whole plaintext through ReadAt.
func readAll(f *File, c *Cipher) ([]byte, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := f.ReadAt(c, buf, 0)
	if err == io.EOF && int64(n) == size {
		err = nil
	}
	return buf[:n], err
}

func mustReadAll(t testing.TB, f *File, c *Cipher) []byte {
	t.Helper()
	b, err := readAll(f, c)
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	return b
}

func checkContent(t testing.TB, f *File, c *Cipher, want []byte) {
	t.Helper()
	got := mustReadAll(t, f, c)
	if !bytes.Equal(got, want) {
		t.Fatalf("content mismatch: got %d bytes, want %d (first diff at %d)", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// wantAuth asserts err is an *AuthError for index with cause want.
func wantAuth(t testing.TB, err error, index int64, want error) {
	t.Helper()
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAuth) {
		t.Fatalf("want *AuthError (ErrAuth), got %v", err)
	}
	if ae.Index != index {
		t.Fatalf("AuthError index = %d, want %d (%v)", ae.Index, index, err)
	}
	if !errors.Is(err, want) {
		t.Fatalf("AuthError cause = %v, want %v", ae.Err, want)
	}
	if ae.Path == "" {
		t.Fatalf("AuthError without path: %v", err)
	}
}
