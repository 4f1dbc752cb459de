package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/encvol/encvol/volume"
)

// runBounded runs encvol with this env's config and kills it after limit,
// reporting exit code -1: a mount that recursed into itself never returns.
func (e *env) runBounded(limit time.Duration, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, encvolBin, append([]string{"--config", e.cfg}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.code = -1
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("run encvol %v: %v", args, err)
	}
	return r
}

// abortIfMounted tears down a mount that must not exist: it aborts the
// FUSE connection first, because a mount serving itself hangs umount.
func abortIfMounted(t *testing.T, mnt string) {
	t.Helper()
	dev, err := mountDeviceOf(mnt)
	if err != nil || dev == "" {
		return
	}
	minor := dev[strings.IndexByte(dev, ':')+1:]
	if err := os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0); err != nil {
		t.Logf("abort FUSE connection %s: %v", dev, err)
	}
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		t.Logf("unmount %s: %v", mnt, err)
	}
}

// killUsing kills every process whose command line names file: the
// daemons started with this test's configuration.
func killUsing(t *testing.T, file string) {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(file)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// mountDeviceOf returns MAJ:MIN of the mount at mnt, "" when none is there.
func mountDeviceOf(mnt string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == mnt {
			return f[2], nil
		}
	}
	return "", nil
}

// TestMountOverlapRefused: a mountpoint that is the backing directory,
// lies inside it, or contains it (by any path: symlink, bind mount) is
// refused at once with one sentence, and nothing is mounted. Before, the
// daemon recursed into its own mount until it died of thread exhaustion
// and `ls` and `encvol umount` hung.
func TestMountOverlapRefused(t *testing.T) {
	e := newEnv(t, "")
	b := filepath.Join(e.dir, "b")
	e.must("create", "--backing", b)
	inner := filepath.Join(b, "inner")
	if err := os.Mkdir(inner, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(e.dir, "link")
	if err := os.Symlink(b, link); err != nil {
		t.Fatal(err)
	}
	bind := filepath.Join(e.dir, "bind")
	if err := os.Mkdir(bind, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(b, bind, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(bind, syscall.MNT_DETACH) })
	// A volume whose backing directory sits inside the mountpoint.
	outer := filepath.Join(e.dir, "outer")
	nested := filepath.Join(outer, "b")
	if err := os.Mkdir(outer, 0o700); err != nil {
		t.Fatal(err)
	}
	e.must("create", "--backing", nested)

	cases := []struct {
		name, backing, mountpoint, want string
	}{
		{"mountpoint is the backing", b, b, "is the backing directory"},
		{"mountpoint through a symlink to the backing", b, link, "is the backing directory"},
		{"mountpoint inside the backing", b, inner, "is inside the backing directory"},
		{"mountpoint inside the backing through a symlink", link, inner, "is inside the backing directory"},
		{"mountpoint inside a bind mount of the backing", b, filepath.Join(bind, "inner"), "is inside the backing directory"},
		{"backing inside the mountpoint", nested, outer, "is inside the mountpoint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mp, err := volume.CanonicalMountpoint(c.mountpoint)
			if err != nil {
				t.Fatal(err)
			}
			// mount(2) follows a symlink at the mountpoint: look there too.
			real, err := filepath.EvalSymlinks(c.mountpoint)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				killUsing(t, e.cfg)
				abortIfMounted(t, mp)
				abortIfMounted(t, real)
			})
			r := e.runBounded(20*time.Second, "mount", c.backing, c.mountpoint)
			if r.code == -1 {
				t.Fatalf("mount did not return within 20 s: %v", r)
			}
			if r.code != exitUsage {
				t.Fatalf("want exit %d (usage), got %v", exitUsage, r)
			}
			if r.took > 5*time.Second {
				t.Errorf("refusal took %v, want under 5 s", r.took)
			}
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("stderr does not say %q: %v", c.want, r)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("want one line, got %q", r.stderr)
			}
			for _, p := range []string{mp, real} {
				if dev, _ := mountDeviceOf(p); dev != "" {
					t.Errorf("%s was mounted anyway", p)
				}
			}
		})
	}
}

// TestMountVolumeOnce: a volume serves one mount at a time, whatever path
// reaches its backing directory; the refusal names the mountpoint and the
// daemon of the first mount. A daemon that dies gives the volume back
// without any cleanup.
func TestMountVolumeOnce(t *testing.T) {
	e := newEnv(t, "")
	b := filepath.Join(e.dir, "b")
	e.must("create", "--backing", b)
	link := filepath.Join(e.dir, "link")
	if err := os.Symlink(b, link); err != nil {
		t.Fatal(err)
	}
	m1, m2 := filepath.Join(e.dir, "m1"), filepath.Join(e.dir, "m2")
	for _, m := range []string{m1, m2} {
		if err := os.Mkdir(m, 0o755); err != nil {
			t.Fatal(err)
		}
		cleanupMount(t, m)
	}
	e.must("mount", b, m1)
	pid := daemonPID(t, m1)

	for _, backing := range []string{b, link} {
		for _, extra := range [][]string{nil, {"-f"}, {"-o", "ro"}} {
			args := append([]string{"mount", backing, m2}, extra...)
			r := e.runBounded(20*time.Second, args...)
			if r.code != exitMounted {
				t.Fatalf("encvol %s: want exit %d (already mounted), got %v", strings.Join(args, " "), exitMounted, r)
			}
			for _, want := range []string{m1, strconv.Itoa(pid), "already mounted"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("encvol %s: the refusal does not name %q: %v", strings.Join(args, " "), want, r)
				}
			}
			if mounted(t, m2) {
				t.Fatalf("encvol %s mounted the volume a second time", strings.Join(args, " "))
			}
		}
	}

	// What the first mount stored is what the next one sees.
	f, err := os.Create(filepath.Join(m1, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("one"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the killed daemon to exit", 10*time.Second, func() bool { return exited(pid) })
	abortIfMounted(t, m1)
	e.must("mount", b, m2)
	got, err := os.ReadFile(filepath.Join(m2, "f"))
	if err != nil || string(got) != "one" {
		t.Fatalf("after the first daemon died: read %q, %v; want \"one\"", got, err)
	}
	e.must("umount", m2)
}

// exited reports whether pid has ended (a zombie has: it holds no files).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// daemonPID asks the daemon serving mnt for its process ID.
func daemonPID(t *testing.T, mnt string) int {
	t.Helper()
	st := mountStatus(t, mnt)
	if st.PID <= 0 {
		t.Fatalf("status of %s has no pid", mnt)
	}
	return st.PID
}
