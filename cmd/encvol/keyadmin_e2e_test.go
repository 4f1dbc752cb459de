package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// End-to-end tests of key administration through the real binary, on the
// embedded KMS and on `encvol kms serve`: rekey of a mounted volume under
// load, header backup and restore, [policy] require_customer_key and the
// key-usage guard of disable-key and schedule-key-deletion.

// kaLoad writes and reads through a mount until stopped and remembers the
// first error and when it happened.
type kaLoad struct {
	stop    chan struct{}
	done    chan struct{}
	ops     atomic.Int64
	mu      sync.Mutex
	err     error
	errTime time.Time
}

func startLoad(t *testing.T, mnt string, data []byte) *kaLoad {
	t.Helper()
	l := &kaLoad{stop: make(chan struct{}), done: make(chan struct{})}
	ref := filepath.Join(mnt, "load-ref")
	if err := os.WriteFile(ref, data, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(l.done)
		chunk := data[:64<<10]
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			err := os.WriteFile(filepath.Join(mnt, fmt.Sprintf("load-%d", i%8)), chunk, 0o600)
			if err == nil {
				var got []byte
				if got, err = os.ReadFile(ref); err == nil && !bytes.Equal(got, data) {
					err = fmt.Errorf("%s read back %d bytes of wrong content", ref, len(got))
				}
			}
			if err != nil {
				l.mu.Lock()
				if l.err == nil {
					l.err, l.errTime = err, time.Now()
				}
				l.mu.Unlock()
				continue
			}
			l.ops.Add(1)
		}
	}()
	t.Cleanup(l.end)
	return l
}

func (l *kaLoad) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

func (l *kaLoad) firstError() (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errTime, l.err
}

// mountStatus asks the mount's daemon directly (polled often: no process per
// poll).
func mountStatus(t *testing.T, mnt string) *volume.Status {
	t.Helper()
	mp, err := volume.CanonicalMountpoint(mnt)
	if err != nil {
		t.Fatal(err)
	}
	st, err := volume.QueryStatus(context.Background(), volume.SocketPath(mp))
	if err != nil {
		t.Fatalf("status of %s: %v", mnt, err)
	}
	return st
}

// waitChecks returns once the mount has checked its key n more times.
func waitChecks(t *testing.T, mnt string, n uint64) {
	t.Helper()
	c0 := mountStatus(t, mnt).Checks
	gxWait(t, fmt.Sprintf("%d more key checks", n), 10*time.Second, func() bool { return mountStatus(t, mnt).Checks >= c0+n })
}

func (e *gxEnv) arnOf(cfg, key string, extra ...string) string {
	e.t.Helper()
	var k kmsclient.KeyInfo
	r := e.mustWith(cfg, append([]string{"kms", "describe-key", key, "--json"}, extra...)...)
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil {
		e.t.Fatal(err)
	}
	return k.Arn
}

func decodeOut[T any](t *testing.T, r gxResult) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("decode %q: %v", r.stdout, err)
	}
	return v
}

