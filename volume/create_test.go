package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
)

func TestCreateAndUnlock(t *testing.T) {
	f, dir, h := newTestVolume(t)
	if h.KeyID != fakeARN || h.EncryptionContext[ContextVolumeIDKey] != h.VolumeID || h.SectorSize != 4096 || h.NameMode != NameModeEncrypted || h.KMS != "fake" {
		t.Fatalf("header %+v", h)
	}
	for _, name := range []string{keywrap.HeaderFile, names.DirIDFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s mode %v", name, st.Mode())
		}
	}
	u, err := Unlock(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.Header.VolumeID != h.VolumeID || u.DK.Len() != 32 {
		t.Errorf("unlocked %+v", u.Header)
	}
	keys, err := openKeys(u)
	if err != nil {
		t.Fatal(err)
	}
	if !u.DK.Closed() || !u.Subkeys.HeaderMAC.Closed() || !u.Subkeys.Names.Closed() {
		t.Error("openKeys must zeroize the DK, the names key and the MAC key")
	}
	closeUnused(keys)
}

func TestCreateMissingDirIsPrivate(t *testing.T) {
	f := &fakeKMS{}
	dir := filepath.Join(t.TempDir(), "new", "backing")
	if _, err := Create(context.Background(), f, CreateOptions{Backing: dir, SectorSize: 512, PlaintextNames: true}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", st.Mode().Perm())
	}
	h, err := keywrap.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h.SectorSize != 512 || h.NameMode != NameModePlaintext {
		t.Errorf("header %+v", h)
	}
	// The mount reads the root's directory ID in every name mode.
	if _, err := os.Stat(filepath.Join(dir, names.DirIDFile)); err != nil {
		t.Errorf("plaintext-names volume without a root directory ID: %v", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	f := &fakeKMS{}
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, f, CreateOptions{Backing: dir}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty dir: %v", err)
	}
	_, vol, _ := newTestVolume(t)
	if _, err := Create(ctx, f, CreateOptions{Backing: vol}); err == nil || !strings.Contains(err.Error(), "already holds a volume") {
		t.Errorf("existing volume: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Create(ctx, f, CreateOptions{Backing: file}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file: %v", err)
	}
	if _, err := Create(ctx, f, CreateOptions{Backing: t.TempDir(), SectorSize: 3000}); err == nil {
		t.Error("bad sector size accepted")
	}
	// A key that cannot unwrap what it generated leaves nothing behind.
	bad := &fakeKMS{err: kmsErr(kmsclient.ErrAccessDenied, "AccessDeniedException")}
	empty := filepath.Join(t.TempDir(), "v")
	_, err := Create(ctx, bad, CreateOptions{Backing: empty})
	if !errors.Is(err, kmsclient.ErrAccessDenied) {
		t.Errorf("decrypt refused at create: %v", err)
	}
	if _, serr := os.Stat(empty); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("failed create left %s behind", empty)
	}
}

func TestUnlockErrors(t *testing.T) {
	f, dir, _ := newTestVolume(t)
	ctx := context.Background()

	f.setErr(kmsErr(kmsclient.ErrDisabled, "DisabledException"))
	_, err := Unlock(ctx, f, dir)
	var ke *KeyError
	if !errors.As(err, &ke) || ke.State != "Disabled" || !errors.Is(err, kmsclient.ErrDisabled) {
		t.Fatalf("disabled: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{fakeARN, "Disabled", "encvol kms enable-key " + fakeARN} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	f.setErr(kmsErr(kmsclient.ErrUnreachable, ""))
	if _, err := Unlock(ctx, f, dir); !errors.Is(err, kmsclient.ErrUnreachable) || !strings.Contains(err.Error(), "cannot be reached") {
		t.Errorf("unreachable: %v", err)
	}
	f.setErr(nil)

	// Flip the sector size in the header: it still parses, but the MAC
	// must catch it.
	path := filepath.Join(dir, keywrap.HeaderFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(string(data), "4096", "8192", 1)
	if tampered == string(data) {
		t.Fatalf("header does not contain the sector size as text:\n%s", data)
	}
	if err := os.WriteFile(path, []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Unlock(ctx, f, dir)
	if !errors.Is(err, keywrap.ErrHeaderMAC) || !strings.Contains(err.Error(), "failed its MAC check: the header was modified or belongs to another key") {
		t.Errorf("tampered header: %v", err)
	}
}
