package sector

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestWroteSectorsInPlace: cutting written sectors out of the pending hole
// map in place, and putting made holes back, gives exactly what removing
// them from (adding them to) a copy gives, with
// the map merged back to maxSettleExtents (as greedyMerge would, one
// closest pair at a time) whenever it outgrows the slack; the map always
// holds every sector that is still a hole; and the loaded map readers
// share never changes.
func TestWroteSectorsInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := &header{version: Version3}
	loaded := []Extent{{0, 3}, {10, 2_000_000}, {2_000_002, 4_000_000}}
	f := &File{}
	f.holes.Store(&holeMap{h: h, ext: slices.Clone(loaded)})
	want, holes := slices.Clone(loaded), slices.Clone(loaded)
	merges := 0
	for n := 0; n < 3*(maxSettleExtents+settleSlack); n++ {
		lo := rng.Int64N(4_000_010)
		hi := lo + 1 + rng.Int64N(3)
		if n%97 == 0 {
			hi = lo + rng.Int64N(5_000) // now and then a long write
		}
		if n%5 == 4 && f.settle != nil {
			// A hole made again where the loaded map has one.
			if k := rng.IntN(len(loaded)); loaded[k].End-loaded[k].Start > 1 {
				lo = loaded[k].Start + rng.Int64N(loaded[k].End-loaded[k].Start-1)
				hi = min(loaded[k].End, lo+1+rng.Int64N(50))
			}
			holes = normalizeExtents(append(slices.Clone(holes), Extent{lo, hi}), math.MaxInt)
			want = normalizeExtents(append(slices.Clone(want), Extent{lo, hi}), math.MaxInt)
			f.madeHoles(h, lo, hi)
		} else {
			holes = removeExtent(holes, lo, hi)
			want = removeExtent(want, lo, hi)
			f.wroteSectors(h, lo, hi)
		}
		if len(want) > maxSettleExtents+settleSlack {
			want = greedyMerge(want, maxSettleExtents)
			merges++
		}
		got := loaded
		if f.settle != nil {
			got = f.settle.ext
		}
		if !slices.Equal(got, want) {
			t.Fatalf("write %d [%d,%d): pending map has %d extents, want %d (first difference at %d)", n, lo, hi, len(got), len(want), firstExtentDiff(got, want))
		}
		if !slices.Equal(want, loaded) && !f.settleDue.Load() {
			t.Fatalf("write %d: map changed but not due to settle", n)
		}
		for k := n % 64; k < len(holes); k += 64 { // a sample each time
			if e := holes[k]; !(&holeMap{ext: got}).covers(e.Start, e.End) {
				t.Fatalf("write %d: hole %v is not in the pending map", n, e)
			}
		}
	}
	if merges < 2 {
		t.Fatalf("the map was merged %d times; the test must fill it", merges)
	}
	if m := f.holes.Load(); !slices.Equal(m.ext, loaded) {
		t.Fatal("the loaded map, which readers share, was changed")
	}
}

// greedyMerge merges the two neighbours with the smallest gap (the first of
// equal ones) until at most limit extents are left, one pair at a time.
func greedyMerge(ext []Extent, limit int) []Extent {
	ext = slices.Clone(ext)
	for len(ext) > limit {
		best := 0
		for k := 1; k+1 < len(ext); k++ {
			if ext[k+1].Start-ext[k].End < ext[best+1].Start-ext[best].End {
				best = k
			}
		}
		ext[best].End = ext[best+1].End
		ext = slices.Delete(ext, best+1, best+2)
	}
	return ext
}

// TestMergeClosestIsGreedy: closing the smallest gaps at once is closing
// them one at a time, ties included.
func TestMergeClosestIsGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 300; round++ {
		var ext []Extent
		at := int64(0)
		for range 1 + rng.IntN(60) {
			at += 1 + rng.Int64N(4) // small gaps: many ties
			end := at + 1 + rng.Int64N(3)
			ext = append(ext, Extent{at, end})
			at = end
		}
		limit := 1 + rng.IntN(len(ext))
		want := greedyMerge(ext, limit)
		if got := mergeClosest(slices.Clone(ext), limit); !slices.Equal(got, want) {
			t.Fatalf("mergeClosest(%v, %d) = %v, want %v", ext, limit, got, want)
		}
	}
}

func firstExtentDiff(a, b []Extent) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCoversAndOverlapRange: the binary searches agree with a scan.
func TestCoversAndOverlapRange(t *testing.T) {
	m := &holeMap{ext: []Extent{{2, 5}, {7, 8}, {10, 20}}}
	for lo := int64(0); lo < 22; lo++ {
		for hi := lo; hi < 23; hi++ {
			var wantI, wantJ, hits = -1, -1, 0
			covered := lo >= hi
			for k, e := range m.ext {
				if e.Start < hi && lo < e.End {
					if wantI < 0 {
						wantI = k
					}
					wantJ, hits = k+1, hits+1
				}
				covered = covered || (e.Start <= lo && hi <= e.End)
			}
			i, j := m.overlapRange(lo, hi)
			if hits == 0 && i != j || hits > 0 && (i != wantI || j != wantJ) {
				t.Fatalf("overlapRange(%d, %d) = [%d, %d), want [%d, %d) (%d hits)", lo, hi, i, j, wantI, wantJ, hits)
			}
			if got := m.covers(lo, hi); got != covered {
				t.Fatalf("covers(%d, %d) = %v, want %v", lo, hi, got, covered)
			}
		}
	}
}

// BenchmarkWroteSectorsFullMap: a 4 KiB write into a file whose pending
// hole map is at its bound (random writes into a large preallocated file).
func BenchmarkWroteSectorsFullMap(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := &header{version: Version3}
	f := &File{}
	f.holes.Store(&holeMap{h: h, ext: []Extent{{0, 1 << 20}}})
	for range 2 * maxSettleExtents {
		lo := rng.Int64N(1 << 20)
		f.wroteSectors(h, lo, lo+1)
	}
	b.ResetTimer()
	for range b.N {
		lo := rng.Int64N(1 << 20)
		f.wroteSectors(h, lo, lo+1)
	}
}
