package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
)

// kaFixture is a configuration with one or two local key stores ("local",
// and "other" when asked for), customer keys and ways to make volumes.
type kaFixture struct {
	t   testing.TB
	dir string
	cfg *Config
	adm map[string]kmsclient.Admin
}

func newKAFixture(t testing.TB, extra string, stores ...string) *kaFixture {
	t.Helper()
	dir := t.TempDir()
	var body strings.Builder
	for _, s := range stores {
		fmt.Fprintf(&body, "[kms.%s]\ntype = \"local\"\npath = %q\n", s, filepath.Join(dir, "kms-"+s))
	}
	body.WriteString("[defaults]\nkms = \"" + stores[0] + "\"\n" + extra)
	cfg, err := ParseConfig(filepath.Join(dir, "encvol.toml"), []byte(body.String()))
	if err != nil {
		t.Fatal(err)
	}
	fx := &kaFixture{t: t, dir: dir, cfg: cfg, adm: map[string]kmsclient.Admin{}}
	for _, s := range stores {
		adm, err := kmsclient.NewAdmin(context.Background(), s, cfg.KMS[s])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { adm.Close() })
		fx.adm[s] = adm
	}
	return fx
}

func (fx *kaFixture) key(store, alias string) kmsclient.KeyInfo {
	fx.t.Helper()
	k, err := fx.adm[store].CreateKey(context.Background(), kmsclient.CreateKeyInput{Alias: alias})
	if err != nil {
		fx.t.Fatal(err)
	}
	return k
}

// volume creates a volume under key in store with one entry in its root,
// whose backing name is encrypted under the volume's names key.
func (fx *kaFixture) volume(name, store, key string) (string, *keywrap.Header) {
	fx.t.Helper()
	backing := filepath.Join(fx.dir, name)
	h, err := Create(context.Background(), fx.adm[store], CreateOptions{Backing: backing, KMSName: store, KeyRef: key})
	if err != nil {
		fx.t.Fatal(err)
	}
	u, err := Unlock(context.Background(), fx.adm[store], backing)
	if err != nil {
		fx.t.Fatal(err)
	}
	defer u.Close()
	codec, err := names.NewCodec(u.Subkeys.Names, false)
	if err != nil {
		fx.t.Fatal(err)
	}
	defer codec.Close()
	dfd, err := unix.Open(backing, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		fx.t.Fatal(err)
	}
	defer unix.Close(dfd)
	dirID, err := names.ReadDirID(dfd)
	if err != nil {
		fx.t.Fatal(err)
	}
	enc, _, err := codec.EncryptName(dirID, "hello.txt")
	if err != nil {
		fx.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(backing, enc), []byte("sector file stand-in"), 0o600); err != nil {
		fx.t.Fatal(err)
	}
	return backing, h
}

// newRekeyFixture is one local KMS with keys alias/a and alias/b and a
// volume under alias/a.
func newRekeyFixture(t *testing.T) (*kaFixture, string, *keywrap.Header) {
	t.Helper()
	fx := newKAFixture(t, "", "local")
	fx.key("local", "alias/a")
	fx.key("local", "alias/b")
	backing, h := fx.volume("v", "local", "alias/a")
	return fx, backing, h
}

func (fx *kaFixture) rekeyOpts(backing, src, dst, key string) RekeyOptions {
	return RekeyOptions{Backing: backing, Src: fx.adm[src].(RekeyClient), SrcKMS: src, Dst: fx.adm[dst].(RekeyClient), DstKMS: dst,
		DstConfig: fx.cfg.KMS[dst], KeyRef: key}
}