// storeView is a configuration that opens the served KMS's store directly,
// as an operator on the KMS host reads its audit log.
func (e *gxEnv) storeView() string {
	if e.backend == "local" {
		return e.cfg
	}
	return e.writeConfig("store-view.toml", fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n", e.store), "")
}

// TestRekeyMountedUnderLoad: a mounted volume is rekeyed while a writer
// runs; the writer never sees an error, the mount checks the new key, the
// old key's disable leaves it running, the guard refuses to disable the
// new key without --force (naming the volume), and with --force the gate
// closes within interval + 1 s. The audit log shows the rewrap.
func TestRekeyMountedUnderLoad(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			oldKey, newKey := e.createKey("alias/old"), e.createKey("alias/new")
			oldARN, newARN := e.arnOf(e.cfg, oldKey), e.arnOf(e.cfg, newKey)
			backing := e.newVolume("vol", oldKey)
			mnt := e.mount(e.cfg, backing)
			data := gxRandom(t, 300_000)
			load := startLoad(t, mnt, data)
			gxWait(t, "load running", 10*time.Second, func() bool { return load.ops.Load() > 5 })

			hdr := filepath.Join(e.dir, "hdr")
			e.must("header", "backup", backing, hdr)
			if st, err := os.Stat(hdr); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("header backup: %v, %v; want mode 0600", st, err)
			}

			start := time.Now()
			res := decodeOut[volume.RekeyResult](t, e.must("rekey", backing, "--key", newKey, "--json"))
			t.Logf("%s: rekey of the mounted volume took %v", backend, time.Since(start).Round(time.Millisecond))
			if res.Method != volume.RekeyReEncrypt || res.OldKeyID != oldARN || res.KeyID != newARN || res.Mountpoint != mnt {
				t.Fatalf("rekey result %+v", res)
			}
			if st := mountStatus(t, mnt); st.KeyID != newARN || st.Gate != "open" {
				t.Fatalf("mount after rekey checks %s (gate %s), want %s", st.KeyID, st.Gate, newARN)
			}
			if h, err := keywrap.ReadHeader(backing); err != nil || h.KeyID != newARN || h.VolumeID != res.VolumeID {
				t.Fatalf("header after rekey: %+v, %v", h, err)
			}

			// The old key no longer matters to the mount.
			e.must("kms", "disable-key", oldKey, "--force")
			waitChecks(t, mnt, 2)
			if st := mountStatus(t, mnt); st.Gate != "open" || st.KeyState != "Enabled" {
				t.Fatalf("after the old key was disabled: gate %s, key state %s (%s)", st.Gate, st.KeyState, st.LastResult)
			}
			ops := load.ops.Load()
			gxWait(t, "load continues", 10*time.Second, func() bool { return load.ops.Load() > ops+5 })
			if _, err := load.firstError(); err != nil {
				t.Fatalf("the writer failed during rekey or after the old key was disabled: %v", err)
			}
			e.must("kms", "enable-key", oldKey)

			// The new key protects a mounted volume: refused, and listed.
			r := e.runWith(e.cfg, "kms", "disable-key", newKey)
			if r.code != exitRefused || !strings.Contains(r.stderr, res.VolumeID) || !strings.Contains(r.stderr, mnt) || !strings.Contains(r.stderr, "--force") {
				t.Fatalf("disable-key of the new key: want exit %d naming %s and %s: %v", exitRefused, res.VolumeID, mnt, r)
			}
			if st := mountStatus(t, mnt); st.Gate != "open" {
				t.Fatal("the refused disable-key closed the gate")
			}
			u := decodeOut[volume.KeyUsage](t, e.must("kms", "key-usage", newKey, "--json"))
			if len(u.Volumes) != 1 || !u.Volumes[0].Mounted || u.Volumes[0].Mountpoint != mnt || u.Volumes[0].VolumeID != res.VolumeID || u.Arn != newARN {
				t.Fatalf("key-usage of the new key: %+v", u)
			}

			cmdStart := time.Now()
			e.must("kms", "disable-key", newKey, "--force")
			gxWait(t, "EIO after the new key was disabled", 10*time.Second, func() bool { return gxReadEIO(t, filepath.Join(mnt, "load-ref"), data) })
			lat := time.Since(cmdStart)
			t.Logf("%s: gate closed %v after disable-key of the new key started", backend, lat.Round(time.Millisecond))
			if lat > gxCloseBound {
				t.Errorf("gate closed %v after the new key was disabled, want <= %v", lat, gxCloseBound)
			}
			gxWait(t, "the writer fails at the closed gate", 10*time.Second, func() bool { _, err := load.firstError(); return err != nil })
			if at, err := load.firstError(); at.Before(cmdStart) {
				t.Errorf("the writer's first error %v at %v, want one after the new key was disabled (%v)", err, at, cmdStart)
			}
			load.end()
			e.must("kms", "enable-key", newKey)
			gxWait(t, "reads after enable-key", 10*time.Second, func() bool { return !gxReadEIO(t, filepath.Join(mnt, "load-ref"), data) })

			// The rewrap is in the audit log, findable by either key.
			view := e.storeView()
			for _, c := range []struct{ key, op string }{{newARN, "ReEncryptTo"}, {oldARN, "ReEncryptFrom"}} {
				recs := decodeOut[[]kmsclient.AuditRecord](t, e.mustWith(view, "kms", "audit", "--key", c.key, "--json"))
				found := false
				for _, rec := range recs {
					found = found || (rec.Operation == c.op && rec.Result == "ok" && rec.EncryptionContext[volume.ContextVolumeIDKey] == res.VolumeID)
				}
				if !found {
					t.Errorf("kms audit --key %s has no %s of %s", c.key, c.op, res.VolumeID)
				}
			}
		})
	}
}

