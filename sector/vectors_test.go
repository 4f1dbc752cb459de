package sector

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// formatDoc is the format specification whose test vectors this test checks,
// so the document and the code cannot drift apart.
const formatDoc = "../docs/format.md"

// vector is one ```vector block of the "## Sector files" section of
// docs/format.md: "key = value" lines.
type vector struct {
	line   int
	fields map[string]string
}

func parseVectors(t *testing.T, path string) []vector {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var (
		out       []vector
		cur       *vector
		inSection bool
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		// Only the sector-file section belongs to this package.
		if cur == nil && strings.HasPrefix(line, "## ") {
			inSection = line == "## Sector files"
			continue
		}
		if !inSection {
			continue
		}
		switch {
		case cur == nil && line == "```vector":
			cur = &vector{line: n, fields: map[string]string{}}
		case cur != nil && line == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil && line != "":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s:%d: want key = value, got %q", path, n, line)
			}
			cur.fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: unterminated vector block", path, cur.line)
	}
	return out
}

func (v vector) str(t *testing.T, k string) string {
	t.Helper()
	s, ok := v.fields[k]
	if !ok {
		t.Fatalf("vector at line %d: missing %q", v.line, k)
	}
	return s
}

func (v vector) hex(t *testing.T, k string) []byte {
	t.Helper()
	b, err := hex.DecodeString(v.str(t, k))
	if err != nil {
		t.Fatalf("vector at line %d: %s: %v", v.line, k, err)
	}
	return b
}

func (v vector) int(t *testing.T, k string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(v.str(t, k), 10, 64)
	if err != nil {
		t.Fatalf("vector at line %d: %s: %v", v.line, k, err)
	}
	return n
}

// expect compares a computed value with the document's hex field.
func (v vector) expect(t *testing.T, k string, got []byte) {
	t.Helper()
	if want := v.str(t, k); want != hex.EncodeToString(got) {
		t.Errorf("vector at line %d: %s:\n doc  %s\n code %x", v.line, k, want, got)
	}
}

func mod256(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// sealWithNonce is sealOne with a given nonce, the one thing a vector must fix.
func sealWithNonce(t *testing.T, key, fileID, nonce []byte, index int64, pt []byte) []byte {
	t.Helper()
	aead := vectorAEAD(t, key, fileID)
	var id [FileIDSize]byte
	copy(id[:], fileID)
	aad := make([]byte, aadSize)
	fillAAD(aad, &id, index)
	return aead.Seal(append([]byte(nil), nonce...), nonce, pt, aad)
}

func TestFormatVectors(t *testing.T) {
	vs := parseVectors(t, formatDoc)
	kinds := map[string]int{}
	for _, v := range vs {
		kind := v.str(t, "kind")
		kinds[kind]++
		t.Run(fmt.Sprintf("%s@%d", kind, v.line), func(t *testing.T) {
			switch kind {
			case "file-key":
				sub, err := deriveFileKey(v.hex(t, "content_key"), v.hex(t, "file_id"))
				if err != nil {
					t.Fatal(err)
				}
				v.expect(t, "file_key", sub)
			case "sector":
				checkSectorVector(t, v)
			case "file":
				checkFileVector(t, v)
			case "sector-v2":
				checkSectorV2Vector(t, v)
			case "holes-v3":
				checkHolesVector(t, v)
			default:
				t.Fatalf("vector at line %d: unknown kind %q", v.line, kind)
			}
		})
	}
	for _, k := range []string{"file-key", "sector", "file", "sector-v2", "holes-v3"} {
		if kinds[k] == 0 {
			t.Errorf("%s has no %q vector", formatDoc, k)
		}
	}
}

func checkSectorVector(t *testing.T, v vector) {
	ss := int(v.int(t, "sector_size"))
	key, id, nonce := v.hex(t, "content_key"), v.hex(t, "file_id"), v.hex(t, "nonce")
	index := v.int(t, "index")
	var pt []byte
	if _, ok := v.fields["plaintext"]; ok {
		pt = v.hex(t, "plaintext")
	} else {
		pt = mod256(v.int(t, "plaintext_mod256"))
	}
	h := header{}
	copy(h.id[:], id)
	v.expect(t, "header", h.marshal())
	aad := make([]byte, aadSize)
	fillAAD(aad, &h.id, index)
	v.expect(t, "aad", aad)
	sealed := sealWithNonce(t, key, id, nonce, index, pt)
	if _, ok := v.fields["sealed"]; ok {
		v.expect(t, "sealed", sealed)
	} else {
		sum := sha256.Sum256(sealed)
		v.expect(t, "sealed_sha256", sum[:])
		v.expect(t, "tag", sealed[len(sealed)-TagSize:])
	}
	// The production open path accepts the documented bytes.
	c := newTestCipher(t, testKey(key), ss)
	got, err := c.OpenSector(nil, id, index, sealed)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("OpenSector of documented sector: %v", err)
	}
	if _, err := c.OpenSector(nil, id, index+1, sealed); err == nil {
		t.Fatal("documented sector opened at another index")
	}
}

