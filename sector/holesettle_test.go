package sector

import (
	"errors"
	"slices"
	"testing"
)

// TestFilledHoleZeroedDetected: a sector written where a hole was leaves
// the hole map once SettleHoles runs, so zeroing it in the backing file is
// an authentication failure, as for any other sealed sector; the holes
// that remain still read as zeros.
func TestFilledHoleZeroedDetected(t *testing.T) {
	c := newV3Cipher(t, fixedKey(4))
	f, path := tempBacking(t, tamperSS)
	mustWrite(t, f, c, []byte("head"), 0)
	mustWrite(t, f, c, []byte("tail"), 10*tamperSS)
	fill := make([]byte, tamperSS)
	for i := range fill {
		fill[i] = byte(i) | 1
	}
	mustWrite(t, f, c, fill, 5*tamperSS)
	if !f.HolesUnsettled() {
		t.Fatal("HolesUnsettled = false after a write into a hole")
	}
	// Until it settles, the map on the backing keeps the filled sector.
	if holes, err := f.Holes(c); err != nil || !slices.Equal(holes, []Extent{{1, 10}}) {
		t.Fatalf("map before SettleHoles: %v, %v; want [1,10)", holes, err)
	}
	if err := f.SettleHoles(c); err != nil {
		t.Fatal(err)
	}
	if f.HolesUnsettled() {
		t.Fatal("HolesUnsettled = true after SettleHoles")
	}
	g := reopen(t, path)
	if holes, err := g.Holes(c); err != nil || !slices.Equal(holes, []Extent{{1, 5}, {6, 10}}) {
		t.Fatalf("map after SettleHoles, reopened: %v, %v; want [1,5) [6,10)", holes, err)
	}
	want := make([]byte, 10*tamperSS+4)
	copy(want, "head")
	copy(want[5*tamperSS:], fill)
	copy(want[10*tamperSS:], "tail")
	checkContent(t, g, c, want)

	zeroSector(t, path, 5)
	g = reopen(t, path)
	readFails(t, g, c, want, 5, ErrZeroed)
	if idx, why := checkBad(t, g, c); !slices.Equal(idx, []int64{5}) || !errors.Is(why[0], ErrZeroed) {
		t.Fatalf("CheckSectors found %v (%v), want sector 5 zeroed", idx, why)
	}
}

// TestSettleHolesKeepsRemadeHoles: sectors written, cut off by a truncate
// and made holes again by an extension are holes again: settling keeps
// them in the map, and an emptied file's map is dropped.
func TestSettleHolesKeepsRemadeHoles(t *testing.T) {
	c := newV3Cipher(t, fixedKey(5))
	f, path := tempBacking(t, tamperSS)
	mustWrite(t, f, c, []byte("x"), 8*tamperSS)
	mustWrite(t, f, c, make([]byte, 3*tamperSS), 2*tamperSS) // fills 2-4
	if err := f.Truncate(c, 3*tamperSS+1); err != nil {      // sectors 0-3
		t.Fatal(err)
	}
	if err := f.Truncate(c, 9*tamperSS); err != nil { // 4-7 holes again, 8 sealed
		t.Fatal(err)
	}
	if err := f.SettleHoles(c); err != nil {
		t.Fatal(err)
	}
	g := reopen(t, path)
	if holes, err := g.Holes(c); err != nil || !slices.Equal(holes, []Extent{{0, 2}, {4, 8}}) {
		t.Fatalf("map: %v, %v; want [0,2) [4,8)", holes, err)
	}
	if idx, why := checkBad(t, g, c); len(idx) > 0 {
		t.Fatalf("CheckSectors: %v %v", idx, why)
	}
	if err := g.Truncate(c, 0); err != nil {
		t.Fatal(err)
	}
	if err := g.SettleHoles(c); err != nil {
		t.Fatal(err)
	}
	if holes, err := reopen(t, path).Holes(c); err != nil || holes != nil {
		t.Fatalf("map of the emptied file: %v, %v; want none", holes, err)
	}
}

// TestSettleHolesClosedKey: with the key closed the map stays as it was
// (too large is safe) and the call says why.
func TestSettleHolesClosedKey(t *testing.T) {
	c := newV3Cipher(t, fixedKey(6))
	f, path := tempBacking(t, tamperSS)
	mustWrite(t, f, c, []byte("x"), 4*tamperSS)
	mustWrite(t, f, c, []byte("y"), 2*tamperSS)
	c.Close()
	if err := f.SettleHoles(c); !errors.Is(err, ErrClosed) {
		t.Fatalf("SettleHoles with a closed key: %v, want ErrClosed", err)
	}
	c2 := newV3Cipher(t, fixedKey(6))
	if holes, err := reopen(t, path).Holes(c2); err != nil || !slices.Equal(holes, []Extent{{0, 4}}) {
		t.Fatalf("map: %v, %v; want [0,4)", holes, err)
	}
}
