package fusefs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestListingCache: a kept listing serves only the stamp it was made at,
// short listings are never kept, and the entries kept stay within bounds.
func TestListingCache(t *testing.T) {
	var c listingCache
	at := func(sec int64) listingStamp { return listingStamp{unix.Timespec{Sec: sec}, unix.Timespec{Sec: sec}} }
	list := func(n int) []fuse.DirEntry { return make([]fuse.DirEntry, n) }
	a, b := &Node{}, &Node{}

	c.put(a, at(1), list(listingKeepMin-1))
	if c.get(a, at(1)) != nil {
		t.Fatal("a listing short enough for one reply was kept")
	}
	c.put(a, at(1), list(listingKeepMin))
	if got := c.get(a, at(1)); len(got) != listingKeepMin {
		t.Fatalf("kept listing: %d entries", len(got))
	}
	if c.get(a, at(2)) != nil {
		t.Fatal("a listing served after its directory changed")
	}
	c.put(b, at(1), list(listingKeepMax-listingKeepMin/2))
	if c.total > listingKeepMax {
		t.Fatalf("%d entries kept, bound %d", c.total, listingKeepMax)
	}
	if c.get(b, at(1)) == nil {
		t.Fatal("the newest listing was evicted")
	}
	c.put(a, at(3), list(listingKeepMax+1))
	if c.get(a, at(3)) != nil || c.total > listingKeepMax {
		t.Fatalf("a listing beyond the bound was kept (%d entries held)", c.total)
	}
	c.drop(b)
	if c.total != 0 || c.get(b, at(1)) != nil {
		t.Fatalf("after drop: %d entries held", c.total)
	}
}
