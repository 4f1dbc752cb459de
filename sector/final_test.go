package sector

import (
	"os"
	"testing"
)

// Version 2 seals a file's last sector as final: a file cut at a sector
// boundary, or whose last sector is replaced by zeros, fails; the same cut
// in version 1 goes unnoticed.
func TestFinalSectorDetectsCut(t *testing.T) {
	const ss = 512
	for _, v2 := range []bool{false, true} {
		c := newTestCipher(t, fixedKey(3), ss)
		if v2 {
			c.UseVersion2()
		}
		f, path := tempBacking(t, ss)
		data := make([]byte, 5*ss+100)
		for i := range data {
			data[i] = byte(i*7 + 1)
		}
		mustWrite(t, f, c, data, 0)

		// Cut after sector 2 (a sector boundary).
		if err := os.Truncate(path, BackingSize(3*ss, ss)); err != nil {
			t.Fatal(err)
		}
		g := openBacking(t, path, ss)
		_, err := readAll(g, c)
		if !v2 {
			if err != nil {
				t.Fatalf("version 1: %v", err)
			}
			continue
		}
		wantAuth(t, err, 2, ErrTagMismatch)
		var bad []int64
		if _, err := g.CheckSectors(c, 0, 100, func(e *AuthError) { bad = append(bad, e.Index) }); err != nil || len(bad) != 1 || bad[0] != 2 {
			t.Fatalf("check of the cut file: %v, bad %v", err, bad)
		}

		// Zeroing the last sector (a hole) is caught too.
		h, path2 := tempBacking(t, ss)
		mustWrite(t, h, c, data[:3*ss], 0)
		raw, err := os.ReadFile(path2)
		if err != nil {
			t.Fatal(err)
		}
		clear(raw[BackingSize(2*ss, ss):])
		if err := os.WriteFile(path2, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = readAll(openBacking(t, path2, ss), c)
		wantAuth(t, err, 2, ErrNotFinal)
	}
}

// A version 2 file extended by truncate ends in a sealed sector, and cutting
// it back to a boundary makes the new last sector final: both read back.
func TestFinalSectorTruncate(t *testing.T) {
	const ss = 512
	c := newTestCipher(t, fixedKey(4), ss)
	c.UseVersion2()
	f, _ := tempBacking(t, ss)
	mustWrite(t, f, c, []byte("abc"), 0)
	if err := f.Truncate(c, 10*ss); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 10*ss)
	copy(want, "abc")
	checkContent(t, f, c, want)
	if err := f.Truncate(c, 4*ss); err != nil {
		t.Fatal(err)
	}
	checkContent(t, f, c, want[:4*ss])
	if err := f.Truncate(c, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Size(); err != nil || n != 0 {
		t.Fatalf("size %d, %v", n, err)
	}
	if fi, err := f.OS().Stat(); err != nil || fi.Size() != HeaderSize {
		t.Fatalf("an emptied version 2 file keeps its header: %v bytes, %v", fi.Size(), err)
	}
}