// TestRekeyToAnotherKMS: a mounted volume moves from the embedded KMS to
// `encvol kms serve` (Decrypt + Encrypt); the mount builds a client for the
// new KMS and follows; the old KMS's key no longer matters, the new one
// does, and a fresh mount uses the KMS the header now names.
func TestRekeyToAnotherKMS(t *testing.T) {
	e := newGXEnv(t, "served", "")
	both := e.writeConfig("both.toml", fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n[kms.corp]\ntype = \"aws\"\nendpoint = \"http://%s\"\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\n",
		filepath.Join(e.dir, "kms"), e.addr, gxAlice.id, gxAlice.secret), "kms = \"local\"\n")
	e.cfg = both
	e.must("kms", "create-key", "--alias", "alias/here")
	e.must("kms", "create-key", "--alias", "alias/there", "--kms", "corp")
	thereARN := e.arnOf(both, "alias/there", "--kms", "corp")
	backing := e.newVolume("vol", "alias/here")
	mnt := e.mount(both, backing)
	data := gxRandom(t, 200_000)
	if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	res := decodeOut[volume.RekeyResult](t, e.must("rekey", backing, "--key", "alias/there", "--kms", "corp", "--json"))
	if res.Method != volume.RekeyDecryptEncrypt || res.OldKMS != "local" || res.KMS != "corp" || res.KeyID != thereARN {
		t.Fatalf("rekey result %+v", res)
	}
	if st := mountStatus(t, mnt); st.KMS != "corp" || st.KeyID != thereARN {
		t.Fatalf("mount after rekey: KMS %q key %s", st.KMS, st.KeyID)
	}
	e.must("kms", "disable-key", "alias/here", "--force")
	waitChecks(t, mnt, 2)
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after the old KMS's key was disabled: %v", err)
	}
	start := time.Now()
	e.must("kms", "disable-key", "alias/there", "--kms", "corp", "--force")
	gxWait(t, "EIO after the new KMS's key was disabled", 10*time.Second, func() bool { return gxReadEIO(t, filepath.Join(mnt, "f"), data) })
	if lat := time.Since(start); lat > gxCloseBound {
		t.Errorf("gate closed %v after the new key was disabled, want <= %v", lat, gxCloseBound)
	}
	e.must("kms", "enable-key", "alias/there", "--kms", "corp")
	e.must("umount", mnt)
	e.mustWith(both, "mount", backing, mnt)
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after remounting under the new KMS: %v", err)
	}
	if st := mountStatus(t, mnt); st.KMS != "corp" {
		t.Fatalf("fresh mount uses KMS %q, want corp (the header's)", st.KMS)
	}
}

// TestRekeyRefusals: an unusable or unknown key, a missing --key and (under
// [policy]) the service key are refused with one sentence each and the
// header stays as it was.
func TestRekeyRefusals(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			e.createKey("alias/a")
			e.createKey("alias/off")
			e.must("kms", "disable-key", "alias/off")
			backing := e.newVolume("vol", "alias/a")
			orig, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile))
			for _, c := range []struct {
				args []string
				code int
				want string
			}{
				{[]string{"--key", "alias/off"}, exitKeyState, "is Disabled, and only an Enabled key can take a volume"},
				{[]string{"--key", "alias/nope"}, exitKeyState, "alias/nope"},
				{nil, exitUsage, "--key KEY is required"},
			} {
				r := e.runWith(e.cfg, append([]string{"rekey", backing}, c.args...)...)
				if r.code != c.code || !strings.Contains(r.stderr, c.want) {
					t.Errorf("rekey %v: want exit %d saying %q: %v", c.args, c.code, c.want, r)
				}
				oneLine(t, fmt.Sprintf("rekey %v", c.args), r.stderr)
			}
			// The service key exists once a volume used it; the KMS
			// server's store makes it for a local user of the store.
			e.mustWith(e.storeView(), "create", "--backing", filepath.Join(e.dir, "svc"))
			svc := e.arnOf(e.cfg, kmsclient.DefaultKeyAlias)
			policy := e.cfg + ".policy.toml"
			body, _ := os.ReadFile(e.cfg)
			if err := os.WriteFile(policy, append(body, "\n[policy]\nrequire_customer_key = true\n"...), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{kmsclient.DefaultKeyAlias, svc} {
				r := e.runWith(policy, "rekey", backing, "--key", key)
				if r.code != exitRefused || !strings.Contains(r.stderr, "[policy] require_customer_key = true in "+policy) {
					t.Errorf("rekey to the service key %s under the policy: %v", key, r)
				}
			}
			if now, _ := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile)); !bytes.Equal(now, orig) {
				t.Fatal("a refused rekey changed the header")
			}
		})
	}
}

