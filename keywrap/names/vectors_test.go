package names

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/internal/vectors"
)

var formatDoc = flag.String("formatdoc", "../../docs/format.md", "document holding the published test vectors")

func loadVectors(t *testing.T) map[string]map[string]string {
	t.Helper()
	all, err := vectors.Load(*formatDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"subkeys", "names-keys", "name-short", "name-unicode", "name-long", "symlink", "symlink-long", "xattr"} {
		if _, ok := all[n]; !ok {
			t.Fatalf("%s: no vector %q", *formatDoc, n)
		}
	}
	return all
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("vector hex %q: %v", s, err)
	}
	return b
}

// vectorCodec builds the codec from the document's DK, checking each derived
// key against the document on the way.
func vectorCodec(t *testing.T, all map[string]map[string]string) *Codec {
	t.Helper()
	dk, err := keywrap.NewKey(unhex(t, all["subkeys"]["dk"]))
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Close()
	nk, err := keywrap.DeriveSubkey(dk, keywrap.LabelNames, keywrap.SubkeyLen)
	if err != nil {
		t.Fatal(err)
	}
	defer nk.Close()
	kv := all["names-keys"]
	if got := hex.EncodeToString(nk.Bytes()); got != kv["names"] {
		t.Fatalf("names subkey %s, document says %s", got, kv["names"])
	}
	c, err := NewCodec(nk, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	fields := [numSlots]string{"name_mac", "name_enc", "xattr_name_mac", "xattr_name_enc", "symlink", "xattr_value", "meta_mac", "entry_mac"}
	for i, f := range fields {
		if got := hex.EncodeToString(slot(c.keys.Bytes(), i)); got != kv[f] {
			t.Errorf("%s key %s, document says %s", f, got, kv[f])
		}
	}
	return c
}

func TestVectorNames(t *testing.T) {
	all := loadVectors(t)
	c := vectorCodec(t, all)
	for _, vn := range []string{"name-short", "name-unicode", "name-long"} {
		v := all[vn]
		d := unhex(t, v["dir_id"])
		name := string(unhex(t, v["name_hex"]))
		backing, full, err := c.EncryptName(d, name)
		if err != nil {
			t.Fatal(err)
		}
		if backing != v["backing"] || full != v["full"] {
			t.Errorf("%s: got %q / %q, document says %q / %q", vn, backing, full, v["backing"], v["full"])
		}
		enc := v["backing"]
		if v["full"] != "" {
			enc = v["full"]
		}
		if got, err := c.DecryptName(d, enc); err != nil || got != name {
			t.Errorf("%s: decrypt = %q, %v", vn, got, err)
		}
	}
}

func TestVectorSymlinkXattr(t *testing.T) {
	all := loadVectors(t)
	c := vectorCodec(t, all)
	s := all["symlink"]
	if got := b64.EncodeToString(sealNonce(c.symGCM, unhex(t, s["nonce"]), []byte(s["target"]), nil)); got != s["stored"] {
		t.Errorf("symlink: %s, document says %s", got, s["stored"])
	}
	if got, err := c.DecryptSymlink(nil, "", s["stored"]); err != nil || got != s["target"] {
		t.Errorf("symlink decrypt: %q %v", got, err)
	}
	sl := all["symlink-long"]
	n, _ := strconv.Atoi(sl["target_len"])
	long := b64.EncodeToString(sealNonce(c.symGCM, unhex(t, sl["nonce"]), []byte(strings.Repeat("x", n)), nil))
	sum := sha256.Sum256([]byte(long))
	if strconv.Itoa(len(long)) != sl["stored_len"] || hex.EncodeToString(sum[:]) != sl["stored_sha256"] {
		t.Errorf("symlink-long: stored %d bytes, sha256 %x; document says %s bytes, %s", len(long), sum, sl["stored_len"], sl["stored_sha256"])
	}
	dir := t.TempDir()
	rootfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rootfd)
	ref, err := StoreLink(rootfd, long)
	if err != nil || ref != sl["backing"] || !IsLongLink(ref) {
		t.Errorf("symlink-long: backing target %q %v, document says %s", ref, err, sl["backing"])
	}
	if back, err := LoadLink(rootfd, ref); err != nil || back != long {
		t.Errorf("symlink-long: side file read back %d bytes, %v", len(back), err)
	}
	if got, err := c.DecryptSymlink(nil, "", long); err != nil || len(got) != n {
		t.Errorf("symlink-long decrypt: %d bytes %v", len(got), err)
	}
	x := all["xattr"]
	bn, err := c.EncryptXattrName(x["name"])
	if err != nil || bn != x["backing_name"] {
		t.Errorf("xattr name: %q %v, document says %q", bn, err, x["backing_name"])
	}
	if got, err := c.DecryptXattrName(x["backing_name"]); err != nil || got != x["name"] {
		t.Errorf("xattr name decrypt: %q %v", got, err)
	}
	sealed := sealNonce(c.xvGCM, unhex(t, x["nonce"]), unhex(t, x["value_hex"]), []byte(x["backing_name"]))
	if got := hex.EncodeToString(sealed); got != x["backing_value"] {
		t.Errorf("xattr value: %s, document says %s", got, x["backing_value"])
	}
	val, err := c.OpenXattrValue(x["backing_name"], nil, unhex(t, x["backing_value"]))
	if err != nil || hex.EncodeToString(val) != x["value_hex"] {
		t.Errorf("xattr value open: %x %v", val, err)
	}

	// Format version 3: the value is bound to the entry's ID too.
	x3, ok := all["xattr-v3"]
	if !ok {
		t.Fatal("no xattr-v3 vector")
	}
	entry := unhex(t, x3["entry_id"])
	sealed = sealNonce(c.xvGCM, unhex(t, x3["nonce"]), unhex(t, x3["value_hex"]), xattrAAD(x3["backing_name"], entry))
	if got := hex.EncodeToString(sealed); got != x3["backing_value"] {
		t.Errorf("xattr-v3 value: %s, document says %s", got, x3["backing_value"])
	}
	if val, err := c.OpenXattrValue(x3["backing_name"], entry, sealed); err != nil || hex.EncodeToString(val) != x3["value_hex"] {
		t.Errorf("xattr-v3 value open: %x %v", val, err)
	}
	entry[0] ^= 1
	if _, err := c.OpenXattrValue(x3["backing_name"], entry, sealed); err == nil {
		t.Error("xattr-v3 value opens under another entry ID")
	}
}

