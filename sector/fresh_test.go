package sector

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// TestFreshFile: a File told that its backing file holds only the header
// just written reads and writes exactly as one that looks for itself, and
// a header that does not parse is refused without changing anything.
func TestFreshFile(t *testing.T) {
	c := newV3Cipher(t, fixedKey(5))
	ss := c.SectorSize()
	data := bytes.Repeat([]byte("fresh file "), 1000) // several sectors
	var stored [][]byte
	for _, fresh := range []bool{false, true} {
		f, path := tempBacking(t, ss)
		f.SoleWriter()
		hdr, err := NewFileHeader(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, hdr, 0o600); err != nil {
			t.Fatal(err)
		}
		if fresh {
			if err := f.Fresh(hdr); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := f.Size(); err != nil || got != 0 {
			t.Fatalf("fresh=%v: size before the first write = %d, %v", fresh, got, err)
		}
		id, err := f.FileID()
		if err != nil || !bytes.Equal(id, hdr[2:]) {
			t.Fatalf("fresh=%v: file ID %x, %v; want %x", fresh, id, err, hdr[2:])
		}
		mustWrite(t, f, c, data, 0)
		// A hole in the middle: the hole map must start empty and grow.
		if err := f.Truncate(c, int64(len(data)+3*ss)); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, f, c, data[:10], int64(len(data)+3*ss))
		want := append(append(append([]byte{}, data...), make([]byte, 3*ss)...), data[:10]...)
		checkContent(t, f, c, want)
		// What another File reads back from the disk, under the same ID.
		other := openBacking(t, path, ss)
		checkContent(t, other, c, want)
		if id, err := other.FileID(); err != nil || !bytes.Equal(id, hdr[2:]) {
			t.Fatalf("fresh=%v: file ID after the writes %x, %v; want %x", fresh, id, err, hdr[2:])
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, b)
	}
	if len(stored[0]) != len(stored[1]) {
		t.Fatalf("backing sizes differ: %d without Fresh, %d with", len(stored[0]), len(stored[1]))
	}

	f, _ := tempBacking(t, ss)
	if err := f.Fresh([]byte{0, 3}); !errors.Is(err, ErrHeader) {
		t.Fatalf("Fresh of a short header: %v, want ErrHeader", err)
	}
	if f.hdr.Load() != nil || f.holes.Load() != nil {
		t.Fatal("a refused header was kept")
	}
}
