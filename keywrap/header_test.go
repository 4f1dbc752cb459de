package keywrap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testHeader(t testing.TB) *Header {
	t.Helper()
	id, err := NewVolumeID()
	if err != nil {
		t.Fatal(err)
	}
	return &Header{
		Version:           HeaderVersion,
		VolumeID:          id,
		KMS:               "local",
		KeyID:             "arn:aws:kms:local:000000000000:key/0b8e3c1e-1111-4222-8333-444455556666",
		WrappedDK:         bytes.Repeat([]byte{0xa5, 0x5a, 0x01}, 60),
		EncryptionContext: map[string]string{ContextVolumeID: id, "team": "ops <&>"},
		Cipher:            CipherAES256GCM,
		SectorSize:        4096,
		NameMode:          NameModeEncrypted,
		Created:           time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC),
	}
}

func testMACKey(t testing.TB) *Key {
	t.Helper()
	k, err := RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

func TestHeaderRoundTrip(t *testing.T) {
	h := testHeader(t)
	mk := testMACKey(t)
	data, err := h.Encode(mk)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) != 4 || lines[0] != "encvol-volume v1" || lines[3] != "" || !strings.HasPrefix(lines[2], "mac: ") {
		t.Fatalf("bad layout:\n%s", data)
	}
	got, err := ParseHeader(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.VerifyMAC(mk); err != nil {
		t.Fatal(err)
	}
	if got.VolumeID != h.VolumeID || got.KeyID != h.KeyID || !bytes.Equal(got.WrappedDK, h.WrappedDK) ||
		!got.Created.Equal(h.Created) || got.EncryptionContext["team"] != "ops <&>" || got.SectorSize != 4096 {
		t.Fatalf("round trip mismatch: %+v", got)
	}
	other := testMACKey(t)
	if err := got.VerifyMAC(other); !errors.Is(err, ErrHeaderMAC) {
		t.Fatalf("wrong key: %v, want ErrHeaderMAC", err)
	}
	if err := h.VerifyMAC(mk); err != nil {
		t.Fatalf("header verifies after Encode: %v", err)
	}
	if err := (&Header{}).VerifyMAC(mk); !errors.Is(err, ErrHeaderMAC) {
		t.Fatalf("unparsed header: %v", err)
	}
}

// TestHeaderFieldTamper changes one field at a time, keeps the syntax valid
// and the old MAC line: every change must be caught by the MAC.
func TestHeaderFieldTamper(t *testing.T) {
	mk := testMACKey(t)
	base := testHeader(t)
	data, err := base.Encode(mk)
	if err != nil {
		t.Fatal(err)
	}
	macLine := data[bytes.LastIndex(data[:len(data)-1], []byte("\n"))+1:]
	otherID, _ := NewVolumeID()
	cases := map[string]func(h *Header){
		"volume_id": func(h *Header) {
			h.VolumeID = otherID
			h.EncryptionContext = map[string]string{ContextVolumeID: otherID, "team": "ops <&>"}
		},
		"kms":                func(h *Header) { h.KMS = "corp" },
		"key_id":             func(h *Header) { h.KeyID += "x" },
		"wrapped_dk":         func(h *Header) { h.WrappedDK[7] ^= 1 },
		"encryption_context": func(h *Header) { h.EncryptionContext["team"] = "dev" },
		"context_added":      func(h *Header) { h.EncryptionContext["extra"] = "" },
		"sector_size":        func(h *Header) { h.SectorSize = 512 },
		"name_mode":          func(h *Header) { h.NameMode = NameModePlaintext },
		"created":            func(h *Header) { h.Created = h.Created.Add(time.Second) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			h, err := ParseHeader(data)
			if err != nil {
				t.Fatal(err)
			}
			mutate(h)
			body, err := h.body()
			if err != nil {
				t.Fatal(err)
			}
			forged := append(macInput(HeaderVersion, body), macLine...)
			p, err := ParseHeader(forged)
			if err != nil {
				t.Fatalf("forged header does not parse: %v", err)
			}
			if err := p.VerifyMAC(mk); !errors.Is(err, ErrHeaderMAC) {
				t.Fatalf("VerifyMAC = %v, want ErrHeaderMAC", err)
			}
		})
	}
}

// TestHeaderByteFlips changes every byte (one rotating bit, and all bits):
// the result must never both parse and verify.
func TestHeaderByteFlips(t *testing.T) {
	mk := testMACKey(t)
	data, err := testHeader(t).Encode(mk)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(data))
	for i := range data {
		for _, mask := range []byte{1 << (i % 8), 0xff} {
			copy(buf, data)
			buf[i] ^= mask
			h, err := ParseHeader(buf)
			if err == nil {
				err = h.VerifyMAC(mk)
			}
			if !errors.Is(err, ErrHeaderMAC) && !errors.Is(err, ErrHeaderCorrupt) && !errors.Is(err, ErrHeaderVersion) {
				t.Fatalf("flip byte %d mask %#x: err = %v", i, mask, err)
			}
		}
	}
}

