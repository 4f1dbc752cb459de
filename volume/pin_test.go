package volume

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/encvol/encvol/keywrap"
)

func TestPinKeyChangeRefused(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "b")
	if err := os.MkdirAll(backing, 0o700); err != nil {
		t.Fatal(err)
	}
	// The pin file prunes backings without a header; this one has one.
	if err := os.WriteFile(filepath.Join(backing, keywrap.HeaderFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Config{Path: filepath.Join(dir, "encvol.toml")}
	h := &keywrap.Header{VolumeID: "vol-0123456789abcdef0123456789abcdef", KeyID: "arn:aws:kms:local:000000000000:key/a", KMS: "local"}
	if err := c.CheckPin("", VolumeConfig{}, backing, h); err != nil {
		t.Fatalf("no pin yet: %v", err)
	}
	if err := c.RecordPin(backing, h); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPin("", VolumeConfig{}, backing, h); err != nil {
		t.Fatalf("same header: %v", err)
	}
	other := *h
	other.KeyID = "arn:aws:kms:local:000000000000:key/attacker"
	err := c.CheckPin("", VolumeConfig{}, backing, &other)
	var pe *PinError
	if !errors.As(err, &pe) || pe.Field != "key" || !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("key changed: %v, want a PinError on the key", err)
	}
	// Another backing directory is not affected, and a removed one is
	// dropped from the file at the next write.
	if err := c.CheckPin("", VolumeConfig{}, filepath.Join(dir, "other"), &other); err != nil {
		t.Fatalf("unpinned backing: %v", err)
	}
	if err := os.RemoveAll(backing); err != nil {
		t.Fatal(err)
	}
	b2 := filepath.Join(dir, "b2")
	os.MkdirAll(b2, 0o700)
	os.WriteFile(filepath.Join(b2, keywrap.HeaderFile), []byte("x"), 0o600)
	if err := c.RecordPin(b2, h); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.PinnedFor(backing); ok {
		t.Error("the pin of a removed backing directory was kept")
	}
}
