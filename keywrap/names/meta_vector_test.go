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
