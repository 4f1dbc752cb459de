package names

import (
	"bytes"
	"testing"
)

// The meta-v2 vector of docs/format.md: the tag of a record bound to a file
// ID, under the meta MAC key of the names-keys vector.
func TestVectorMeta(t *testing.T) {
	all := loadVectors(t)
	c := vectorCodec(t, all)
	v, ok := all["meta-v2"]
	if !ok {
		t.Fatal("no meta-v2 vector")
	}
	rec, val := unhex(t, v["record"]), unhex(t, v["value"])
	tag, err := c.MetaTag(unhex(t, v["id"]), rec)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(append([]byte(nil), rec...), tag...); !bytes.Equal(got, val) {
		t.Fatalf("value %x, document says %x", got, val)
	}
	other := unhex(t, v["id"])
	other[0] ^= 1
	if tag2, _ := c.MetaTag(other, rec); bytes.Equal(tag2, tag) {
		t.Fatal("the tag does not depend on the ID")
	}
}

// The meta-v3 vector of docs/format.md: the entry tag of a name and the
// record tag over a record that names it, checked with Python's hmac.
func TestVectorMetaBound(t *testing.T) {
	all := loadVectors(t)
	c := vectorCodec(t, all)
	v, ok := all["meta-v3"]
	if !ok {
		t.Fatal("no meta-v3 vector")
	}
	dirID, name := unhex(t, v["dir_id"]), string(unhex(t, v["name_hex"]))
	et, err := c.EntryTag(dirID, name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(et, unhex(t, v["entry_tag"])) {
		t.Fatalf("entry tag %x, document says %s", et, v["entry_tag"])
	}
	rec, val := unhex(t, v["record"]), unhex(t, v["value"])
	if !bytes.HasSuffix(rec, et) {
		t.Fatal("the record does not end with the entry tag")
	}
	tag, err := c.MetaTag(unhex(t, v["id"]), rec)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(append([]byte(nil), rec...), tag...); !bytes.Equal(got, val) {
		t.Fatalf("value %x, document says %x", got, val)
	}
	for _, other := range []struct {
		dir  []byte
		name string
	}{
		{append([]byte{dirID[0] ^ 1}, dirID[1:]...), name},
		{dirID, name + "x"},
	} {
		if o, _ := c.EntryTag(other.dir, other.name); bytes.Equal(o, et) {
			t.Fatalf("entry tag of %x/%q equals the vector's", other.dir, other.name)
		}
	}
}
