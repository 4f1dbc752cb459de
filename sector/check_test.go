package sector

import (
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
)

// TestCheckSectorsFindsEveryBadSector: a flipped byte, two swapped
// sectors and a truncated tail are each reported with their index; holes
// (a gap left by a write past the end, and a sector of stored zeros) pass;
// split into ranges checked at once, the result is the same.
func TestCheckSectorsFindsEveryBadSector(t *testing.T) {
	const ss = 512
	c := newTestCipher(t, fixedKey(3), ss)
	f, path := tempBacking(t, ss)
	data := make([]byte, 12*ss)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	mustWrite(t, f, c, data[:8*ss], 0)
	mustWrite(t, f, c, data[:2*ss], 20*ss) // sectors 8..19 stay a hole
	stored := int64(ss + Overhead)
	raw, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	at := func(i int64) int64 { return HeaderSize + i*stored }
	flip := make([]byte, 1)
	raw.ReadAt(flip, at(1)+40)
	flip[0] ^= 0x10
	raw.WriteAt(flip, at(1)+40)
	s3, s4 := make([]byte, stored), make([]byte, stored)
	raw.ReadAt(s3, at(3))
	raw.ReadAt(s4, at(4))
	raw.WriteAt(s4, at(3))
	raw.WriteAt(s3, at(4))
	raw.WriteAt(make([]byte, stored), at(6)) // stored zeros: a hole
	end := at(22)
	raw.WriteAt([]byte{1, 2, 3}, end) // a last stored sector of 3 bytes
	n, err := f.StoredSectors()
	if err != nil || n != 23 {
		t.Fatalf("StoredSectors = %d, %v; want 23", n, err)
	}
	want := []int64{1, 3, 4, 22}
	got := checkAll(t, f, c, [][2]int64{{0, n}})
	if !slices.Equal(got, want) {
		t.Errorf("bad sectors %v, want %v", got, want)
	}
	got = checkAll(t, f, c, [][2]int64{{0, 2}, {2, 4}, {4, 9}, {9, 21}, {21, 23}})
	if !slices.Equal(got, want) {
		t.Errorf("bad sectors checked in ranges %v, want %v", got, want)
	}
}

func checkAll(t *testing.T, f *File, c *Cipher, ranges [][2]int64) []int64 {
	t.Helper()
	var mu sync.Mutex
	var bad []int64
	var wg sync.WaitGroup
	for _, r := range ranges {
		wg.Go(func() {
			_, err := f.CheckSectors(c, r[0], r[1], func(e *AuthError) {
				if !errors.Is(e, ErrAuth) {
					t.Errorf("sector %d: %v does not match ErrAuth", e.Index, e)
				}
				mu.Lock()
				bad = append(bad, e.Index)
				mu.Unlock()
			})
			if err != nil {
				t.Errorf("CheckSectors(%d, %d): %v", r[0], r[1], err)
			}
		})
	}
	wg.Wait()
	slices.Sort(bad)
	return bad
}

// TestCheckSectorsBadHeader: a header that cannot be read stops the check
// with ErrHeader, and a closed cipher with ErrClosed.
func TestCheckSectorsBadHeader(t *testing.T) {
	c := newTestCipher(t, fixedKey(3), 512)
	f, path := tempBacking(t, 512)
	mustWrite(t, f, c, make([]byte, 1000), 0)
	if err := os.WriteFile(path, append([]byte{0, 9}, make([]byte, 1200)...), 0o600); err != nil {
		t.Fatal(err)
	}
	f2 := openBacking(t, path, 512)
	if _, err := f2.CheckSectors(c, 0, 3, func(*AuthError) {}); !errors.Is(err, ErrHeader) {
		t.Errorf("damaged header: %v, want ErrHeader", err)
	}
	c.Close()
	if _, err := f.CheckSectors(c, 0, 3, func(*AuthError) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("closed cipher: %v, want ErrClosed", err)
	}
}
