package volume

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
)

func testManifest(t testing.TB) *Manifest {
	t.Helper()
	id, err := NewSnapshotID()
	if err != nil {
		t.Fatal(err)
	}
	return &Manifest{SnapshotID: id, Name: "nightly", VolumeID: "vol-00112233445566778899aabbccddeeff",
		Created: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), Entries: 42, HeaderSHA256: strings.Repeat("ab", 32)}
}

func testDK(t testing.TB) *keywrap.Key {
	t.Helper()
	k, err := keywrap.RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// TestManifestRoundTrip: what Encode writes parses back to the same fields
// and authenticates under the same key, and under no other.
func TestManifestRoundTrip(t *testing.T) {
	dk := testDK(t)
	m := testManifest(t)
	b, err := m.Encode(dk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(b)
	if err != nil {
		t.Fatalf("parse what Encode wrote: %v\n%s", err, b)
	}
	if got.SnapshotID != m.SnapshotID || got.Name != m.Name || got.VolumeID != m.VolumeID ||
		!got.Created.Equal(m.Created) || got.Entries != m.Entries || got.HeaderSHA256 != m.HeaderSHA256 {
		t.Fatalf("round trip changed the manifest: %+v, want %+v", got, m)
	}
	if err := got.Verify(dk); err != nil {
		t.Fatalf("verify under the writing key: %v", err)
	}
	if err := got.Verify(testDK(t)); !errors.Is(err, ErrManifestMAC) {
		t.Fatalf("verify under another key: %v, want ErrManifestMAC", err)
	}
}

// TestManifestTamper: changing any single byte of the file is refused,
// either by the parser or by the MAC.
func TestManifestTamper(t *testing.T) {
	dk := testDK(t)
	b, err := testManifest(t).Encode(dk)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		for _, delta := range []byte{1, 0x20} {
			c := bytes.Clone(b)
			c[i] ^= delta
			m, err := ParseManifest(c)
			if err != nil {
				if !errors.Is(err, ErrManifestCorrupt) {
					t.Fatalf("byte %d changed: parse error %v does not wrap ErrManifestCorrupt", i, err)
				}
				continue
			}
			if err := m.Verify(dk); !errors.Is(err, ErrManifestMAC) {
				t.Fatalf("byte %d changed (%q): accepted (verify: %v)", i, c[i], err)
			}
		}
	}
}

// TestManifestRejects: non-canonical or incomplete files are corrupt.
func TestManifestRejects(t *testing.T) {
	dk := testDK(t)
	good, err := testManifest(t).Encode(dk)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	cases := map[string]string{
		"empty":          "",
		"no newline":     strings.TrimSuffix(string(good), "\n"),
		"extra line":     string(good) + "\n",
		"spaces in body": lines[0] + strings.Replace(lines[1], `":`, `": `, 1) + lines[2],
		"unknown field":  lines[0] + strings.Replace(lines[1], `{"version":1,`, `{"version":1,"x":1,`, 1) + lines[2],
		"version 2":      lines[0] + strings.Replace(lines[1], `"version":1`, `"version":2`, 1) + lines[2],
		"upper-case mac": lines[0] + lines[1] + strings.ToUpper(lines[2]),
		"bad name":       lines[0] + strings.Replace(lines[1], `"name":"nightly"`, `"name":".hidden"`, 1) + lines[2],
	}
	for name, text := range cases {
		if _, err := ParseManifest([]byte(text)); !errors.Is(err, ErrManifestCorrupt) {
			t.Errorf("%s: %v, want ErrManifestCorrupt", name, err)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	k, err := keywrap.RandomKey(32)
	if err != nil {
		f.Fatal(err)
	}
	defer k.Close()
	good, err := testManifest(f).Encode(k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(manifestMagicLine))
	f.Add([]byte(manifestMagicLine + "{}\nmac: \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrManifestCorrupt) {
				t.Fatalf("error %v does not wrap ErrManifestCorrupt", err)
			}
			return
		}
		// What parses is canonical: encoding it again gives the same body.
		body, err := m.body()
		if err != nil {
			t.Fatalf("parsed manifest does not encode: %v", err)
		}
		if !bytes.Contains(b, body) {
			t.Fatalf("parsed manifest encodes to another body")
		}
	})
}

// formatVector reads the "# vector: name" block of docs/format.md as
// key = value pairs.
func formatVector(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "format.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "# vector: "+name+"\n")
	if !ok {
		t.Fatalf("docs/format.md has no vector %q", name)
	}
	block, _, _ = strings.Cut(block, "```")
	out := map[string]string{}
	for _, line := range strings.Split(block, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// TestManifestVector: the manifest of docs/format.md, written by this code
// under the vector's DK, is byte for byte the vector's.
func TestManifestVector(t *testing.T) {
	v := formatVector(t, "snapshot-manifest")
	raw, err := hex.DecodeString(v["dk"])
	if err != nil {
		t.Fatal(err)
	}
	dk, err := keywrap.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Close()
	mk, err := keywrap.DeriveSubkey(dk, keywrap.LabelSnapshotManifest, keywrap.SubkeyLen)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(mk.Bytes()); got != v["manifest_key"] {
		t.Errorf("manifest key %s, want %s", got, v["manifest_key"])
	}
	mk.Close()
	file := v["line1"] + "\n" + v["body"] + "\nmac: " + v["mac"] + "\n"
	m, err := ParseManifest([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(dk); err != nil {
		t.Fatalf("the vector does not verify: %v", err)
	}
	again, err := m.Encode(dk)
	if err != nil || string(again) != file {
		t.Fatalf("encoding the vector's manifest gives\n%s\nwant\n%s (%v)", again, file, err)
	}
}
