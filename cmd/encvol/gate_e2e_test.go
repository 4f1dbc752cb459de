package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/encvol/encvol/volume"
)

// End-to-end tests of the key gate through the real binary: daemonized
// mounts, `encvol kms ...` in separate processes, and either the embedded
// local KMS or a real `encvol kms serve` reached over the AWS JSON API.

const (
	gxInterval = 500 * time.Millisecond
	// gxCloseBound is the bound: interval + 1 s.
	gxCloseBound = gxInterval + time.Second
	gxPoll       = 20 * time.Millisecond
)

// gxPrincipal is one access key of the served KMS.
type gxPrincipal struct{ name, id, secret string }

var (
	gxAlice = gxPrincipal{"alice", "AKIAGATEALICE0001", "alice-secret-0123456789abcdef"}
	gxBob   = gxPrincipal{"bob", "AKIAGATEBOB000001", "bob-secret-0123456789abcdef00"}
)

// gxEnv is a temp dir with a configuration for one KMS backend: "local"
// (the embedded store) or "served" (`encvol kms serve` on loopback).
type gxEnv struct {
	t       *testing.T
	backend string
	dir     string
	cfg     string // configuration acting as the key owner
	kmsName string

	// served backend
	addr       string
	store      string
	principals string
	server     *exec.Cmd
	serverDone chan struct{}
	serveArgs  []string // extra arguments of `encvol kms serve`
}

