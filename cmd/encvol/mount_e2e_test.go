package main

import (
	"bytes"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/volume"
)

// These tests drive the real binary against real FUSE mounts and the
// embedded local KMS. FUSE is required: without /dev/fuse they fail.

var encvolBin string // built once by TestMain

func TestMain(m *testing.M) {
	if dir := os.Getenv(envSnapshotWriter); dir != "" {
		os.Exit(snapshotWriter(dir)) // a child process of TestSnapshotWhileWriting
	}
	dir, err := os.MkdirTemp("", "encvol-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable so the non-root test user can run it.
	os.Chmod(dir, 0o755)
	encvolBin = filepath.Join(dir, "encvol")
	// Without cgo, as scripts build it: runtime/secret crashes a
	// process that makes a cgo call inside it (keywrap/secret_cgo.go).
	// The test binary itself has cgo for the race detector.
	build := exec.Command("go", "build", "-o", encvolBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go build ./cmd/encvol:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binarySecretMemory reports whether the encvol binary under test erases
// key temporaries with runtime/secret (built with GOEXPERIMENT=runtimesecret
// and CGO_ENABLED=0), which the test binary cannot tell for itself.
func binarySecretMemory(t *testing.T) bool {
	t.Helper()
	bi, err := buildinfo.ReadFile(encvolBin)
	if err != nil {
		t.Fatal(err)
	}
	exp, cgo := false, true
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOEXPERIMENT":
			exp = slices.Contains(strings.Split(s.Value, ","), "runtimesecret")
		case "CGO_ENABLED":
			cgo = s.Value != "0"
		}
	}
	return exp && !cgo
}

type env struct {
	t   *testing.T
	dir string
	cfg string
}

// newEnv makes a temp dir with a config for a local KMS in it; extra is
// appended to the config.
func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE is required for these tests: %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "encvol.toml")
	body := fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n%s", filepath.Join(dir, "kms"), extra)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, cfg: cfg}
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout: %s\nstderr: %s", r.code, r.took, r.stdout, r.stderr)
}

func runBin(t *testing.T, extraEnv []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(encvolBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), extraEnv...)
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run encvol %v: %v", args, err)
	}
	return r
}

// run runs encvol with this env's config.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return runBin(e.t, nil, append([]string{"--config", e.cfg}, args...)...)
}

func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("encvol %s: %v", strings.Join(args, " "), r)
	}
	return r
}

func mounted(t *testing.T, p string) bool {
	t.Helper()
	mp, err := volume.CanonicalMountpoint(p)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := volume.IsMounted(mp)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// cleanupMount makes sure nothing stays mounted after a test.
func cleanupMount(t *testing.T, mnt string) {
	t.Cleanup(func() {
		if mounted(t, mnt) {
			runBin(t, nil, "umount", mnt)
		}
		if mounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		if mp, err := volume.CanonicalMountpoint(mnt); err == nil {
			os.Remove(volume.LogPath(mp))
		}
	})
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMountRoundTrip(t *testing.T) {
	e := newEnv(t, "")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)

	r := e.must("create", "--backing", backing, "--json")
	var created map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || !strings.HasPrefix(fmt.Sprint(created["volume_id"]), "vol-") {
		t.Fatalf("create --json: %v\n%s", err, r.stdout)
	}
	if r := e.run("create", "--backing", backing); r.code == 0 || !strings.Contains(r.stderr, "already holds a volume") {
		t.Errorf("second create on the same dir: %v", r)
	}

	r = e.must("mount", backing, mnt)
	if !mounted(t, mnt) {
		t.Fatalf("mount returned but nothing is mounted: %v", r)
	}
	// The daemon must already answer: no waiting here.
	data := randomBytes(t, 1<<20+123)
	if err := os.WriteFile(filepath.Join(mnt, "file.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "dir", "sub", "note.txt"), []byte("hello encvol\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "file.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v (equal %v)", err, bytes.Equal(got, data))
	}

	// A second mount of the same mountpoint is refused.
	if r := e.run("mount", backing, mnt); r.code == 0 || !strings.Contains(r.stderr, "already") {
		t.Errorf("double mount: %v", r)
	}

	r = e.must("status", "--json")
	var list []volume.Status
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	var st *volume.Status
	for i := range list {
		if list[i].Mountpoint == mnt {
			st = &list[i]
		}
	}
	if st == nil {
		t.Fatalf("status does not list %s:\n%s", mnt, r.stdout)
	}
	if st.Gate != "open" || st.KeyState != "Enabled" || st.VolumeID != created["volume_id"] || st.IO.BytesWritten < uint64(len(data)) || st.PID <= 0 || st.Backing != backing {
		t.Errorf("status %+v", st)
	}
	e.must("status", mnt)

	e.must("umount", mnt)
	if mounted(t, mnt) {
		t.Fatal("still mounted after umount")
	}
	if _, err := os.Stat(volume.SocketPath(mnt)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	if r := e.run("umount", mnt); r.code == 0 || !strings.Contains(r.stderr, "not mounted") {
		t.Errorf("umount of an unmounted dir: %v", r)
	}

	e.must("mount", backing, mnt)
	got, err = os.ReadFile(filepath.Join(mnt, "file.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after remount: %v", err)
	}
	note, err := os.ReadFile(filepath.Join(mnt, "dir", "sub", "note.txt"))
	if err != nil || string(note) != "hello encvol\n" {
		t.Fatalf("small file after remount: %q %v", note, err)
	}
	e.must("umount", mnt)

	// Nothing readable in the backing directory.
	filepath.Walk(backing, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(info.Name(), "note") || strings.Contains(info.Name(), "file.bin") {
			t.Errorf("plaintext name in backing: %s", p)
		}
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte("hello encvol")) || (len(b) > 4096 && bytes.Contains(b, data[1000:1064])) {
				t.Errorf("plaintext content in backing file %s", p)
			}
		}
		return nil
	})
}

