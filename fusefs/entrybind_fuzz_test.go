package fusefs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
)

// FuzzDecodeMetaBound: on a volume that binds entries a record (version
// 3) either fails or is exactly what encoding its result for the same ID
// writes, passes for no other ID, and names at most two entries.
func FuzzDecodeMetaBound(f *testing.F) {
	nc := fuzzMetaCodec(f)
	nc.SetBindEntries()
	id := bytes.Repeat([]byte{0xa5}, 16)
	dir := bytes.Repeat([]byte{0x5a}, 16)
	for _, ps := range [][]Place{nil, {{dir, "a"}}, {{dir, "a"}, {dir, "b"}}} {
		m, err := bound(nc, meta{mode: 0o4755, uid: 1000, gid: 100}, ps...)
		if err != nil {
			f.Fatal(err)
		}
		good, err := encodeMetaAuth(nc, id, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(good)
		f.Add(good[:len(good)-1])
	}
	f.Add([]byte{metaVersionBound, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, ok := checkAuthRoundTrip(t, nc, id, b); ok && m.bind.n > maxBindSlots {
			t.Fatalf("%x names %d entries", b, m.bind.n)
		}
	})
}

// TestEncodeMetaBoundVector: the record the mount writes for the meta-v3
// vector of docs/format.md (checked there with Python's hmac), and what
// the checks of a lookup make of it.
func TestEncodeMetaBoundVector(t *testing.T) {
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	nk, err := keywrap.NewKey(unhex("4273955c06966c1b2f20c9b44a9b6467e53c027fe225be359f78028f245383a8"))
	if err != nil {
		t.Fatal(err)
	}
	defer nk.Close()
	nc, err := names.NewCodec(nk, false)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetAuthMeta()
	nc.SetBindEntries()
	id, dir := unhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"), unhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
	at := Place{DirID: dir, Name: "report.txt"}
	want := unhex("03000009ed000003e80000006401a1b6c7e40db7e5645a1a845d0bcd78fcd29857adf41cd9d1cb6b526d9cf9b23c")
	got, err := EncodeMetaFor(nc, id, &at, 0o4755, 1000, 100)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("record %x (%v), document says %x", got, err, want)
	}
	if mode, uid, gid, err := DecodeMetaFor(nc, id, &at, got); err != nil || mode != 0o4755 || uid != 1000 || gid != 100 {
		t.Errorf("decode at its entry: %o %d %d %v", mode, uid, gid, err)
	}
	for _, other := range []Place{{DirID: dir, Name: "report.txt2"}, {DirID: id, Name: "report.txt"}} {
		if _, _, _, err := DecodeMetaFor(nc, id, &other, got); !errors.Is(err, ErrEntryMoved) {
			t.Errorf("decode at %x/%s: %v, want ErrEntryMoved", other.DirID, other.Name, err)
		}
	}
	// Unbound: any entry; rebinding keeps mode and owner.
	free, err := RebindMeta(nc, id, got, nil)
	if err != nil || len(free) != metaLen+1+names.MetaTagLen {
		t.Fatalf("unbound record %x, %v", free, err)
	}
	if _, _, _, err := DecodeMetaFor(nc, id, &Place{DirID: id, Name: "x"}, free); err != nil {
		t.Errorf("an unbound record fails at another entry: %v", err)
	}
	back, err := RebindMeta(nc, id, free, &at)
	if err != nil || !bytes.Equal(back, want) {
		t.Errorf("rebound record %x (%v), want %x", back, err, want)
	}
}

// TestRecordNamingTwoEntries: the record a rename writes before the
// backing rename names both entries, so whichever name a crash leaves the
// entry at, it reads there, and nowhere else; the record written after it
// names only the new entry.
func TestRecordNamingTwoEntries(t *testing.T) {
	nc := fuzzMetaCodec(t)
	nc.SetBindEntries()
	id := bytes.Repeat([]byte{0xa5}, 16)
	d1, d2 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)
	from, to, other := Place{d1, "old"}, Place{d2, "new"}, Place{d1, "new"}
	m, err := bound(nc, meta{mode: 0o640, uid: 1, gid: 2}, from, to)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := encodeMetaAuth(nc, id, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec) != metaLenMax {
		t.Errorf("a record naming two entries has %d bytes, want %d", len(rec), metaLenMax)
	}
	got, err := decodeMetaAuth(nc, id, rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Place{from, to} {
		if err := checkPlace(nc, got, p); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
	if err := checkPlace(nc, got, other); !errors.Is(err, ErrEntryMoved) {
		t.Errorf("a third entry: %v", err)
	}
	after, err := bound(nc, got, to)
	if err != nil {
		t.Fatal(err)
	}
	if checkPlace(nc, after, to) != nil || !errors.Is(checkPlace(nc, after, from), ErrEntryMoved) {
		t.Error("the record after the rename does not name only the new entry")
	}
}