func newGXEnv(t *testing.T, backend, defaults string) *gxEnv {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE is required for these tests: %v", err)
	}
	e := &gxEnv{t: t, backend: backend, dir: t.TempDir()}
	switch backend {
	case "local":
		e.kmsName = "local"
		e.cfg = e.writeConfig("owner.toml", fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n", filepath.Join(e.dir, "kms")), defaults)
	case "served":
		e.kmsName = "corp"
		e.store = filepath.Join(e.dir, "kms-store")
		e.principals = filepath.Join(e.dir, "principals.toml")
		var pb strings.Builder
		for _, p := range []gxPrincipal{gxAlice, gxBob} {
			fmt.Fprintf(&pb, "[[principal]]\nname = %q\naccess_key_id = %q\nsecret_access_key = %q\n\n", p.name, p.id, p.secret)
		}
		if err := os.WriteFile(e.principals, []byte(pb.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		e.addr = gxFreeAddr(t)
		e.startKMS()
		e.cfg = e.principalConfig(gxAlice, defaults)
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	return e
}

func (e *gxEnv) writeConfig(name, kms, defaults string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	body := kms + "\n[defaults]\nkey_check_interval = \"" + gxInterval.String() + "\"\n" + defaults
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// principalConfig is a configuration that reaches the served KMS as p.
func (e *gxEnv) principalConfig(p gxPrincipal, defaults string) string {
	kms := fmt.Sprintf("[kms.corp]\ntype = \"aws\"\nendpoint = \"http://%s\"\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\n",
		e.addr, p.id, p.secret)
	return e.writeConfig(p.name+".toml", kms, defaults)
}

func gxFreeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startKMS runs `encvol kms serve` on e.addr and waits until it accepts
// connections.
func (e *gxEnv) startKMS() {
	e.t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.dir, "kms-serve.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(encvolBin, append([]string{"kms", "serve", "--listen", e.addr, "--store", e.store, "--principals", e.principals}, e.serveArgs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.server, e.serverDone = cmd, done
	e.t.Cleanup(e.killKMS)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(e.dir, "kms-serve.log"))
			e.t.Fatalf("encvol kms serve exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("encvol kms serve does not listen on %s: %v", e.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killKMS kills the server process outright (no graceful shutdown).
func (e *gxEnv) killKMS() {
	if e.server == nil {
		return
	}
	_ = e.server.Process.Kill()
	<-e.serverDone
	e.server = nil
}

type gxResult struct {
	stdout, stderr string
	code           int
}

func (r gxResult) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// run runs the binary with configuration cfg.
func (e *gxEnv) runWith(cfg string, args ...string) gxResult {
	e.t.Helper()
	cmd := exec.Command(encvolBin, append([]string{"--config", cfg}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := gxResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run encvol %v: %v", args, err)
	}
	return r
}

func (e *gxEnv) mustWith(cfg string, args ...string) gxResult {
	e.t.Helper()
	r := e.runWith(cfg, args...)
	if r.code != 0 {
		e.t.Fatalf("encvol %s: %v", strings.Join(args, " "), r)
	}
	return r
}

func (e *gxEnv) must(args ...string) gxResult {
	e.t.Helper()
	return e.mustWith(e.cfg, args...)
}

// createKey creates a customer key with alias and returns the alias.
func (e *gxEnv) createKey(alias string) string {
	e.t.Helper()
	e.must("kms", "create-key", "--alias", alias)
	return alias
}

// newVolume creates a volume under key and returns its backing dir.
func (e *gxEnv) newVolume(name, key string) string {
	e.t.Helper()
	backing := filepath.Join(e.dir, name)
	e.must("create", "--backing", backing, "--key", key)
	return backing
}

// mount mounts backing (daemonized) with cfg and returns the mountpoint;
// the mount is removed when the test ends.
func (e *gxEnv) mount(cfg, backing string, opts ...string) string {
	e.t.Helper()
	mnt := backing + ".mnt"
	if err := os.Mkdir(mnt, 0o755); err != nil {
		e.t.Fatal(err)
	}
	args := []string{"mount", backing, mnt}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	e.t.Cleanup(func() { gxUnmount(e.t, mnt) })
	e.mustWith(cfg, args...)
	return mnt
}

func gxUnmount(t *testing.T, mnt string) {
	mp, err := volume.CanonicalMountpoint(mnt)
	if err != nil {
		return
	}
	if ok, _ := volume.IsMounted(mp); !ok {
		return
	}
	cmd := exec.Command(encvolBin, "umount", mp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("encvol umount %s: %v: %s", mp, err, out)
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

// status asks the mount's daemon through its control socket (never through
// the FUSE mount, which may block in hang mode).
func (e *gxEnv) status(mnt string) volume.Status {
	e.t.Helper()
	r := e.must("status", mnt, "--json")
	var st volume.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		e.t.Fatalf("status --json: %v: %s", err, r.stdout)
	}
	return st
}

func gxIsEIO(err error) bool { return errors.Is(err, syscall.EIO) }

// gxWait polls cond every gxPoll until it holds and returns how long that
// took; it fails the test after limit.
func gxWait(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(gxPoll)
	}
	return time.Since(start)
}

// gxReadEIO reports whether a fresh open+read of path fails with EIO; any
// other error or wrong content fails the test.
func gxReadEIO(t *testing.T, path string, want []byte) bool {
	t.Helper()
	got, err := os.ReadFile(path)
	if err == nil {
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes of wrong content", path, len(got))
		}
		return false
	}
	if !gxIsEIO(err) {
		t.Fatalf("%s: want EIO, got %v", path, err)
	}
	return true
}

func gxRandom(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

var gxBackends = []string{"local", "served"}

// TestGateDisableEnable: disable → EIO within interval + 1 s, nothing
// cached is served (open fd and fresh open), a fresh mount fails naming the
// state, the on_key_event hook gets the details; enable → I/O resumes in
// the same mount.
func TestGateDisableEnable(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			hookDir := t.TempDir()
			hook := fmt.Sprintf("on_key_event = \"env | grep ^ENCVOL_ | sort > %s/event-$ENCVOL_NEW_STATE\"\n", hookDir)
			e := newGXEnv(t, backend, hook)
			key := e.createKey("alias/gate")
			backing := e.newVolume("vol", key)
			mnt := e.mount(e.cfg, backing)
			st := e.status(mnt)

			data := gxRandom(t, 300_000)
			path := filepath.Join(mnt, "f")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			// Read before the disable, keeping the fd open: its pages are
			// in the kernel's cache now.
			fd, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			buf := make([]byte, len(data))
			if n, err := fd.ReadAt(buf, 0); err != nil || !bytes.Equal(buf[:n], data) {
				t.Fatalf("read before disable: %d %v", n, err)
			}

			// Names, attributes and a missing name are in the kernel's
			// caches too (long entry, attribute and negative timeouts).
			if err := os.Mkdir(filepath.Join(mnt, "d"), 0o700); err != nil {
				t.Fatal(err)
			}
			cachedNames := []string{"d", "f", "missing", "d/missing"}
			for _, n := range cachedNames {
				os.Lstat(filepath.Join(mnt, n))
			}

			// Latency counts from the start of the disable-key command: the
			// key may be disabled at any moment while it runs, so this is
			// the honest upper bound (its own run time is logged too).
			cmdStart := time.Now()
			e.must("kms", "disable-key", key)
			cmdTook := time.Since(cmdStart)
			gxWait(t, "first EIO after disable-key", 10*time.Second, func() bool { return gxReadEIO(t, path, data) })
			closeLat := time.Since(cmdStart)
			t.Logf("%s: first EIO %v after disable-key started (the command took %v; interval %v)", backend,
				closeLat.Round(time.Millisecond), cmdTook.Round(time.Millisecond), gxInterval)
			if closeLat > gxCloseBound {
				t.Errorf("first EIO %v after disable-key started, want <= interval + 1 s = %v", closeLat, gxCloseBound)
			}

			// Every cached name, present or missing, fails with EIO (not
			// ENOENT, not old attributes) within the same bound.
			for _, n := range cachedNames {
				gxWait(t, "EIO for cached name "+n, 10*time.Second, func() bool {
					_, err := os.Lstat(filepath.Join(mnt, n))
					return gxIsEIO(err)
				})
			}
			if lat := time.Since(cmdStart); lat > gxCloseBound {
				t.Errorf("cached names failed with EIO %v after disable-key started, want <= %v", lat, gxCloseBound)
			}

			// Cache test: the file read before is not served, through the
			// open fd nor a fresh open, nor is a write accepted.
			if _, err := fd.ReadAt(buf, 0); !gxIsEIO(err) {
				t.Errorf("read through the fd opened before the disable: want EIO, got %v", err)
			}
			if _, err := fd.ReadAt(buf[:100], 200_000); !gxIsEIO(err) {
				t.Errorf("read at offset through the old fd: want EIO, got %v", err)
			}
			if _, err := os.ReadFile(path); !gxIsEIO(err) {
				t.Errorf("fresh open after the disable: want EIO, got %v", err)
			}
			if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o600); err == nil {
				t.Error("write succeeded while the key is disabled")
			}
			closed := e.status(mnt)
			if closed.Gate != "closed" || closed.KeyState != "Disabled" || closed.Transitions < 1 {
				t.Errorf("status while disabled: gate %q key state %q transitions %d", closed.Gate, closed.KeyState, closed.Transitions)
			}

			// A fresh mount fails and names the state.
			mnt2 := filepath.Join(e.dir, "second")
			os.Mkdir(mnt2, 0o755)
			t.Cleanup(func() { gxUnmount(t, mnt2) })
			r := e.runWith(e.cfg, "mount", backing, mnt2)
			if r.code == 0 {
				t.Fatal("fresh mount succeeded with a disabled key")
			}
			if r.code != exitKeyState || !strings.Contains(r.stderr, "Disabled") {
				t.Errorf("fresh mount: want exit %d naming Disabled: %v", exitKeyState, r)
			}

			cmdStart = time.Now()
			e.must("kms", "enable-key", key)
			gxWait(t, "reads after enable-key", 10*time.Second, func() bool { return !gxReadEIO(t, path, data) })
			openLat := time.Since(cmdStart)
			t.Logf("%s: reads resumed %v after enable-key started", backend, openLat.Round(time.Millisecond))
			if openLat > gxCloseBound {
				t.Errorf("reads resumed %v after enable-key, want <= %v", openLat, gxCloseBound)
			}
			if n, err := fd.ReadAt(buf, 0); err != nil || !bytes.Equal(buf[:n], data) {
				t.Errorf("old fd after enable: %d %v", n, err)
			}
			if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("after"), 0o600); err != nil {
				t.Errorf("write after enable: %v", err)
			}
			if now := e.status(mnt); now.Gate != "open" || now.PID != st.PID {
				t.Errorf("after enable: gate %q, pid %d (want open, same daemon %d)", now.Gate, now.PID, st.PID)
			}

			// The hook ran for both transitions with the details.
			var ev string
			gxWait(t, "on_key_event for Disabled", 5*time.Second, func() bool {
				b, err := os.ReadFile(filepath.Join(hookDir, "event-Disabled"))
				ev = string(b)
				return err == nil && strings.Contains(ev, "ENCVOL_TIME=")
			})
			for _, want := range []string{"ENCVOL_VOLUME=" + st.VolumeID, "ENCVOL_KEY_ID=" + st.KeyID, "ENCVOL_OLD_STATE=Enabled",
				"ENCVOL_NEW_STATE=Disabled", "ENCVOL_GATE=closed", "ENCVOL_MOUNTPOINT=" + st.Mountpoint, "ENCVOL_BACKING=" + backing, "ENCVOL_CAUSE="} {
				if !strings.Contains(ev, want) {
					t.Errorf("on_key_event environment lacks %q:\n%s", want, ev)
				}
			}
			gxWait(t, "on_key_event for Enabled", 5*time.Second, func() bool {
				b, err := os.ReadFile(filepath.Join(hookDir, "event-Enabled"))
				return err == nil && strings.Contains(string(b), "ENCVOL_GATE=open") && strings.Contains(string(b), "ENCVOL_OLD_STATE=Disabled")
			})
		})
	}
}

// TestGateHang: with on_revoke=hang a reader blocks while the key is
// disabled and completes with the right data after enable.
func TestGateHang(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			key := e.createKey("alias/hang")
			backing := e.newVolume("vol", key)
			mnt := e.mount(e.cfg, backing, "on_revoke=hang")
			data := gxRandom(t, 100_000)
			path := filepath.Join(mnt, "f")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back: %v", err)
			}

			cmdStart := time.Now()
			e.must("kms", "disable-key", key)
			gxWait(t, "gate closed (status)", 10*time.Second, func() bool { return e.status(mnt).Gate == "closed" })
			t.Logf("%s: hang gate closed %v after disable-key started", backend, time.Since(cmdStart).Round(time.Millisecond))

			type res struct {
				data []byte
				err  error
			}
			done := make(chan res, 1)
			go func() {
				b, err := os.ReadFile(path)
				done <- res{b, err}
			}()
			// Several check intervals: the reader must stay blocked.
			select {
			case r := <-done:
				t.Fatalf("read returned while the key is disabled (hang mode): %d bytes, %v", len(r.data), r.err)
			case <-time.After(4 * gxInterval):
			}
			if st := e.status(mnt); st.IO.GateRefusals == 0 {
				t.Errorf("no gate refusal counted while a reader waits: %+v", st.IO)
			}
			start := time.Now()
			e.must("kms", "enable-key", key)
			select {
			case r := <-done:
				if r.err != nil || !bytes.Equal(r.data, data) {
					t.Fatalf("blocked read after enable: %d bytes, %v", len(r.data), r.err)
				}
				t.Logf("%s: blocked reader completed %v after enable-key started", backend, time.Since(start).Round(time.Millisecond))
			case <-time.After(10 * time.Second):
				t.Fatal("reader still blocked 10 s after enable-key")
			}
		})
	}
}

