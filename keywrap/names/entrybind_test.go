package names

import (
	"bytes"
	"errors"
	"testing"

	"github.com/encvol/encvol/keywrap"
)

func entryCodec(t testing.TB) *Codec {
	t.Helper()
	k, err := keywrap.RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	c, err := NewCodec(k, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestEntryTagInputs: an entry tag needs a 16-byte directory ID and a
// valid name, and a closed codec refuses; names that differ only in their
// split between ID and name get different tags.
func TestEntryTagInputs(t *testing.T) {
	c := entryCodec(t)
	dir := bytes.Repeat([]byte{7}, DirIDLen)
	if _, err := c.EntryTag(dir[:15], "a"); !errors.Is(err, ErrDirIDCorrupt) {
		t.Errorf("short directory ID: %v", err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := c.EntryTag(dir, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	a, err := c.EntryTag(dir, "ab")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.EntryTag(dir, "abc")
	if bytes.Equal(a, b) || len(a) != EntryTagLen {
		t.Errorf("tags %x and %x", a, b)
	}
	c.Close()
	if _, err := c.EntryTag(dir, "ab"); !errors.Is(err, ErrClosed) {
		t.Errorf("closed codec: %v", err)
	}
}

// BenchmarkEntryTag: what a lookup's first check of an entry costs.
func BenchmarkEntryTag(b *testing.B) {
	c := entryCodec(b)
	dir := bytes.Repeat([]byte{7}, DirIDLen)
	for b.Loop() {
		if _, err := c.EntryTag(dir, "some-file-name.go"); err != nil {
			b.Fatal(err)
		}
	}
}
