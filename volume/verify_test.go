package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/sector"
)

func vfRandom(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// vfCanary builds a canary without a mount, for scanner tests.
func vfCanary(t *testing.T) *canary {
	c := &canary{name: canaryPrefix + "0123456789abcdef01", nameRnd: "0123456789abcdef01", marker: markerPrefix + "00112233445566778899"}
	c.content = vfRandom(t, MinCanarySize)
	copy(c.content[100:], c.marker)
	return c
}

func TestMatcherFindsAcrossChunks(t *testing.T) {
	m := newMatcher()
	pats := [][]byte{vfRandom(t, patternLen), vfRandom(t, patternLen), []byte(strings.Repeat("x", patternLen))}
	for i, p := range pats {
		m.add(p, fmt.Sprint(i))
	}
	m.add(pats[0], "dup") // duplicates are ignored
	if len(m.pats) != 3 {
		t.Fatalf("%d patterns, want 3", len(m.pats))
	}
	data := vfRandom(t, 10000)
	want := map[int64]int{37: 0, 4090: 1, 9968: 2, 5000: 0}
	for off, p := range want {
		copy(data[off:], pats[p])
	}
	for _, chunk := range []int{1, 7, 31, 32, 33, 1000, len(data)} {
		s := &stream{m: m}
		got := map[int64]int{}
		for i := 0; i < len(data); i += chunk {
			s.feed(data[i:min(i+chunk, len(data))], func(off int64, p int) {
				if _, dup := got[off]; dup {
					t.Errorf("chunk %d: offset %d reported twice", chunk, off)
				}
				got[off] = p
			})
		}
		if len(got) != len(want) {
			t.Errorf("chunk %d: found %v, want %v", chunk, got, want)
		}
		for off, p := range want {
			if g, ok := got[off]; !ok || g != p {
				t.Errorf("chunk %d: offset %d: got %d (found %v), want %d", chunk, off, g, ok, p)
			}
		}
	}
}

func TestChiSquarePValue(t *testing.T) {
	// df = 2 has the closed form exp(-x/2).
	for _, x := range []float64{0.5, 2, 10} {
		if got, want := chiSquarePValue(x, 2), math.Exp(-x/2); math.Abs(got-want) > 1e-9 {
			t.Errorf("p(%v, 2) = %v, want %v", x, got, want)
		}
	}
	// df = 255: the median is near 254.3, the 0.1% tail near 330.5.
	if p := chiSquarePValue(254.3, 255); math.Abs(p-0.5) > 0.01 {
		t.Errorf("p(254.3, 255) = %v, want ~0.5", p)
	}
	if p := chiSquarePValue(330.5, 255); math.Abs(p-0.001) > 0.0003 {
		t.Errorf("p(330.5, 255) = %v, want ~0.001", p)
	}
}

func TestRandomnessStatistics(t *testing.T) {
	var good histogram
	good.addRecord(vfRandom(t, 1<<20))
	r := good.report()
	if r.PValue < minPValue || r.Entropy < 7.99 || r.CompressRatio < minCompressRatio {
		t.Errorf("random bytes judged non-random: %+v", r)
	}
	var text histogram
	text.addRecord(bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog. "), 20000))
	r = text.report()
	if r.PValue >= minPValue || r.CompressRatio >= minCompressRatio {
		t.Errorf("text judged random: %+v", r)
	}
	var holes histogram
	holes.addRecord(make([]byte, 4128))
	if r := holes.report(); r.HoleSectors != 1 || r.Bytes != 0 {
		t.Errorf("hole counted as payload: %+v", r)
	}
}

// TestScanFindsLeaks plants canary content, its marker and its name in a
// fake backing directory and checks every kind is reported.
func TestScanFindsLeaks(t *testing.T) {
	c := vfCanary(t)
	dir := t.TempDir()
	// A "sector file" that leaks a 63-byte stretch of the canary at an odd
	// offset: at least one aligned 32-byte probe lies inside it.
	leak := vfRandom(t, 20000)
	copy(leak[12345:], c.content[501:564])
	if err := os.WriteFile(filepath.Join(dir, "AAAA"), leak, 0o600); err != nil {
		t.Fatal(err)
	}
	// The marker and the name in another file's content.
	other := vfRandom(t, 9000)
	copy(other[7:], c.marker)
	copy(other[8000:], c.name)
	if err := os.WriteFile(filepath.Join(dir, "BBBB"), other, 0o600); err != nil {
		t.Fatal(err)
	}
	// The name as a file name, in a subdirectory.
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "sub", c.name), vfRandom(t, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	scan, rnd, err := scanBacking(context.Background(), dir, c, sector.DefaultSectorSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	if scan.ContentHits < 1 || scan.MarkerHits != 1 || scan.NameHits != 1 || scan.FileNameHits != 1 {
		t.Errorf("scan missed a leak: %+v", scan)
	}
	if scan.Files != 3 || scan.Dirs != 2 {
		t.Errorf("files %d dirs %d, want 3 and 2", scan.Files, scan.Dirs)
	}
	if rnd.Files != 3 {
		t.Errorf("randomness over %d files, want 3", rnd.Files)
	}

	// Plaintext in a sector file fails the randomness check.
	clean := t.TempDir()
	text := bytes.Repeat([]byte("plain text that was never encrypted\n"), 4000)
	if err := os.WriteFile(filepath.Join(clean, "CCCC"), text, 0o600); err != nil {
		t.Fatal(err)
	}
	_, rnd, err = scanBacking(context.Background(), clean, c, sector.DefaultSectorSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rnd.PValue >= minPValue {
		t.Errorf("plaintext passed the chi-square test: %+v", rnd)
	}
}

// vfFixture is a local key store with a customer key, a volume under it
// and a configuration with a short key check interval.
type vfFixture struct {
	cfg    *Config
	adm    kmsclient.Admin
	key    kmsclient.KeyInfo
	target VerifyTarget
}

func newVFFixture(t *testing.T, onRevoke string) *vfFixture {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE is required: %v", err)
	}
	dir := t.TempDir()
	body := fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n[defaults]\nkey_check_interval = \"200ms\"\non_revoke = %q\n", filepath.Join(dir, "kms"), onRevoke)
	cfg, err := ParseConfig(filepath.Join(dir, "encvol.toml"), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	adm, err := kmsclient.NewAdmin(ctx, "local", cfg.KMS["local"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Close() })
	key, err := adm.CreateKey(ctx, kmsclient.CreateKeyInput{Description: "verify test"})
	if err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(dir, "b")
	if _, err := Create(ctx, adm, CreateOptions{Backing: backing, KMSName: "local", KeyRef: key.Arn}); err != nil {
		t.Fatal(err)
	}
	target, err := cfg.ResolveVerify(backing)
	if err != nil {
		t.Fatal(err)
	}
	return &vfFixture{cfg: cfg, adm: adm, key: key, target: target}
}

// verify mounts the volume in this process and runs Verify on it.
func (fx *vfFixture) verify(t *testing.T, drill bool) *VerifyReport {
	t.Helper()
	ctx := context.Background()
	spec, err := fx.cfg.TemporaryMountSpec(fx.target, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := MountTemporary(ctx, spec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := UnmountTemporary(m); err != nil {
			t.Error(err)
		}
	}()
	fresh := func(ctx context.Context) error {
		c, err := kmsclient.New(ctx, spec.KMS, spec.KMSConfig)
		if err != nil {
			return err
		}
		defer c.Close()
		u, err := UnlockHeader(ctx, c, spec.KMS, spec.Backing, spec.Header)
		if err == nil {
			u.Close()
		}
		return err
	}
	rep, err := Verify(ctx, VerifyOptions{
		Backing: spec.Backing, Header: spec.Header, Mountpoint: spec.Mountpoint, Temporary: true, KMS: spec.KMS,
		OnRevoke: spec.OnRevoke, KeyCheckInterval: spec.KeyCheckInterval,
		Status: func(context.Context) (*Status, error) { s := m.Status(); return &s, nil },
		Drill:  drill, Admin: fx.adm, FreshMount: fresh, Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Checks {
		t.Logf("%s %s: %s", c.Result, c.Name, c.Detail)
	}
	if _, err := os.Stat(rep.Canary.Path); !errors.Is(err, os.ErrNotExist) && !rep.Canary.Removed {
		t.Errorf("canary left behind: %v", err)
	}
	return rep
}

func TestVerifyDrill(t *testing.T) {
	for _, mode := range []string{OnRevokeEIO, OnRevokeHang} {
		t.Run(mode, func(t *testing.T) {
			fx := newVFFixture(t, mode)
			rep := fx.verify(t, true)
			if !rep.Pass {
				t.Fatalf("verify failed: %v", rep.Failed())
			}
			d := rep.Drill
			if d == nil || d.CloseMS < 0 || d.ReopenMS < 0 || !d.CanaryIntact || !d.ReEnabled {
				t.Fatalf("drill report incomplete: %+v", d)
			}
			if d.CloseMS > 1200 {
				t.Errorf("closed after %.0f ms with a 200 ms interval", d.CloseMS)
			}
			if !strings.Contains(d.FreshMount, "Disabled") {
				t.Errorf("fresh mount error does not name the state: %q", d.FreshMount)
			}
			if mode == OnRevokeHang && !strings.HasPrefix(d.Refusal, "blocked") {
				t.Errorf("hang mode refusal %q, want blocked", d.Refusal)
			}
			if rep.Scan.Probes < MinCanarySize/patternLen || rep.Randomness.Sectors < 32 {
				t.Errorf("scan too small: %+v %+v", rep.Scan, rep.Randomness)
			}
			info, err := fx.adm.DescribeKey(context.Background(), fx.key.Arn)
			if err != nil || info.State != "Enabled" {
				t.Errorf("key after the drill: %q %v", info.State, err)
			}
		})
	}
}

func TestVerifyNoDrill(t *testing.T) {
	fx := newVFFixture(t, OnRevokeEIO)
	rep := fx.verify(t, false)
	if !rep.Pass || rep.Drill != nil || len(rep.Checks) != 3 {
		t.Fatalf("report: pass %v drill %v checks %d", rep.Pass, rep.Drill, len(rep.Checks))
	}
	if rep.Canary.BackingSize != sector.BackingSize(DefaultCanarySize, rep.SectorSize) {
		t.Errorf("canary backing file %s has %d bytes, want %d", rep.Canary.BackingFile, rep.Canary.BackingSize, sector.BackingSize(DefaultCanarySize, rep.SectorSize))
	}
}

// TestVerifyDrillRefusals: the service key and a disabled key are refused
// before anything is written.
func TestVerifyDrillRefusals(t *testing.T) {
	fx := newVFFixture(t, OnRevokeEIO)
	ctx := context.Background()
	svc, err := fx.adm.DefaultKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDrillKey(ctx, fx.adm, svc); !errors.Is(err, ErrServiceKey) || !strings.Contains(err.Error(), kmsclient.DefaultKeyAlias) {
		t.Errorf("service key: %v", err)
	}
	if err := fx.adm.DisableKey(ctx, fx.key.Arn); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDrillKey(ctx, fx.adm, fx.key.Arn); err == nil || !strings.Contains(err.Error(), "Disabled") {
		t.Errorf("disabled key: %v", err)
	}
	if _, err := CheckDrillKey(ctx, fx.adm, "alias/none"); err == nil {
		t.Error("missing key accepted")
	}
}

func BenchmarkScan(b *testing.B) {
	m := newMatcher()
	for i := 0; i < 4096; i++ {
		p := make([]byte, patternLen)
		rand.Read(p)
		m.add(p, "content")
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	var h histogram
	for b.Loop() {
		s := &stream{m: m}
		s.feed(data, func(int64, int) {})
		for off := 0; off < len(data); off += 4128 {
			h.addRecord(data[off:min(off+4128, len(data))])
		}
	}
}