func checkFileVector(t *testing.T, v vector) {
	ss := int(v.int(t, "sector_size"))
	key, id := v.hex(t, "content_key"), v.hex(t, "file_id")
	pt := mod256(v.int(t, "plaintext_mod256"))
	holes := map[int64]bool{}
	if s := v.fields["holes"]; s != "" {
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("holes: %v", err)
			}
			holes[n] = true
		}
	}
	h := header{}
	copy(h.id[:], id)
	backing := h.marshal()
	S := int64(ss)
	for i := int64(0); i*S < int64(len(pt)); i++ {
		sec := pt[i*S : min(int64(len(pt)), (i+1)*S)]
		if holes[i] {
			clear(sec) // a hole reads as zeros
			backing = append(backing, make([]byte, len(sec)+Overhead)...)
			continue
		}
		backing = append(backing, sealWithNonce(t, key, id, v.hex(t, fmt.Sprintf("nonce.%d", i)), i, sec)...)
	}
	if got := v.int(t, "backing_size"); got != int64(len(backing)) || BackingSize(int64(len(pt)), ss) != got {
		t.Errorf("backing_size: doc %d, built %d, BackingSize %d", got, len(backing), BackingSize(int64(len(pt)), ss))
	}
	sum := sha256.Sum256(backing)
	v.expect(t, "backing_sha256", sum[:])
	// The production read path returns the documented plaintext.
	path := filepath.Join(t.TempDir(), "vector")
	if err := os.WriteFile(path, backing, 0o600); err != nil {
		t.Fatal(err)
	}
	f := openBacking(t, path, ss)
	checkContent(t, f, newTestCipher(t, testKey(key), ss), pt)
}

// checkSectorV2Vector: a version 2 file whose only sector is final. The
// documented backing file reads back through a version 2 File, and the
// sector does not open as an inner one.
func checkSectorV2Vector(t *testing.T, v vector) {
	ss := int(v.int(t, "sector_size"))
	key, id, nonce := v.hex(t, "content_key"), v.hex(t, "file_id"), v.hex(t, "nonce")
	index := v.int(t, "index")
	pt := v.hex(t, "plaintext")
	h := header{version: Version2}
	copy(h.id[:], id)
	v.expect(t, "header", h.marshal())
	aad := h.aad(make([]byte, aadSizeMax), index, v.int(t, "final") == 1)
	v.expect(t, "aad", aad)
	aead := vectorAEAD(t, key, id)
	sealed := aead.Seal(append([]byte(nil), nonce...), nonce, pt, aad)
	v.expect(t, "sealed", sealed)

	c := newTestCipher(t, testKey(key), ss)
	c.UseVersion2()
	path := filepath.Join(t.TempDir(), "v2")
	if err := os.WriteFile(path, append(h.marshal(), sealed...), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(openBacking(t, path, ss), c)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("read of the documented file: %q, %v", got, err)
	}
	// As an inner sector (final 0) the same bytes do not open.
	if _, err := aead.Open(nil, nonce, sealed[len(nonce):], h.aad(make([]byte, aadSizeMax), index, false)); err == nil {
		t.Fatal("the documented final sector opens as an inner one")
	}
}

// checkHolesVector: the sealed hole map of a version 3 file. The
// documented plaintext, additional data and sealed value are what this
// package builds, and the sealed value opens to the documented extents.
func checkHolesVector(t *testing.T, v vector) {
	key, id, nonce := v.hex(t, "content_key"), v.hex(t, "file_id"), v.hex(t, "nonce")
	var ext []Extent
	for _, r := range strings.Split(v.str(t, "extents"), ",") {
		var e Extent
		if _, err := fmt.Sscanf(r, "%d-%d", &e.Start, &e.End); err != nil {
			t.Fatalf("extents %q: %v", r, err)
		}
		ext = append(ext, e)
	}
	h := &header{version: Version3}
	copy(h.id[:], id)
	v.expect(t, "plaintext", encodeHoles(ext))
	v.expect(t, "aad", h.holesAAD())
	aead := vectorAEAD(t, key, id)
	sealed := aead.Seal(append([]byte(nil), nonce...), nonce, encodeHoles(ext), h.holesAAD())
	v.expect(t, "sealed", sealed)
	got, err := openHoles(aead, h, v.hex(t, "sealed"))
	if err != nil || !slices.Equal(got, ext) {
		t.Fatalf("the documented map opens to %v, %v", got, err)
	}
	// Under another file ID it does not.
	h.id[0] ^= 1
	if _, err := openHoles(aead, h, sealed); !errors.Is(err, ErrHoleMap) {
		t.Fatalf("the documented map opened for another file ID: %v", err)
	}
}

// vectorAEAD is the sector AEAD of a vector's content key and file ID.
func vectorAEAD(t *testing.T, key, fileID []byte) cipher.AEAD {
	t.Helper()
	sub, err := deriveFileKey(key, fileID)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := newSectorAEAD(sub)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}