// TestVectorSymlinkV4 checks the target bound to its entry (format version
// 4) against the document, whose value was computed apart from this code.
func TestVectorSymlinkV4(t *testing.T) {
	all := loadVectors(t)
	c := vectorCodec(t, all)
	v, ok := all["symlink-v4"]
	if !ok {
		t.Fatal("no symlink-v4 vector")
	}
	d := unhex(t, v["dir_id"])
	aad, err := LinkAAD(d, v["name"])
	if err != nil || hex.EncodeToString(aad) != v["aad_hex"] {
		t.Fatalf("aad %x %v, document says %s", aad, err, v["aad_hex"])
	}
	if got := b64.EncodeToString(sealNonce(c.symGCM, unhex(t, v["nonce"]), []byte(v["target"]), aad)); got != v["stored"] {
		t.Errorf("symlink-v4: %s, document says %s", got, v["stored"])
	}
	c.SetBindLinks()
	if got, err := c.DecryptSymlink(d, v["name"], v["stored"]); err != nil || got != v["target"] {
		t.Errorf("symlink-v4 decrypt: %q %v", got, err)
	}
	if _, err := c.DecryptSymlink(d, v["name"]+"x", v["stored"]); err == nil {
		t.Error("symlink-v4 target opens for another name")
	}
}
