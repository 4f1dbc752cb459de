package sector

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
)

// mapMismatch compares the hole map holes with the backing file at path:
// every sector stored as zeros must be in it and, unless loose, every
// sector in it must be stored as zeros and come before the last sector.
// It returns what differs, or "".
func mapMismatch(t testing.TB, path string, ss int64, holes []Extent, loose bool) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stored := ss + Overhead
	n := (int64(len(raw)) - HeaderSize + stored - 1) / stored
	m := &holeMap{ext: holes}
	for i := range n {
		st := raw[HeaderSize+i*stored : min(int64(len(raw)), HeaderSize+(i+1)*stored)]
		zero, in := isZero(st), m.contains(i)
		if zero && !in || !zero && in && !loose {
			return fmt.Sprintf("sector %d: stored as zeros %v, in the hole map %v (map %v)", i, zero, in, holes)
		}
	}
	if len(holes) > 0 && holes[len(holes)-1].End > n-1 && !loose {
		return fmt.Sprintf("the hole map %v reaches sector %d of %d", holes, holes[len(holes)-1].End-1, n)
	}
	return ""
}

// fullExactMap reads the hole map of the backing file at path afresh and
// fails unless it holds MaxHoleExtents extents and exactly the sectors
// stored as zeros.
func fullExactMap(t *testing.T, c *Cipher, path string) []Extent {
	t.Helper()
	holes, err := reopen(t, path).Holes(c)
	if err != nil || len(holes) != MaxHoleExtents {
		t.Fatalf("map of %d extents, %v; want %d", len(holes), err, MaxHoleExtents)
	}
	if bad := mapMismatch(t, path, tamperSS, holes, false); bad != "" {
		t.Fatal(bad)
	}
	return holes
}

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

// TestSettleHolesBounded: writes that split the 64 holes of a map into 128
// leave the smallest as sealed zeros when the map is settled; the map stays
// exact.
func TestSettleHolesBounded(t *testing.T) {
	c := newV3Cipher(t, fixedKey(8))
	f, path := tempBacking(t, tamperSS)
	want := make([]byte, 0, 5*MaxHoleExtents*tamperSS)
	for k := range int64(MaxHoleExtents) {
		// Data in sector 5k+4, after a hole of 4 sectors.
		off := (5*k + 4) * tamperSS
		mustWrite(t, f, c, []byte{byte(k + 1)}, off)
		want = append(want, make([]byte, off-int64(len(want)))...)
		want = append(want, byte(k+1))
	}
	for k := range int64(MaxHoleExtents) {
		off := (5*k + 1) * tamperSS // splits hole k into [5k] and [5k+2, 5k+4)
		mustWrite(t, f, c, []byte{0xee}, off)
		want[off] = 0xee
	}
	if err := f.SettleHoles(c); err != nil {
		t.Fatal(err)
	}
	holes := fullExactMap(t, c, path)
	for _, e := range holes {
		if e.End-e.Start != 2 {
			t.Fatalf("kept hole %v; the 1-sector holes should have been filled first", e)
		}
	}
	checkContent(t, reopen(t, path), c, want)
}