func TestHeaderTruncated(t *testing.T) {
	data, err := testHeader(t).Encode(testMACKey(t))
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(data) {
		if _, err := ParseHeader(data[:n]); !errors.Is(err, ErrHeaderCorrupt) {
			t.Fatalf("truncated to %d bytes: %v, want ErrHeaderCorrupt", n, err)
		}
	}
}

func TestParseHeaderStrict(t *testing.T) {
	mk := testMACKey(t)
	h := testHeader(t)
	data, err := h.Encode(mk)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	body := strings.Split(s, "\n")[1]
	withBody := func(b string) []byte { return []byte(strings.Replace(s, body, b, 1)) }
	cases := []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"magic", []byte(strings.Replace(s, "encvol-volume", "encvol-volumes", 1)), ErrHeaderCorrupt, "not an encvol volume header"},
		{"magic version", []byte(strings.Replace(s, "encvol-volume v1", "encvol-volume v6", 1)), ErrHeaderVersion, "format version 6"},
		{"magic version garbage", []byte(strings.Replace(s, "encvol-volume v1", "encvol-volume v01", 1)), ErrHeaderCorrupt, "bad magic"},
		{"body version", withBody(strings.Replace(body, `"version":1`, `"version":6`, 1)), ErrHeaderVersion, "body version 6"},
		{"key_check in version 1", withBody(strings.Replace(body, `"encryption_context"`, `"key_check":"QUJD","encryption_context"`, 1)), ErrHeaderCorrupt, "key_check in a version 1"},
		{"version 2 without key_check", []byte(strings.Replace(strings.Replace(s, "encvol-volume v1", "encvol-volume v2", 1), `"version":1`, `"version":2`, 1)), ErrHeaderCorrupt, "key_check has 0 bytes"},
		{"magic and body versions differ", []byte(strings.Replace(s, "encvol-volume v1", "encvol-volume v2", 1)), ErrHeaderCorrupt, "magic line says version 2"},
		{"body version float", withBody(strings.Replace(body, `"version":1`, `"version":1.0`, 1)), ErrHeaderCorrupt, "not a plain integer"},
		{"body version string", withBody(strings.Replace(body, `"version":1`, `"version":"1"`, 1)), ErrHeaderCorrupt, "not a plain integer"},
		{"unknown field", withBody(strings.Replace(body, `"version":1,`, `"version":1,"x":1,`, 1)), ErrHeaderCorrupt, "unknown field"},
		{"duplicate field", withBody(strings.Replace(body, `"kms":"local",`, `"kms":"local","kms":"corp",`, 1)), ErrHeaderCorrupt, `duplicate field "kms"`},
		{"duplicate context key", withBody(strings.Replace(body, `"team":`, `"team":"a","team":`, 1)), ErrHeaderCorrupt, `duplicate field "team"`},
		{"bad base64", withBody(strings.Replace(body, `"wrapped_dk":"`, `"wrapped_dk":"*`, 1)), ErrHeaderCorrupt, "base64"},
		{"unpadded base64", withBody(strings.Replace(body, `"wrapped_dk":"`, `"wrapped_dk":"QQ`, 1)), ErrHeaderCorrupt, "base64"},
		{"spacing", withBody(strings.Replace(body, `"version":1`, `"version": 1`, 1)), ErrHeaderCorrupt, "canonical"},
		{"missing field", withBody(strings.Replace(body, `"cipher":"AES-256-GCM",`, ``, 1)), ErrHeaderCorrupt, "cipher"},
		{"bad cipher", withBody(strings.Replace(body, `AES-256-GCM`, `AES-128-GCM`, 1)), ErrHeaderCorrupt, "cipher"},
		{"bad sector", withBody(strings.Replace(body, `"sector_size":4096`, `"sector_size":4000`, 1)), ErrHeaderCorrupt, "sector_size"},
		{"bad name mode", withBody(strings.Replace(body, `"encrypted"`, `"none"`, 1)), ErrHeaderCorrupt, "name_mode"},
		{"bad created", withBody(strings.Replace(body, `2026-05-01T12:30:00Z`, `2026-05-01T12:30:00+00:00`, 1)), ErrHeaderCorrupt, "created"},
		{"context mismatch", withBody(strings.Replace(body, `"encvol:volume-id":"vol-`, `"encvol:volume-id":"vox-`, 1)), ErrHeaderCorrupt, "encryption_context"},
		{"trailing data", append(append([]byte(nil), data...), 'x'), ErrHeaderCorrupt, "after the mac line"},
		{"upper mac", []byte(s[:strings.Index(s, "mac: ")+5] + strings.ToUpper(s[strings.Index(s, "mac: ")+5:])), ErrHeaderCorrupt, "lowercase hex"},
		{"not json", withBody("[]"), ErrHeaderCorrupt, "JSON object"},
		{"too big", append(bytes.Repeat([]byte("x"), MaxHeaderSize), data...), ErrHeaderCorrupt, "limit"},
		{"empty", nil, ErrHeaderCorrupt, "magic"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseHeader(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %q does not mention %q", err, c.msg)
			}
		})
	}
}