// dataSum hashes every backing file except the header.
func dataSum(t *testing.T, backing string) [32]byte {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == keywrap.HeaderFile {
			return err
		}
		b, err := os.ReadFile(p)
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func TestRekeyWithinOneKMS(t *testing.T) {
	fx := newKAFixture(t, "", "local")
	ctx := context.Background()
	a, b := fx.key("local", "alias/a"), fx.key("local", "alias/b")
	backing, old := fx.volume("v", "local", "alias/a")
	before := dataSum(t, backing)

	res, err := Rekey(ctx, fx.rekeyOpts(backing, "local", "local", "alias/b"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != RekeyReEncrypt || res.Unchanged || res.OldKeyID != a.Arn || res.KeyID != b.Arn || res.VolumeID != old.VolumeID || res.Mountpoint != "" {
		t.Fatalf("result %+v", res)
	}
	nh, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	if nh.KeyID != b.Arn || nh.KMS != "local" || nh.VolumeID != old.VolumeID || nh.EncryptionContext[ContextVolumeIDKey] != old.VolumeID ||
		!nh.Created.Equal(old.Created) || nh.SectorSize != old.SectorSize || nh.NameMode != old.NameMode || bytes.Equal(nh.WrappedDK, old.WrappedDK) {
		t.Fatalf("header after rekey %+v (before %+v)", nh, old)
	}
	if dataSum(t, backing) != before {
		t.Fatal("rekey changed a backing file other than the header")
	}
	if st, err := os.Stat(filepath.Join(backing, keywrap.HeaderFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("header mode after rekey: %v %v", st, err)
	}

	// The old key no longer matters; the new one does.
	if err := fx.adm["local"].DisableKey(ctx, a.Arn); err != nil {
		t.Fatal(err)
	}
	u, err := Unlock(ctx, fx.adm["local"], backing)
	if err != nil {
		t.Fatalf("unlock under the new key with the old one disabled: %v", err)
	}
	u.Close()
	if err := fx.adm["local"].DisableKey(ctx, b.Arn); err != nil {
		t.Fatal(err)
	}
	if _, err := Unlock(ctx, fx.adm["local"], backing); !errors.Is(err, kmsclient.ErrDisabled) {
		t.Fatalf("unlock with the new key disabled: %v", err)
	}

	// The rewrap is in the audit log under both keys, bound to the volume.
	for _, c := range []struct{ key, op string }{{"alias/a", "ReEncryptFrom"}, {"alias/b", "ReEncryptTo"}} {
		recs, err := fx.adm["local"].Audit(ctx, kmsclient.AuditFilter{KeyRef: c.key})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range recs {
			found = found || (r.Operation == c.op && r.Result == "ok" && r.EncryptionContext[ContextVolumeIDKey] == old.VolumeID)
		}
		if !found {
			t.Errorf("audit of %s has no %s of %s: %+v", c.key, c.op, old.VolumeID, recs)
		}
	}
}

func TestRekeyAcrossKMS(t *testing.T) {
	fx := newKAFixture(t, "", "local", "other")
	ctx := context.Background()
	fx.key("local", "alias/a")
	b := fx.key("other", "alias/b")
	backing, old := fx.volume("v", "local", "alias/a")
	res, err := Rekey(ctx, fx.rekeyOpts(backing, "local", "other", "alias/b"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != RekeyDecryptEncrypt || res.KMS != "other" || res.KeyID != b.Arn {
		t.Fatalf("result %+v", res)
	}
	nh, err := keywrap.ReadHeader(backing)
	if err != nil || nh.KMS != "other" || nh.KeyID != b.Arn || nh.VolumeID != old.VolumeID {
		t.Fatalf("header %+v, %v", nh, err)
	}
	u, err := Unlock(ctx, fx.adm["other"], backing)
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	recs, err := fx.adm["other"].Audit(ctx, kmsclient.AuditFilter{KeyRef: "alias/b"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range recs {
		found = found || (r.Operation == "Encrypt" && r.EncryptionContext[ContextVolumeIDKey] == old.VolumeID)
	}
	if !found {
		t.Errorf("audit of the new KMS has no Encrypt bound to the volume: %+v", recs)
	}
	// The rewrap's check unwraps under the new key: the volume counts as
	// using it.
	if uses := kmsclient.VolumesUsingKey(recs, old.Created.Add(-1)); len(uses) != 1 || uses[0].VolumeID != old.VolumeID {
		t.Errorf("volumes using the new key: %+v", uses)
	}
}

func TestRekeyRerunIsUnchanged(t *testing.T) {
	fx, backing, _ := newRekeyFixture(t)
	if _, err := Rekey(context.Background(), fx.rekeyOpts(backing, "local", "local", "alias/b")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile))
	res, err := Rekey(context.Background(), fx.rekeyOpts(backing, "local", "local", "alias/b"))
	if err != nil || !res.Unchanged || res.Method != "" {
		t.Fatalf("second rekey: %+v, %v", res, err)
	}
	if after, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile)); !bytes.Equal(before, after) {
		t.Fatal("a rekey to the key the volume is under rewrote the header")
	}
}

func TestRekeyRefusals(t *testing.T) {
	fx := newKAFixture(t, "[policy]\nrequire_customer_key = true\n", "local")
	ctx := context.Background()
	fx.key("local", "alias/a")
	off := fx.key("local", "alias/off")
	if err := fx.adm["local"].DisableKey(ctx, off.Arn); err != nil {
		t.Fatal(err)
	}
	gone := fx.key("local", "alias/gone")
	if _, err := fx.adm["local"].ScheduleKeyDeletion(ctx, gone.Arn, 7); err != nil {
		t.Fatal(err)
	}
	service, err := fx.adm["local"].DefaultKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	backing, _ := fx.volume("v", "local", "alias/a")
	header, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile))
	for _, c := range []struct {
		key  string
		kind error
		want string
	}{
		{"alias/off", kmsclient.ErrDisabled, "is Disabled, and only an Enabled key"},
		{"alias/gone", kmsclient.ErrPendingDeletion, "is PendingDeletion"},
		{"alias/nope", kmsclient.ErrNotFound, "alias/nope"},
		{service, ErrPolicy, "require_customer_key"},
	} {
		opt := fx.rekeyOpts(backing, "local", "local", c.key)
		opt.Policy = fx.cfg
		_, err := Rekey(ctx, opt)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("rekey to %s: %v; want %v saying %q", c.key, err, c.kind, c.want)
		}
		if now, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile)); !bytes.Equal(now, header) {
			t.Fatalf("a refused rekey to %s changed the header", c.key)
		}
	}
}