func TestMountNamedVolumeForeground(t *testing.T) {
	e := newEnv(t, "")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)
	// Append a named volume to the config.
	f, _ := os.OpenFile(e.cfg, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "[volumes.data]\nbacking = %q\nmountpoint = %q\nsector_size = 1024\non_revoke = \"hang\"\n", backing, mnt)
	f.Close()
	e.must("create", "data")
	h, err := keywrap.ReadHeader(backing)
	if err != nil || h.SectorSize != 1024 {
		t.Fatalf("named create: %v %+v", err, h)
	}

	cmd := exec.Command(encvolBin, "--config", e.cfg, "mount", "data", "-f")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitUntil(t, "foreground mount", 10*time.Second, func() bool { return mounted(t, mnt) })
	if err := os.WriteFile(filepath.Join(mnt, "x"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.must("status", mnt, "--json")
	var st volume.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Name != "data" || st.OnRevoke != "hang" {
		t.Errorf("status: %v %+v", err, st)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("foreground mount exited with %v: %s", err, errb.String())
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("foreground mount did not exit on SIGTERM")
	}
	if mounted(t, mnt) {
		t.Error("still mounted after SIGTERM")
	}
}

func TestMountTamperedHeader(t *testing.T) {
	e := newEnv(t, "")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)
	e.must("create", "--backing", backing)
	path := filepath.Join(backing, keywrap.HeaderFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(data, []byte("4096"), []byte("8192"), 1)
	if bytes.Equal(tampered, data) {
		t.Fatalf("cannot find the sector size in the header:\n%s", data)
	}
	os.WriteFile(path, tampered, 0o600)
	r := e.run("mount", backing, mnt)
	if r.code == 0 {
		t.Fatalf("mount with a tampered header succeeded: %v", r)
	}
	if !strings.Contains(r.stderr, "failed its MAC check") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("want one clear line about the MAC: %v", r)
	}
	if mounted(t, mnt) {
		t.Error("something is mounted after a failed mount")
	}
}

func TestMountDisabledKey(t *testing.T) {
	e := newEnv(t, "")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)
	e.must("kms", "create-key", "--alias", "alias/e2e")
	e.must("create", "--backing", backing, "--key", "alias/e2e")
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	e.must("kms", "disable-key", "alias/e2e")
	r := e.run("mount", backing, mnt)
	if r.code != exitKeyState {
		t.Fatalf("want exit %d: %v", exitKeyState, r)
	}
	if r.took > 2*time.Second {
		t.Errorf("failing mount took %v, want < 2 s", r.took)
	}
	msg := strings.TrimSpace(r.stderr)
	for _, want := range []string{h.KeyID, "Disabled", "encvol --config " + e.cfg + " kms enable-key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("want one line: %s", msg)
	}
	if mounted(t, mnt) {
		t.Error("mounted with a disabled key")
	}
	// The fix the message names works.
	e.must("kms", "enable-key", "alias/e2e")
	e.must("mount", backing, mnt)
	e.must("umount", mnt)
}

