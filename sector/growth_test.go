package sector

import "testing"

// TestGrowth: an overwrite of stored sectors needs no new space, a write
// past the stored end needs what reaches past it, and a write into a hole
// (a file extended sparsely) needs all of itself.
func TestGrowth(t *testing.T) {
	const ss = DefaultSectorSize
	c := newTestCipher(t, fixedKey(5), ss)
	f, _ := tempBacking(t, ss)
	mustWrite(t, f, c, make([]byte, 3*ss+100), 0)
	// Stored: [0, 3*ss+100). Then a sparse extension far past it.
	if err := f.Truncate(c, 64*ss); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, c, []byte("tail"), 64*ss)
	for _, tc := range []struct {
		name   string
		off, n int64
		want   int64
	}{
		{"overwrite of stored sectors", 10, ss, 0},
		{"nothing", 0, 0, 0},
		{"past the stored end", 64*ss + 4, 1000, 1000},
		{"from inside the data past the end", 64*ss + 2, 10, 8},
		{"into the hole", 10 * ss, 100, 100},
		{"from data into the hole", 2 * ss, 3 * ss, 3 * ss},
	} {
		got, err := f.Growth(tc.off, tc.n)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: Growth(%d, %d) = %d, want %d", tc.name, tc.off, tc.n, got, tc.want)
		}
	}
}