func TestCheckRekeyTarget(t *testing.T) {
	ok := kmsclient.KeyInfo{Arn: "arn:k", State: "Enabled", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT"}
	if err := checkRekeyTarget(ok, "alias/k", "local"); err != nil {
		t.Fatal(err)
	}
	rsa := ok
	rsa.KeySpec, rsa.KeyUsage = "RSA_2048", "SIGN_VERIFY"
	if err := checkRekeyTarget(rsa, "alias/k", "local"); !errors.Is(err, ErrRekeyTarget) || !strings.Contains(err.Error(), "asymmetric") {
		t.Errorf("RSA key: %v", err)
	}
	mac := ok
	mac.KeyUsage = "GENERATE_VERIFY_MAC"
	if err := checkRekeyTarget(mac, "alias/k", "local"); !errors.Is(err, ErrRekeyTarget) || !strings.Contains(err.Error(), "GENERATE_VERIFY_MAC") {
		t.Errorf("MAC key: %v", err)
	}
	imp := ok
	imp.State = "PendingImport"
	if err := checkRekeyTarget(imp, "alias/k", "local"); !errors.Is(err, kmsclient.ErrPendingImport) {
		t.Errorf("PendingImport key: %v", err)
	}
}

// TestRekeyDamagedHeader: a header whose MAC fails is not rewritten under
// a new key (that would launder the damage).
func TestRekeyDamagedHeader(t *testing.T) {
	fx, backing, h := newRekeyFixture(t)
	h.SectorSize *= 2 // still a valid header, but not the one the MAC covers
	raw, err := h.Encode(mustRandomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(backing, keywrap.HeaderFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Rekey(context.Background(), fx.rekeyOpts(backing, "local", "local", "alias/b")); !errors.Is(err, keywrap.ErrHeaderMAC) {
		t.Fatalf("rekey of a header with a bad MAC: %v", err)
	}
	if now, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile)); !bytes.Equal(now, raw) {
		t.Fatal("the damaged header was rewritten")
	}
}

func mustRandomKey(t *testing.T) *keywrap.Key {
	t.Helper()
	k, err := keywrap.RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// BenchmarkRekey: one rekey within the local KMS (unwrap, ReEncrypt, the
// checking unwrap, the atomic header write). Nothing depends on the size
// of the volume.
func BenchmarkRekey(b *testing.B) {
	fx := newKAFixture(b, "", "local")
	fx.key("local", "alias/a")
	fx.key("local", "alias/b")
	backing, _ := fx.volume("v", "local", "alias/a")
	keys := []string{"alias/b", "alias/a"}
	for i := 0; b.Loop(); i++ {
		if _, err := Rekey(context.Background(), fx.rekeyOpts(backing, "local", "local", keys[i%2])); err != nil {
			b.Fatal(err)
		}
	}
}
