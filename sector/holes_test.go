package sector

import (
	"errors"
	"math"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func newV3Cipher(t testing.TB, key testKey) *Cipher {
	t.Helper()
	c := newTestCipher(t, key, tamperSS)
	c.UseVersion3()
	return c
}

// zeroSector overwrites stored sector i of the backing file with zeros, as
// someone with write access to the backing directory can.
func zeroSector(t *testing.T, path string, i int) {
	t.Helper()
	patchBacking(t, path, func(b []byte) []byte {
		clear(b[storedOff(i):min(len(b), storedOff(i+1))])
		return b
	})
}

// checkBad runs CheckSectors over the whole file and returns the failing
// sectors and their causes.
func checkBad(t *testing.T, f *File, c *Cipher) ([]int64, []error) {
	t.Helper()
	var idx []int64
	var why []error
	if _, err := f.CheckSectors(c, 0, math.MaxInt64, func(e *AuthError) {
		idx = append(idx, e.Index)
		why = append(why, e.Err)
	}); err != nil {
		t.Fatalf("CheckSectors: %v", err)
	}
	return idx, why
}

func TestZeroedInnerSectorDetected(t *testing.T) {
	c := newV3Cipher(t, fixedKey(1))
	f, path := tempBacking(t, tamperSS)
	data := make([]byte, 4*tamperSS)
	for i := range data {
		data[i] = byte(i*3 + 1)
	}
	mustWrite(t, f, c, data, 0)
	zeroSector(t, path, 1)
	f = reopen(t, path)
	readFails(t, f, c, data, 1, ErrZeroed)
	idx, why := checkBad(t, f, c)
	if !slices.Equal(idx, []int64{1}) || !errors.Is(why[0], ErrZeroed) {
		t.Fatalf("CheckSectors found %v (%v), want sector 1 zeroed", idx, why)
	}
	// A partial overwrite must not seal the zeroed sector as valid data.
	if _, err := f.WriteAt(c, []byte("x"), tamperSS+5); !errors.Is(err, ErrZeroed) {
		t.Fatalf("partial write into the zeroed sector: %v, want ErrZeroed", err)
	}
	// Nor may a truncate that makes it the last sector.
	if err := f.Truncate(c, tamperSS+100); !errors.Is(err, ErrZeroed) {
		t.Fatalf("truncate to the zeroed sector: %v, want ErrZeroed", err)
	}
}

func TestSparseFileHolesAllowed(t *testing.T) {
	c := newV3Cipher(t, fixedKey(2))
	f, path := tempBacking(t, tamperSS)
	head := []byte("head of a sparse file")
	mustWrite(t, f, c, head, 0)
	// A write past the end leaves sectors 1..9 holes; a truncate up
	// leaves 11..39 holes and seals sector 40 as the last.
	mid := []byte("middle")
	mustWrite(t, f, c, mid, 10*tamperSS+7)
	size := int64(40*tamperSS + 123)
	if err := f.Truncate(c, size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, head)
	copy(want[10*tamperSS+7:], mid)

	f = reopen(t, path)
	checkContent(t, f, c, want)
	if idx, why := checkBad(t, f, c); len(idx) > 0 {
		t.Fatalf("CheckSectors on a sparse file: %v %v", idx, why)
	}
	holes, err := f.Holes(c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(holes, []Extent{{1, 10}, {11, 40}}) {
		t.Fatalf("hole map %v, want [1,10) [11,40)", holes)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if got, most := st.Blocks*512, int64(8*(tamperSS+Overhead)); got > most {
		t.Fatalf("backing file allocates %d bytes, want at most %d: not sparse", got, most)
	}

	// Zeroing a sealed sector of the sparse file is still detected.
	zeroSector(t, path, 10)
	f = reopen(t, path)
	if _, err := readAll(f, c); !errors.Is(err, ErrZeroed) {
		t.Fatalf("read with sealed sector 10 zeroed: %v, want ErrZeroed", err)
	}
	if idx, _ := checkBad(t, f, c); !slices.Equal(idx, []int64{10}) {
		t.Fatalf("CheckSectors found %v, want [10]", idx)
	}
}

func TestHoleMapBoundToFile(t *testing.T) {
	c := newV3Cipher(t, fixedKey(3))
	dir := t.TempDir()
	a := openBacking(t, dir+"/a", tamperSS)
	b := openBacking(t, dir+"/b", tamperSS)
	mustWrite(t, a, c, []byte("a"), 5*tamperSS)
	mustWrite(t, b, c, []byte("b"), 5*tamperSS)
	// b's own map, then a's map put on b: it is sealed for a's file ID.
	val := make([]byte, maxHolesXattr)
	n, err := unix.Getxattr(dir+"/a", HolesXattr, val)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(dir+"/b", HolesXattr, val[:n], 0); err != nil {
		t.Fatal(err)
	}
	b = openBacking(t, dir+"/b", tamperSS)
	if _, err := readAll(b, c); !errors.Is(err, ErrHoleMap) || !errors.Is(err, ErrAuth) {
		t.Fatalf("read with another file's hole map: %v, want ErrHoleMap", err)
	}
	// Without the map the holes are not allowed at all.
	if err := unix.Removexattr(dir+"/b", HolesXattr); err != nil {
		t.Fatal(err)
	}
	b = openBacking(t, dir+"/b", tamperSS)
	if _, err := readAll(b, c); !errors.Is(err, ErrZeroed) {
		t.Fatalf("read without hole map: %v, want ErrZeroed", err)
	}
}

func TestHoleMapBounded(t *testing.T) {
	c := newV3Cipher(t, fixedKey(4))
	f, path := tempBacking(t, tamperSS)
	want := []byte{}
	for k := range 3 * MaxHoleExtents {
		off := int64(k) * 2 * tamperSS
		mustWrite(t, f, c, []byte{byte(k + 1)}, off)
		want = append(want, make([]byte, off-int64(len(want)))...)
		want = append(want, byte(k+1))
	}
	// Past 64 holes the others are sealed zeros: the map still covers
	// no sector that holds data.
	holes := fullExactMap(t, c, path)
	f = reopen(t, path)
	checkContent(t, f, c, want)
	if idx, _ := checkBad(t, f, c); len(idx) > 0 {
		t.Fatalf("CheckSectors: %v", idx)
	}
	// A data sector between two holes of the map, zeroed, is detected.
	zeroSector(t, path, int(holes[len(holes)/2].End))
	if idx, _ := checkBad(t, reopen(t, path), c); len(idx) != 1 {
		t.Fatalf("CheckSectors after zeroing the sector after hole %v: %v", holes[len(holes)/2], idx)
	}
}

// TestSetHolesBounded: a copy that vouches for more than 64 holes gets the
// smallest of them written as sealed zeros.
func TestSetHolesBounded(t *testing.T) {
	c := newV3Cipher(t, fixedKey(7))
	f, path := tempBacking(t, tamperSS)
	// Data in every third sector, and in the one after it every other
	// time: 100 holes, half of one sector, half of two.
	n := int64(3*100 + 1)
	var holes []Extent
	want := make([]byte, n*tamperSS)
	for k := range (n + 2) / 3 {
		data := []int64{3 * k}
		if k%2 == 0 {
			data = append(data, 3*k+1)
		}
		for _, i := range data {
			if i < n {
				mustWrite(t, f, c, []byte{byte(i)}, i*tamperSS)
				want[i*tamperSS] = byte(i)
			}
		}
		if 3*k+3 < n {
			holes = append(holes, Extent{data[len(data)-1] + 1, 3*k + 3})
		}
	}
	// Written in order, the file has a map over every gap; SetHoles
	// replaces it with what the writer vouches for.
	if err := f.SetHoles(c, holes); err != nil {
		t.Fatal(err)
	}
	fullExactMap(t, c, path)
	checkContent(t, reopen(t, path), c, want[:(n-1)*tamperSS+1])
}

// A backing without extended attributes gets its gaps written as sealed
// zeros, so they read back as zeros and are never unauthenticated holes.
func TestHolesWithoutXattrs(t *testing.T) {
	setHolesXattr = func(int, string, []byte, int) error { return unix.EOPNOTSUPP }
	t.Cleanup(func() { setHolesXattr = unix.Fsetxattr })
	c := newV3Cipher(t, fixedKey(5))
	f, path := tempBacking(t, tamperSS)
	mustWrite(t, f, c, []byte("x"), 3*tamperSS)
	if err := f.Truncate(c, 6*tamperSS); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 6*tamperSS)
	want[3*tamperSS] = 'x'
	f = reopen(t, path)
	checkContent(t, f, c, want)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if isZero(b[storedOff(i) : storedOff(i)+NonceSize]) {
			t.Fatalf("sector %d is a hole on a backing without a hole map", i)
		}
	}
}

func TestFitExtents(t *testing.T) {
	var ext []Extent
	for k := range int64(MaxHoleExtents + 10) {
		ext = append(ext, Extent{10 * k, 10*k + 1 + (k*7)%9})
	}
	keep, fill := fitExtents(ext, MaxHoleExtents)
	if len(keep) != MaxHoleExtents || len(fill) != 10 {
		t.Fatalf("kept %d, fill %d of %d extents", len(keep), len(fill), len(ext))
	}
	if !slices.IsSortedFunc(keep, func(a, b Extent) int { return int(a.Start - b.Start) }) ||
		!slices.IsSortedFunc(fill, func(a, b Extent) int { return int(a.Start - b.Start) }) {
		t.Fatalf("not sorted: keep %v fill %v", keep, fill)
	}
	largestFilled := int64(0)
	for _, e := range fill {
		largestFilled = max(largestFilled, e.End-e.Start)
	}
	for _, e := range keep {
		if e.End-e.Start < largestFilled {
			t.Fatalf("kept %v, smaller than a filled hole of %d sectors", e, largestFilled)
		}
	}
	if got := slices.Concat(keep, fill); len(got) != len(ext) {
		t.Fatalf("%d extents out of %d", len(got), len(ext))
	}
	if _, err := decodeHoles(encodeHoles(keep)); err != nil {
		t.Fatal(err)
	}
}
