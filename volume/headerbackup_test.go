package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/sector"
)

func headerPath(backing string) string { return filepath.Join(backing, keywrap.HeaderFile) }

// damageWrappedKey flips a bit inside the wrapped data key of the header
// in backing, so that it still parses but no longer unwraps.
func damageWrappedKey(t *testing.T, backing string) {
	t.Helper()
	raw, err := os.ReadFile(headerPath(backing))
	if err != nil {
		t.Fatal(err)
	}
	h, err := keywrap.ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	h.WrappedDK[len(h.WrappedDK)/2] ^= 1
	out, err := h.Encode(mustRandomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(headerPath(backing), out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderBackup(t *testing.T) {
	fx := newKAFixture(t, "", "local")
	ctx := context.Background()
	k := fx.key("local", "alias/a")
	backing, h := fx.volume("v", "local", "alias/a")
	file := filepath.Join(fx.dir, "hdr")
	rep, err := fx.cfg.BackupHeader(ctx, backing, file)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Verified || rep.VolumeID != h.VolumeID || rep.KeyID != k.Arn {
		t.Fatalf("report %+v", rep)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v, %v", st, err)
	}
	orig, _ := os.ReadFile(headerPath(backing))
	if got, _ := os.ReadFile(file); !bytes.Equal(got, orig) {
		t.Fatal("backup differs from the header")
	}

	// With the key disabled the backup is still written, marked unverified.
	if err := fx.adm["local"].DisableKey(ctx, k.Arn); err != nil {
		t.Fatal(err)
	}
	if rep, err = fx.cfg.BackupHeader(ctx, backing, file); err != nil || rep.Verified || !strings.Contains(rep.NotVerified, "Disabled") {
		t.Fatalf("backup with the key disabled: %+v, %v", rep, err)
	}
	if err := fx.adm["local"].EnableKey(ctx, k.Arn); err != nil {
		t.Fatal(err)
	}

	// A damaged header never replaces the good backup.
	damageWrappedKey(t, backing)
	if _, err := fx.cfg.BackupHeader(ctx, backing, file); err == nil || !strings.Contains(err.Error(), "not backed up") {
		t.Fatalf("backup of a damaged header: %v", err)
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, orig) {
		t.Fatal("the good backup was overwritten by a damaged header")
	}
	// A backup inside the backing directory is refused.
	sub := filepath.Join(backing, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(fx.dir, "link")
	if err := os.Symlink(sub, link); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(backing, "hdr"), filepath.Join(link, "hdr")} {
		if _, err := fx.cfg.BackupHeader(ctx, backing, f); !errors.Is(err, ErrBackupFile) {
			t.Fatalf("backup into the backing directory as %s: %v", f, err)
		}
	}
	os.Remove(sub)
	// Neither does the header of another volume.
	other, _ := fx.volume("o", "local", "alias/a")
	if _, err := fx.cfg.BackupHeader(ctx, other, file); !errors.Is(err, keywrap.ErrHeaderVolumeMismatch) {
		t.Fatalf("backup of another volume over the file: %v", err)
	}
}

func TestHeaderRestore(t *testing.T) {
	fx := newKAFixture(t, "", "local")
	ctx := context.Background()
	fx.key("local", "alias/a")
	b := fx.key("local", "alias/b")
	backing, h := fx.volume("v", "local", "alias/a")
	other, oh := fx.volume("o", "local", "alias/a")
	good, foreign := filepath.Join(fx.dir, "hdr"), filepath.Join(fx.dir, "ohdr")
	if _, err := fx.cfg.BackupHeader(ctx, backing, good); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.cfg.BackupHeader(ctx, other, foreign); err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(good)
	wantForeign := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrForeignHeader) || !strings.Contains(err.Error(), "is not a header of the volume") {
			t.Fatalf("%s: %v, want a refusal as another volume's header", what, err)
		}
	}

	// Intact current header: the foreign backup is refused by volume ID.
	_, err := fx.cfg.RestoreHeader(ctx, backing, foreign, false)
	wantForeign("foreign backup over an intact header", err)
	if !strings.Contains(err.Error(), oh.VolumeID) || !strings.Contains(err.Error(), h.VolumeID) {
		t.Errorf("refusal does not name both volumes: %v", err)
	}

	// Damaged current header: its volume ID proves nothing, the files do.
	damageWrappedKey(t, backing)
	_, err = fx.cfg.RestoreHeader(ctx, backing, foreign, false)
	wantForeign("foreign backup over a damaged header", err)
	rep, err := fx.cfg.RestoreHeader(ctx, backing, good, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.Proof, "decrypts the names") || rep.VolumeID != h.VolumeID {
		t.Fatalf("report %+v", rep)
	}
	if now, _ := os.ReadFile(headerPath(backing)); !bytes.Equal(now, orig) {
		t.Fatal("restored header differs from the backup")
	}
	u, err := Unlock(ctx, fx.adm["local"], backing)
	if err != nil {
		t.Fatal(err)
	}
	u.Close()

	// Missing header: the same.
	if err := os.Remove(headerPath(backing)); err != nil {
		t.Fatal(err)
	}
	_, err = fx.cfg.RestoreHeader(ctx, backing, foreign, false)
	wantForeign("foreign backup where the header is missing", err)
	if _, err := fx.cfg.RestoreHeader(ctx, backing, good, false); err != nil {
		t.Fatal(err)
	}

	// A tampered backup is refused, whatever the current header.
	bad := filepath.Join(fx.dir, "bad")
	bh, _ := keywrap.ParseHeader(orig)
	bh.SectorSize *= 2
	raw, _ := bh.Encode(mustRandomKey(t))
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.cfg.RestoreHeader(ctx, backing, bad, false); !errors.Is(err, keywrap.ErrHeaderCorrupt) || !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("tampered backup: %v", err)
	}

	// After a rekey, the old backup is this volume's but under the old key.
	if _, err := Rekey(ctx, fx.rekeyOpts(backing, "local", "local", "alias/b")); err != nil {
		t.Fatal(err)
	}
	rep, err = fx.cfg.RestoreHeader(ctx, backing, good, false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.KeyChanged || rep.OldKeyID != b.Arn || rep.KeyID == b.Arn {
		t.Fatalf("restore of a pre-rekey backup: %+v", rep)
	}
}

// TestHeaderRestoreEmptyVolume: with a damaged header and no files, nothing
// proves whose header a backup is; --force is needed.
func TestHeaderRestoreEmptyVolume(t *testing.T) {
	fx := newKAFixture(t, "", "local")
	ctx := context.Background()
	fx.key("local", "alias/a")
	backing := filepath.Join(fx.dir, "empty")
	if _, err := Create(ctx, fx.adm["local"], CreateOptions{Backing: backing, KMSName: "local", KeyRef: "alias/a"}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(fx.dir, "hdr")
	if _, err := fx.cfg.BackupHeader(ctx, backing, file); err != nil {
		t.Fatal(err)
	}
	damageWrappedKey(t, backing)
	if _, err := fx.cfg.RestoreHeader(ctx, backing, file, false); !errors.Is(err, ErrForeignHeader) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over an empty volume without --force: %v", err)
	}
	rep, err := fx.cfg.RestoreHeader(ctx, backing, file, true)
	if err != nil || !rep.Forced {
		t.Fatalf("restore with --force: %+v, %v", rep, err)
	}
}

// TestHeaderRestorePlaintextNames: a plaintext-names volume proves the key
// with a sector of a file.
func TestHeaderRestorePlaintextNames(t *testing.T) {
	fx := newKAFixture(t, "", "local")
	ctx := context.Background()
	fx.key("local", "alias/a")
	mk := func(name string) (string, string) {
		backing := filepath.Join(fx.dir, name)
		if _, err := Create(ctx, fx.adm["local"], CreateOptions{Backing: backing, KMSName: "local", KeyRef: "alias/a", PlaintextNames: true}); err != nil {
			t.Fatal(err)
		}
		writeSectorFile(t, fx.adm["local"], backing, "data.bin")
		file := filepath.Join(fx.dir, name+".hdr")
		if _, err := fx.cfg.BackupHeader(ctx, backing, file); err != nil {
			t.Fatal(err)
		}
		return backing, file
	}
	backing, good := mk("p")
	_, foreign := mk("q")
	damageWrappedKey(t, backing)
	if _, err := fx.cfg.RestoreHeader(ctx, backing, foreign, false); !errors.Is(err, ErrForeignHeader) {
		t.Fatalf("foreign backup: %v", err)
	}
	rep, err := fx.cfg.RestoreHeader(ctx, backing, good, false)
	if err != nil || !strings.Contains(rep.Proof, "file contents") {
		t.Fatalf("own backup: %+v, %v", rep, err)
	}
}

// writeSectorFile writes a small sector file into the root of backing
// under the volume's content key.
func writeSectorFile(t *testing.T, client kmsclient.Client, backing, name string) {
	t.Helper()
	u, err := Unlock(context.Background(), client, backing)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := openKeys(u)
	if err != nil {
		t.Fatal(err)
	}
	defer closeUnused(keys)
	f, err := os.OpenFile(filepath.Join(backing, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sf, err := sector.NewFile(f, u.Header.SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sf.WriteAt(keys.Content, []byte("some plaintext"), 0); err != nil {
		t.Fatal(err)
	}
}