// TestHeaderDestroyedRestore: with the header gone a mount fails saying how
// to restore it; a backup of another volume is refused; the volume's own
// backup brings it back with its data; a mounted volume is not restored.
func TestHeaderDestroyedRestore(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			e.createKey("alias/a")
			backing, other := e.newVolume("vol", "alias/a"), e.newVolume("other", "alias/a")
			mnt := e.mount(e.cfg, backing)
			data := gxRandom(t, 500_000)
			if err := os.WriteFile(filepath.Join(mnt, "data"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			own, foreign := filepath.Join(e.dir, "own.hdr"), filepath.Join(e.dir, "other.hdr")
			rep := decodeOut[volume.HeaderReport](t, e.must("header", "backup", backing, own, "--json"))
			if !rep.Verified {
				t.Fatalf("backup report %+v", rep)
			}
			e.must("header", "backup", other, foreign)
			for _, f := range []string{own, foreign} {
				if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
					t.Fatalf("backup %s: %v, %v; want mode 0600", f, st, err)
				}
			}
			if r := e.runWith(e.cfg, "header", "restore", backing, own); r.code != exitMounted || !strings.Contains(r.stderr, "unmount it first") {
				t.Errorf("restore of a mounted volume: want exit %d: %v", exitMounted, r)
			}
			e.must("umount", mnt)

			for _, destroy := range []string{"remove", "garbage"} {
				hp := filepath.Join(backing, keywrap.HeaderFile)
				if destroy == "remove" {
					os.Remove(hp)
				} else {
					os.WriteFile(hp, bytes.Repeat([]byte{0xAA}, 600), 0o600)
				}
				r := e.runWith(e.cfg, "mount", backing, mnt)
				if r.code != exitFailure || !strings.Contains(r.stderr, "encvol header restore "+backing) {
					t.Errorf("mount with the header %s: want exit %d pointing at header restore: %v", destroy, exitFailure, r)
				}
				r = e.runWith(e.cfg, "header", "restore", backing, foreign)
				if r.code != exitUsage || !strings.Contains(r.stderr, "is not a header of the volume in "+backing) {
					t.Errorf("restore of another volume's header (%s): want exit %d: %v", destroy, exitUsage, r)
				}
				oneLine(t, "foreign restore", r.stderr)
				r = e.must("header", "restore", backing, own)
				if !strings.Contains(r.stdout, "decrypts the names") {
					t.Errorf("restore report does not say how it was checked: %v", r)
				}
				e.mustWith(e.cfg, "mount", backing, mnt)
				if got, err := os.ReadFile(filepath.Join(mnt, "data")); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("data after restoring the header (%s): %v", destroy, err)
				}
				e.must("umount", mnt)
			}
		})
	}
}