// TestGateKMSOffline: the served KMS is killed; the mount keeps serving for
// offline_grace, then refuses, and resumes once the KMS is back on the same
// address and store.
func TestGateKMSOffline(t *testing.T) {
	const grace = 2 * time.Second
	e := newGXEnv(t, "served", "")
	key := e.createKey("alias/offline")
	backing := e.newVolume("vol", key)
	mnt := e.mount(e.cfg, backing, "offline_grace="+grace.String())
	data := gxRandom(t, 50_000)
	path := filepath.Join(mnt, "f")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// Kill right after a successful check so the grace clock starts now.
	last := e.status(mnt).LastSuccess
	gxWait(t, "a fresh successful key check", 5*time.Second, func() bool { return e.status(mnt).LastSuccess.After(last) })
	e.killKMS()
	killed := time.Now()

	// Well inside the grace period, I/O goes on: reads, and writes that
	// must reach the daemon (fsync) and so need the key.
	for i := 0; time.Since(killed) < grace-gxInterval; i++ {
		if gxReadEIO(t, path, data) {
			t.Fatalf("EIO %v after the KMS died, inside offline_grace %v", time.Since(killed).Round(time.Millisecond), grace)
		}
		f, err := os.Create(filepath.Join(mnt, fmt.Sprintf("grace-%d", i)))
		if err == nil {
			_, err = f.Write(data[:5000])
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		if err != nil {
			t.Fatalf("write %v after the KMS died, inside offline_grace %v: %v", time.Since(killed).Round(time.Millisecond), grace, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	served := time.Since(killed)
	gxWait(t, "EIO after offline_grace", grace+10*time.Second, func() bool { return gxReadEIO(t, path, data) })
	closedAfter := time.Since(killed)
	t.Logf("served %v after the KMS died; EIO from %v (grace %v, interval %v)", served.Round(time.Millisecond), closedAfter.Round(time.Millisecond), grace, gxInterval)
	if closedAfter < grace-gxInterval {
		t.Errorf("gate closed %v after the KMS died, before offline_grace", closedAfter)
	}
	if st := e.status(mnt); st.Gate != "closed" || st.KeyState != "Unreachable" {
		t.Errorf("status: gate %q, key state %q; want closed, Unreachable", st.Gate, st.KeyState)
	}

	e.startKMS()
	lat := gxWait(t, "reads after the KMS returned", 15*time.Second, func() bool { return !gxReadEIO(t, path, data) })
	t.Logf("reads resumed %v after the KMS restarted", lat.Round(time.Millisecond))
	if st := e.status(mnt); st.Gate != "open" || st.KeyState != "Enabled" {
		t.Errorf("status after return: gate %q, key state %q", st.Gate, st.KeyState)
	}
}

// TestGateGrantRevoked: bob mounts a volume under alice's key through a
// grant; revoking the grant closes bob's mount while alice's mount of
// another volume under the same key stays open.
func TestGateGrantRevoked(t *testing.T) {
	e := newGXEnv(t, "served", "")
	key := e.createKey("alias/shared")
	info := e.must("kms", "describe-key", key, "--json")
	var k struct {
		KeyID string `json:"key_id"`
		Arn   string `json:"arn"`
	}
	if err := json.Unmarshal([]byte(info.stdout), &k); err != nil || k.Arn == "" {
		t.Fatalf("describe-key --json: %v: %s", err, info.stdout)
	}
	aliceVol := e.newVolume("alice-vol", key)
	bobVol := e.newVolume("bob-vol", key)
	g := e.must("kms", "create-grant", key, "--grantee", "bob", "--operations", "Decrypt,DescribeKey", "--json")
	var grant struct {
		GrantID string `json:"grant_id"`
	}
	if err := json.Unmarshal([]byte(g.stdout), &grant); err != nil || grant.GrantID == "" {
		t.Fatalf("create-grant --json: %v: %s", err, g.stdout)
	}
	bobCfg := e.principalConfig(gxBob, "")

	aliceMnt := e.mount(e.cfg, aliceVol)
	bobMnt := e.mount(bobCfg, bobVol)
	aliceData, bobData := gxRandom(t, 40_000), gxRandom(t, 40_000)
	alicePath, bobPath := filepath.Join(aliceMnt, "a"), filepath.Join(bobMnt, "b")
	if err := os.WriteFile(alicePath, aliceData, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bobPath, bobData, 0o600); err != nil {
		t.Fatal(err)
	}

	cmdStart := time.Now()
	e.must("kms", "revoke-grant", key, grant.GrantID)
	gxWait(t, "EIO on bob's mount after revoke-grant", 10*time.Second, func() bool { return gxReadEIO(t, bobPath, bobData) })
	lat := time.Since(cmdStart)
	t.Logf("bob's mount closed %v after revoke-grant started", lat.Round(time.Millisecond))
	if lat > gxCloseBound {
		t.Errorf("bob's mount closed %v after revoke-grant, want <= %v", lat, gxCloseBound)
	}
	if st := e.status(bobMnt); st.KeyState != "AccessDenied" || st.Gate != "closed" {
		t.Errorf("bob's status: key state %q gate %q", st.KeyState, st.Gate)
	}
	// Alice's mount goes on through several more checks.
	for end := time.Now().Add(4 * gxInterval); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if gxReadEIO(t, alicePath, aliceData) {
			t.Fatal("alice's mount refused I/O after bob's grant was revoked")
		}
	}
	if st := e.status(aliceMnt); st.Gate != "open" || st.KeyState != "Enabled" {
		t.Errorf("alice's status: key state %q gate %q", st.KeyState, st.Gate)
	}
}