func TestMountBadArguments(t *testing.T) {
	e := newEnv(t, "")
	mnt := filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"mount", filepath.Join(e.dir, "nothing"), mnt}, exitUsage, "backing directory"},
		{[]string{"mount", e.dir, mnt}, exitUsage, "is not an encvol volume"},
		{[]string{"mount", "nosuchvolume"}, exitUsage, `no volume named "nosuchvolume"`},
		{[]string{"mount", e.dir, mnt, "-o", "frobnicate"}, exitUsage, `unknown mount option "frobnicate"`},
		{[]string{"create"}, exitUsage, "--backing"},
		{[]string{"create", "--backing", filepath.Join(e.dir, "x"), "--sector-size", "1000"}, exitUsage, "power of two"},
		{[]string{"create", "--backing", filepath.Join(e.dir, "y"), "--kms", "other"}, exitUsage, `no KMS named "other"`},
	}
	for _, c := range cases {
		r := e.run(c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("encvol %s: want exit %d and %q: %v", strings.Join(c.args, " "), c.code, c.want, r)
		}
	}
}

// installMountHelper puts scripts/mount.fuse.encvol where mount(8) looks
// for helpers of type fuse.encvol.
func installMountHelper(t *testing.T) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "scripts", "mount.fuse.encvol"))
	if err != nil {
		t.Fatal(err)
	}
	dst := "/sbin/mount.fuse.encvol"
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, src) {
		return
	}
	if err := os.WriteFile(dst+".tmp", src, 0o755); err != nil {
		t.Fatalf("install mount helper: %v", err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		t.Fatal(err)
	}
}

func TestMountTypeFuseEncvol(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mount -t needs root")
	}
	installMountHelper(t)
	e := newEnv(t, "")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)
	e.must("create", "--backing", backing)
	helperEnv := append(os.Environ(), "ENCVOL_BIN="+encvolBin)

	mount := exec.Command("mount", "-t", "fuse.encvol", backing, mnt, "-o", "config="+e.cfg+",nodev,nosuid")
	mount.Env = helperEnv
	if out, err := mount.CombinedOutput(); err != nil {
		t.Fatalf("mount -t fuse.encvol: %v\n%s", err, out)
	}
	if !mounted(t, mnt) {
		t.Fatal("mount -t fuse.encvol returned but nothing is mounted")
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("via mount(8)"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	// The daemon notices the unmount, zeroizes and removes its socket.
	waitUntil(t, "daemon exit after umount(8)", 10*time.Second, func() bool {
		_, err := os.Stat(volume.SocketPath(mnt))
		return errors.Is(err, os.ErrNotExist)
	})

	// An fstab line.
	fstab := filepath.Join(e.dir, "fstab")
	line := fmt.Sprintf("%s %s fuse.encvol config=%s,noauto,nofail,_netdev 0 0\n", backing, mnt, e.cfg)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	mount = exec.Command("mount", "--fstab", fstab, mnt)
	mount.Env = helperEnv
	if out, err := mount.CombinedOutput(); err != nil {
		t.Fatalf("mount --fstab: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || string(got) != "via mount(8)" {
		t.Fatalf("after fstab mount: %q %v", got, err)
	}
	e.must("umount", mnt)
}

// testUser returns the uid/gid of a throwaway user, creating it if needed.
func testUser(t *testing.T) (uint32, uint32) {
	t.Helper()
	const name = "encvoltest"
	u, err := user.Lookup(name)
	if err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v\n%s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatal(err)
		}
	}
	var uid, gid uint32
	fmt.Sscan(u.Uid, &uid)
	fmt.Sscan(u.Gid, &gid)
	return uid, gid
}