// TestKeyUsageGuard: disable-key and schedule-key-deletion refuse a key
// that protects a mounted volume or a configured one, list them (and say
// when the audit log is out of reach), proceed with --force; a key that
// protects nothing is disabled at once; the only customer key of a KMS is
// disabled with a warning (the kill switch), but not scheduled for
// deletion without --force.
func TestKeyUsageGuard(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			e.createKey("alias/a")
			e.createKey("alias/spare")
			arn := e.arnOf(e.cfg, "alias/a")
			mounted, configured := e.newVolume("mounted", "alias/a"), e.newVolume("configured", "alias/a")
			mnt := e.mount(e.cfg, mounted)
			vols := fmt.Sprintf("\n[volumes.cfgd]\nbacking = %q\n", configured)
			body, _ := os.ReadFile(e.cfg)
			if err := os.WriteFile(e.cfg, append(body, vols...), 0o600); err != nil {
				t.Fatal(err)
			}
			mh, _ := keywrap.ReadHeader(mounted)
			ch, _ := keywrap.ReadHeader(configured)

			for _, args := range [][]string{{"kms", "disable-key", "alias/a"}, {"kms", "schedule-key-deletion", arn, "--days", "7"}} {
				r := e.runWith(e.cfg, args...)
				if r.code != exitRefused {
					t.Fatalf("%v: want exit %d: %v", args, exitRefused, r)
				}
				for _, want := range []string{mh.VolumeID, mnt, ch.VolumeID, configured, "[volumes.cfgd]", "--force"} {
					if !strings.Contains(r.stderr, want) {
						t.Errorf("%v: refusal does not name %q: %v", args, want, r)
					}
				}
			}
			if st := mountStatus(t, mnt); st.KeyState != "Enabled" {
				t.Fatalf("a refused disable changed the key: %s", st.KeyState)
			}
			for _, ref := range []string{"alias/a", arn} {
				u := decodeOut[volume.KeyUsage](t, e.must("kms", "key-usage", ref, "--json"))
				got := map[string]volume.KeyUse{}
				for _, v := range u.Volumes {
					got[v.VolumeID] = v
				}
				if m := got[mh.VolumeID]; !m.Mounted || m.Mountpoint != mnt {
					t.Errorf("key-usage %s: mounted volume %+v", ref, m)
				}
				if c := got[ch.VolumeID]; !c.Configured || c.Name != "cfgd" || c.Backing != configured {
					t.Errorf("key-usage %s: configured volume %+v", ref, c)
				}
				if backend == "served" && !strings.Contains(u.AuditNote, "remote") {
					t.Errorf("key-usage on a remote KMS does not say the audit log was out of reach: %+v", u)
				}
				if backend == "local" && (u.AuditNote != "" || got[mh.VolumeID].LastUsed == nil) {
					t.Errorf("key-usage on the local KMS did not read the audit log: %+v", u)
				}
			}
			if r := e.must("kms", "key-usage", "alias/a"); !strings.Contains(r.stdout, mh.VolumeID) || !strings.Contains(r.stdout, "mounted on "+mnt) {
				t.Errorf("key-usage table: %v", r)
			}
			if backend == "served" {
				// A principal who may describe the key but not administer
				// it hears the KMS's AccessDenied, not "use --force".
				e.must("kms", "create-grant", "alias/a", "--grantee", gxBob.name, "--operations", "DescribeKey")
				r := e.runWith(e.principalConfig(gxBob, ""), "kms", "disable-key", arn)
				if r.code != exitKeyState || !strings.Contains(r.stderr, "AccessDenied") {
					t.Errorf("disable-key by a principal who may not administer the key: want exit %d saying AccessDenied: %v", exitKeyState, r)
				}
			}
			e.must("kms", "disable-key", "alias/spare") // protects nothing
			start := time.Now()
			r := e.must("kms", "disable-key", "alias/a", "--force", "--json")
			if ch := decodeOut[stateChange](t, r); ch.State != "Disabled" || len(ch.Volumes) != 2 {
				t.Errorf("disable-key --force --json: %+v", ch)
			}
			gxWait(t, "gate closed after the forced disable", 10*time.Second, func() bool { return mountStatus(t, mnt).Gate == "closed" })
			t.Logf("%s: gate closed %v after the forced disable-key", backend, time.Since(start).Round(time.Millisecond))
			e.must("kms", "enable-key", "alias/a")

			// The only customer key: disable is the kill switch.
			solo := newGXEnv(t, backend, "")
			solo.createKey("alias/solo")
			sm := solo.mount(solo.cfg, solo.newVolume("v", "alias/solo"))
			r = solo.runWith(solo.cfg, "kms", "schedule-key-deletion", "alias/solo", "--days", "7")
			if r.code != exitRefused {
				t.Errorf("deletion of the only customer key, which protects a mounted volume: want exit %d: %v", exitRefused, r)
			}
			r = solo.must("kms", "disable-key", "alias/solo")
			if !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "only customer key") {
				t.Errorf("disable of the only customer key: no warning naming why it proceeds: %v", r)
			}
			gxWait(t, "gate closed after disabling the only key", 10*time.Second, func() bool { return mountStatus(t, sm).Gate == "closed" })
		})
	}
}

// TestPolicyRequireCustomerKey: create refuses a missing --key and the
// service key (by alias and by ARN), naming the setting; a customer key
// is accepted.
func TestPolicyRequireCustomerKey(t *testing.T) {
	e := newGXEnv(t, "local", "")
	e.createKey("alias/cust")
	e.newVolume("svc", "") // creates the service key
	svc := e.arnOf(e.cfg, kmsclient.DefaultKeyAlias)
	body, _ := os.ReadFile(e.cfg)
	if err := os.WriteFile(e.cfg, append(body, "\n[policy]\nrequire_customer_key = true\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "without --key"},
		{[]string{"--key", kmsclient.DefaultKeyAlias}, "the service key"},
		{[]string{"--key", svc}, "the service key"},
	} {
		backing := filepath.Join(e.dir, fmt.Sprintf("p%d", len(c.args)+len(c.want)))
		r := e.runWith(e.cfg, append([]string{"create", "--backing", backing}, c.args...)...)
		if r.code != exitRefused || !strings.Contains(r.stderr, "[policy] require_customer_key = true in "+e.cfg) ||
			!strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "--key KEY") {
			t.Errorf("create %v under the policy: want exit %d naming the setting: %v", c.args, exitRefused, r)
		}
		oneLine(t, fmt.Sprintf("create %v", c.args), r.stderr)
		if _, err := os.Stat(backing); err == nil {
			t.Errorf("create %v under the policy left %s behind", c.args, backing)
		}
	}
	e.newVolume("ok", "alias/cust")
}
