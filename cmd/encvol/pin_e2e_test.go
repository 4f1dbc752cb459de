package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encvol/encvol/keywrap"
)

// Someone who can write the backing directory puts the header of a volume
// under their own key in place of the victim's. The next mount would
// unlock it and write everything under the attacker's data key; the pin
// recorded at the first mount refuses it, naming what changed and the
// command that accepts a change the owner made.
func TestMountRefusesSwappedHeader(t *testing.T) {
	e, backing, mnt := newVolumeEnv(t)
	e.must("mount", backing, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("before"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("umount", mnt)
	victim, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}

	e.must("kms", "create-key", "--alias", "alias/attacker")
	evil := filepath.Join(e.dir, "evil")
	e.must("create", "--backing", evil, "--key", "alias/attacker")
	hb, err := os.ReadFile(filepath.Join(evil, keywrap.HeaderFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(backing, keywrap.HeaderFile), hb, 0o600); err != nil {
		t.Fatal(err)
	}

	r := e.run("mount", backing, mnt)
	if r.code == 0 {
		e.run("umount", mnt)
		t.Fatalf("mount with a swapped header succeeded:\n%s", r)
	}
	for _, want := range []string{"volume ID", victim.VolumeID, "encvol trust " + backing} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal lacks %q:\n%s", want, r.stderr)
		}
	}
	if hasEncvolMount(t, mnt) {
		t.Fatal("a refused mount is mounted")
	}

	// The owner made the change: trust accepts it after proving the
	// header opens under a key they can use, and the mount gets past the
	// pin. This header's data key is another volume's, so the root's
	// authenticated mode and owner (format version 3) fail under it.
	r = e.must("trust", backing)
	if !strings.Contains(r.stdout, "pin changed") {
		t.Errorf("trust output: %s", r.stdout)
	}
	if r = e.run("mount", backing, mnt); r.code == 0 {
		e.run("umount", mnt)
		t.Errorf("a volume under another volume's data key mounted")
	} else if strings.Contains(r.stderr, "encvol trust") {
		t.Errorf("the pin still refuses the trusted header:\n%s", r.stderr)
	}

	known, err := os.ReadFile(filepath.Join(e.dir, "known-volumes.json"))
	if err != nil {
		t.Fatalf("no known-volumes file beside the configuration: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(e.dir, "known-volumes.json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("known-volumes file is %04o, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(string(known), victim.VolumeID) {
		t.Errorf("the old pin is still recorded:\n%s", known)
	}
}

// A volume_id in [volumes.NAME] pins the volume by configuration: another
// header is refused with the table to edit; trust does not override it.
func TestConfiguredVolumeIDPins(t *testing.T) {
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "b"), filepath.Join(dir, "m")
	e := newEnv(t, "")
	e.must("create", "--backing", backing)
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, mnt)
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(id string) {
		body := string(cfg) + "\n[volumes.v]\nbacking = \"" + backing + "\"\nmountpoint = \"" + mnt + "\"\nvolume_id = \"" + id + "\"\n"
		if err := os.WriteFile(e.cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("vol-00000000000000000000000000000001")
	r := e.run("mount", "v")
	if r.code == 0 || !strings.Contains(r.stderr, "[volumes.v]") || !strings.Contains(r.stderr, h.VolumeID) {
		t.Fatalf("mount against a configured volume_id: want a refusal naming the table and the header's ID, got\n%s", r)
	}
	if r := e.run("trust", "v"); r.code == 0 || !strings.Contains(r.stderr, "volume_id") {
		t.Fatalf("trust of a configured pin: want a refusal pointing at volume_id, got\n%s", r)
	}
	write(h.VolumeID)
	e.must("mount", "v")
	e.must("umount", mnt)
}

// Rekey and header restore change the header's key on purpose: they update
// the pin, so the next mount is not refused as a swapped header.
func TestRekeyAndRestoreUpdateThePin(t *testing.T) {
	e, backing, mnt := newVolumeEnv(t)
	e.must("kms", "create-key", "--alias", "alias/next")
	e.must("mount", backing, mnt)
	e.must("umount", mnt)
	hdr := filepath.Join(e.dir, "hdr")
	e.must("header", "backup", backing, hdr)
	e.must("rekey", backing, "--key", "alias/next")
	e.must("mount", backing, mnt)
	e.must("umount", mnt)
	e.must("header", "restore", backing, hdr)
	e.must("mount", backing, mnt)
	e.must("umount", mnt)
}