func TestMountNonRootFusermount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test switches to a throwaway user and needs root")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatal("fusermount3 (fuse3) is required")
	}
	// fusermount3 opens /dev/fuse as the calling user; Debian's udev rule
	// makes it crw-rw-rw-, some containers create it 0600. Give it the
	// standard mode for this test and put the original back afterwards.
	if st, err := os.Stat("/dev/fuse"); err == nil && st.Mode().Perm()&0o006 != 0o006 {
		orig := st.Mode().Perm()
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Fatalf("/dev/fuse is %v and cannot be made 0666 for fusermount3: %v", orig, err)
		}
		t.Logf("/dev/fuse was %v; set to 0666 (the Debian default) for this test", orig)
		t.Cleanup(func() { os.Chmod("/dev/fuse", orig) })
	}
	uid, gid := testUser(t)
	home, err := os.MkdirTemp("", "encvol-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	os.Chown(home, int(uid), int(gid))
	cfg := filepath.Join(home, "encvol.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[kms.mine]\ntype = \"local\"\npath = %q\n", filepath.Join(home, "kms"))), 0o644)
	backing, mnt := filepath.Join(home, "b"), filepath.Join(home, "m")
	os.Mkdir(mnt, 0o755)
	os.Chown(mnt, int(uid), int(gid))
	cleanupMount(t, mnt)

	asUser := func(args ...string) result {
		t.Helper()
		cmd := exec.Command("setpriv", append([]string{"--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups",
			"env", "-i", "HOME=" + home, "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", encvolBin, "--config", cfg}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		start := time.Now()
		err := cmd.Run()
		r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	mustUser := func(args ...string) result {
		t.Helper()
		r := asUser(args...)
		if r.code != 0 {
			t.Fatalf("as %d: encvol %s: %v", uid, strings.Join(args, " "), r)
		}
		return r
	}
	mustUser("create", "--backing", backing)
	mustUser("mount", backing, mnt)
	if !mounted(t, mnt) {
		t.Fatal("nothing mounted")
	}
	// Written as the user (root would be refused: no allow_other).
	write := exec.Command("setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups",
		"sh", "-c", "echo user-data > "+filepath.Join(mnt, "u.txt")+" && cat "+filepath.Join(mnt, "u.txt"))
	if out, err := write.CombinedOutput(); err != nil || string(out) != "user-data\n" {
		t.Fatalf("user write/read: %v %q", err, out)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "u.txt")); err == nil {
		t.Error("root could read a non-root mount without allow_other")
	}
	r := mustUser("status", "--json")
	if !strings.Contains(r.stdout, mnt) {
		t.Errorf("user status does not list the mount: %s", r.stdout)
	}
	mustUser("umount", mnt)
	if mounted(t, mnt) {
		t.Fatal("still mounted after encvol umount")
	}

	// fusermount3 -u by the user also ends the daemon cleanly.
	mustUser("mount", backing, mnt)
	fu := exec.Command("setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups", "fusermount3", "-u", mnt)
	if out, err := fu.CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v\n%s", err, out)
	}
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("encvol-%d", uid))
	t.Cleanup(func() { os.RemoveAll(sock) })
	waitUntil(t, "daemon exit after fusermount3 -u", 10*time.Second, func() bool {
		ents, _ := os.ReadDir(sock)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".sock") {
				return false
			}
		}
		return true
	})
	if mounted(t, mnt) {
		t.Fatal("still mounted after fusermount3 -u")
	}
}

// A daemon killed with SIGKILL leaves its mount behind; status shows it and
// umount removes it.
func TestStatusShowsMountWithoutDaemon(t *testing.T) {
	e := newEnv(t, "")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)
	e.must("create", "--backing", backing)
	e.must("mount", backing, mnt)

	var st volume.Status
	if err := json.Unmarshal([]byte(e.must("status", mnt, "--json").stdout), &st); err != nil || st.PID <= 0 {
		t.Fatalf("status --json: %v %+v", err, st)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the killed daemon to exit", 10*time.Second, func() bool {
		return syscall.Kill(st.PID, 0) == syscall.ESRCH
	})
	if !mounted(t, mnt) {
		t.Fatal("the mount went away with its daemon; this test needs it to stay")
	}

	r := e.must("status")
	if !strings.Contains(r.stdout, mnt) || !strings.Contains(r.stdout, "daemon gone") || !strings.Contains(r.stdout, "encvol umount "+mnt) {
		t.Errorf("status does not show the mount without daemon:\n%s", r.stdout)
	}
	var list []volume.Status
	if err := json.Unmarshal([]byte(e.must("status", "--json").stdout), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list {
		if s.Mountpoint == mnt {
			found = s.Orphaned && s.Gate == "gone" && s.Backing == backing
		}
	}
	if !found {
		t.Errorf("status --json: no orphaned entry for %s: %+v", mnt, list)
	}
	if r := e.run("status", mnt); r.code == 0 || !strings.Contains(r.stderr, "daemon is gone") {
		t.Errorf("status MOUNTPOINT of a mount without daemon: %v", r)
	}

	e.must("umount", mnt)
	if mounted(t, mnt) {
		t.Fatal("still mounted after umount")
	}
	if r := e.must("status"); strings.Contains(r.stdout, mnt) {
		t.Errorf("status still lists %s after umount:\n%s", mnt, r.stdout)
	}
}