func TestWriteReadHeader(t *testing.T) {
	dir := t.TempDir()
	mk := testMACKey(t)
	h := testHeader(t)
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := WriteHeader(dir, h, mk); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, HeaderFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	got, err := ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.VerifyMAC(mk); err != nil {
		t.Fatal(err)
	}
	// Rewriting replaces the file in place.
	h.KMS = "corp"
	if err := WriteHeader(dir, h, mk); err != nil {
		t.Fatal(err)
	}
	if got, err = ReadHeader(dir); err != nil || got.KMS != "corp" {
		t.Fatalf("reread: %v %v", got, err)
	}
	assertOnlyFiles(t, dir, HeaderFile)
	// A bad header is refused before anything is written.
	h.SectorSize = 3
	if err := WriteHeader(dir, h, mk); !errors.Is(err, ErrHeaderCorrupt) {
		t.Fatalf("invalid header written: %v", err)
	}
	if _, err := ReadHeader(t.TempDir()); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), HeaderFile) {
		t.Fatalf("missing header: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, HeaderFile), []byte("encvol-volume v1\n{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHeader(dir); !errors.Is(err, ErrHeaderCorrupt) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("truncated header: %v", err)
	}
}

func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func TestBackupRestoreHeader(t *testing.T) {
	dir := t.TempDir()
	mk := testMACKey(t)
	h := testHeader(t)
	if err := WriteHeader(dir, h, mk); err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(filepath.Join(dir, HeaderFile))
	bak := filepath.Join(t.TempDir(), "vol.hdr")
	if err := BackupHeader(dir, bak); err != nil {
		t.Fatal(err)
	}
	if err := BackupHeader(dir, bak); err != nil {
		t.Fatalf("refreshing a backup of the same volume: %v", err)
	}
	// Damage the live header, then restore.
	if err := os.WriteFile(filepath.Join(dir, HeaderFile), orig[:40], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := BackupHeader(dir, filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrHeaderCorrupt) {
		t.Fatalf("backup of corrupt header: %v", err)
	}
	if err := RestoreHeader(dir, bak); err != nil {
		t.Fatal(err)
	}
	got, err := ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.VerifyMAC(mk); err != nil {
		t.Fatal(err)
	}
	// The header of another volume is not restored over this one.
	dir2 := t.TempDir()
	if err := WriteHeader(dir2, testHeader(t), mk); err != nil {
		t.Fatal(err)
	}
	if err := RestoreHeader(dir2, bak); !errors.Is(err, ErrHeaderVolumeMismatch) {
		t.Fatalf("cross-volume restore: %v", err)
	}
	if err := BackupHeader(dir2, bak); !errors.Is(err, ErrHeaderVolumeMismatch) {
		t.Fatalf("backup over other volume's backup: %v", err)
	}
	if err := RestoreHeaderForce(dir2, bak); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadHeader(dir2); got.VolumeID != h.VolumeID {
		t.Fatal("forced restore did not replace header")
	}
	// A file that does not parse is never restored, and never overwritten by a backup.
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RestoreHeader(dir, junk); !errors.Is(err, ErrHeaderCorrupt) {
		t.Fatalf("restore of junk: %v", err)
	}
	if err := BackupHeader(dir, junk); err == nil {
		t.Fatal("backup overwrote a non-header file")
	}
	assertOnlyFiles(t, dir, HeaderFile)
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for i, data := range []string{"one", "two-longer", ""} {
		if err := WriteFileAtomic(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Fatalf("round %d: %q %v", i, got, err)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != 0o640 {
			t.Fatalf("mode %v", st.Mode())
		}
	}
	assertOnlyFiles(t, dir, "f")
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Fatal("write into missing dir succeeded")
	}
}

func TestNewVolumeID(t *testing.T) {
	a, _ := NewVolumeID()
	b, _ := NewVolumeID()
	if a == b || !volumeIDRe.MatchString(a) {
		t.Fatalf("%q %q", a, b)
	}
}

func FuzzParseHeader(f *testing.F) {
	mk, err := NewKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	defer mk.Close()
	h := testHeader(f)
	data, err := h.Encode(mk)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("encvol-volume v1\n{}\nmac: 00\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseHeader(in)
		if err != nil {
			if !errors.Is(err, ErrHeaderCorrupt) && !errors.Is(err, ErrHeaderVersion) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		// Whatever parses is canonical: encoding it again gives the same
		// bytes, except for the MAC, which the fuzzer cannot forge.
		out, err := h.Encode(mk)
		if err != nil {
			t.Fatalf("parsed header does not encode: %v", err)
		}
		macAt := bytes.LastIndex(in, []byte("mac: "))
		if !bytes.Equal(out[:macAt], in[:macAt]) {
			t.Fatalf("not canonical:\n%q\n%q", in, out)
		}
		fresh, err := ParseHeader(in)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(out, in) != (fresh.VerifyMAC(mk) == nil) {
			t.Fatal("VerifyMAC disagrees with encoding")
		}
	})
}
