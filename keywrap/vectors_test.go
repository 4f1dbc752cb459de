package keywrap

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"testing"

	"github.com/encvol/encvol/keywrap/internal/vectors"
)

var formatDoc = flag.String("formatdoc", "../docs/format.md", "document holding the published test vectors")

func loadVector(t *testing.T, name string) map[string]string {
	t.Helper()
	all, err := vectors.Load(*formatDoc)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := all[name]
	if !ok {
		t.Fatalf("%s: no vector %q", *formatDoc, name)
	}
	return v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("vector hex %q: %v", s, err)
	}
	return b
}

func TestVectorSubkeys(t *testing.T) {
	v := loadVector(t, "subkeys")
	dk, err := NewKey(unhex(t, v["dk"]))
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Close()
	s, err := DeriveSubkeys(dk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for field, k := range map[string]*Key{"content": s.Content, "names": s.Names, "header_mac": s.HeaderMAC} {
		if got := hex.EncodeToString(k.Bytes()); got != v[field] {
			t.Errorf("%s = %s, document says %s", field, got, v[field])
		}
	}
}

func TestVectorHeader(t *testing.T) {
	for _, name := range []string{"header", "header-v2", "header-v3"} {
		t.Run(name, func(t *testing.T) { checkHeaderVector(t, loadVector(t, name)) })
	}
}

func checkHeaderVector(t *testing.T, v map[string]string) {
	dk, err := NewKey(unhex(t, v["dk"]))
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Close()
	mk, err := DeriveSubkey(dk, LabelHeaderMAC, SubkeyLen)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	file := []byte(v["line1"] + "\n" + v["body"] + "\nmac: " + v["mac"] + "\n")
	h, err := ParseHeader(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.VerifyMAC(mk); err != nil {
		t.Fatalf("document's header does not verify: %v", err)
	}
	if !bytes.Equal(h.WrappedDK, unhex(t, v["wrapped_dk_hex"])) {
		t.Fatalf("wrapped_dk = %x", h.WrappedDK)
	}
	if !bytes.Equal(h.KeyCheck, unhex(t, v["key_check_hex"])) {
		t.Fatalf("key_check = %x", h.KeyCheck)
	}
	if want := v["key_check_plaintext"]; want != "" && !bytes.Equal(KeyCheckPlaintext(h.VolumeID), unhex(t, want)) {
		t.Fatalf("key check plaintext = %x, document says %s", KeyCheckPlaintext(h.VolumeID), want)
	}
	// Writing the same fields reproduces the document byte for byte.
	again, err := h.Encode(mk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, file) {
		t.Fatalf("encode:\n%s\ndocument:\n%s", again, file)
	}
	if base64.StdEncoding.EncodeToString(h.WrappedDK) == "" {
		t.Fatal("empty wrapped dk")
	}
}
