package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/volume"
)

// newVolumeEnv is a new environment with a volume in it and an empty
// mountpoint that is unmounted when the test ends.
func newVolumeEnv(t *testing.T) (e *env, backing, mnt string) {
	t.Helper()
	e = newEnv(t, "")
	backing, mnt = filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, mnt)
	e.must("create", "--backing", backing)
	return e, backing, mnt
}

// mountinfoOptions returns the per-mount and the superblock options of
// the mount at mnt, from /proc/self/mountinfo.
func mountinfoOptions(t *testing.T, mnt string) (mountOpts, superOpts []string) {
	t.Helper()
	mp, err := volume.CanonicalMountpoint(mnt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != mp {
			continue
		}
		for i := 6; i < len(f)-3; i++ {
			if f[i] == "-" {
				return strings.Split(f[5], ","), strings.Split(f[i+3], ",")
			}
		}
	}
	t.Fatalf("%s is not in /proc/self/mountinfo", mp)
	return nil, nil
}

func hasAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// writeScript puts an executable shell script at p.
func writeScript(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// readAtime reads p after dropping its cached pages (so the read reaches
// the daemon) and returns its access time afterwards. The access time was
// set to 2020, before the file's modification time, so any policy but
// noatime (relatime included) updates it on that read.
func readAtime(t *testing.T, p string) time.Time {
	t.Helper()
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(p, old, time.Time{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_ATIME, &st); err != nil {
		t.Fatal(err)
	}
	return time.Unix(st.Atime.Sec, int64(st.Atime.Nsec))
}

// TestMountOptionsHonoured: -o noexec and noatime (and the other flags) are
// enforced and show in /proc/self/mountinfo, also through mount(8); options
// encvol cannot honour are refused naming the option.
func TestMountOptionsHonoured(t *testing.T) {
	e, backing, mnt := newVolumeEnv(t)

	// Without options: scripts run and reads update the access time, so
	// the checks below can tell the options apart from the defaults.
	e.must("mount", backing, mnt, "-o", "defaults,nosuid,nodev,noauto,nofail,_netdev")
	script := filepath.Join(mnt, "s.sh")
	writeScript(t, script)
	if out, err := exec.Command(script).CombinedOutput(); err != nil || string(out) != "ran\n" {
		t.Fatalf("a script on a mount without noexec: %v %q", err, out)
	}
	data := filepath.Join(mnt, "data")
	if err := os.WriteFile(data, []byte("access time probe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if at := readAtime(t, data); at.Year() == 2020 {
		t.Fatalf("a read without noatime left the access time at %v: the backing file system does not update access times, which this test needs", at)
	}
	mo, _ := mountinfoOptions(t, mnt)
	if !hasAll(mo, "nosuid", "nodev") || hasAll(mo, "noexec") || hasAll(mo, "noatime") {
		t.Errorf("default mount options %v: want nosuid,nodev and neither noexec nor noatime", mo)
	}
	e.must("umount", mnt)

	e.must("mount", backing, mnt, "-o", "noexec,noatime,nodiratime,nosymfollow,sync")
	mo, so := mountinfoOptions(t, mnt)
	if !hasAll(mo, "nosuid", "nodev", "noexec", "noatime", "nodiratime", "nosymfollow") || !hasAll(so, "sync") {
		t.Errorf("mountinfo of -o noexec,noatime,nodiratime,nosymfollow,sync: mount %v, super %v", mo, so)
	}
	if err := exec.Command(script).Run(); !errors.Is(err, syscall.EACCES) {
		t.Errorf("running a script on a noexec mount: want EACCES, got %v", err)
	}
	if at := readAtime(t, data); at.Year() != 2020 {
		t.Errorf("a read on a noatime mount changed the access time to %v", at)
	}
	e.must("umount", mnt)

	// noxattr: refused on that mount, kept for the next.
	e.must("mount", backing, mnt)
	if err := unix.Setxattr(data, "user.kept", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	e.must("umount", mnt)
	e.must("mount", backing, mnt, "-o", "noxattr")
	if _, err := unix.Getxattr(data, "user.kept", make([]byte, 8)); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("getxattr on a noxattr mount: %v, want EOPNOTSUPP", err)
	}
	if err := unix.Setxattr(data, "user.other", []byte("v"), 0); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("setxattr on a noxattr mount: %v, want EOPNOTSUPP", err)
	}
	e.must("umount", mnt)
	e.must("mount", backing, mnt)
	v := make([]byte, 8)
	if n, err := unix.Getxattr(data, "user.kept", v); err != nil || string(v[:n]) != "v" {
		t.Errorf("user.kept after the noxattr mount: %q, %v", v[:n], err)
	}
	e.must("umount", mnt)

	for opt, want := range map[string]string{
		"suid": "mount option suid is refused", "dev": "mount option dev is refused",
		"strictatime": "mount option strictatime is refused", "dirsync": "mount option dirsync is refused",
		"noexec,frob": `unknown mount option "frob"`, "max_read=4096": `unknown mount option "max_read=4096"`,
	} {
		r := e.run("mount", backing, mnt, "-o", opt)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("-o %s: want a refusal saying %q: %v", opt, want, r)
		}
		if mounted(t, mnt) {
			t.Fatalf("-o %s mounted", opt)
		}
	}

	// mount(8) passes the options on through mount.fuse.encvol.
	installMountHelper(t)
	mount := exec.Command("mount", "-t", "fuse.encvol", backing, mnt, "-o", "config="+e.cfg+",noexec,noatime")
	mount.Env = append(os.Environ(), "ENCVOL_BIN="+encvolBin)
	if out, err := mount.CombinedOutput(); err != nil {
		t.Fatalf("mount -t fuse.encvol -o noexec,noatime: %v\n%s", err, out)
	}
	if mo, _ := mountinfoOptions(t, mnt); !hasAll(mo, "noexec", "noatime", "nosuid", "nodev") {
		t.Errorf("mount -t fuse.encvol -o noexec,noatime: mountinfo has %v", mo)
	}
	if err := exec.Command(script).Run(); !errors.Is(err, syscall.EACCES) {
		t.Errorf("running a script on a noexec mount made by mount(8): want EACCES, got %v", err)
	}
	e.must("umount", mnt)
}

// TestMountNonEmptyMountpoint: a mountpoint that holds files is refused
// with the way out (-o nonempty), which then mounts over them; they are
// there again after the unmount.
func TestMountNonEmptyMountpoint(t *testing.T) {
	e, backing, mnt := newVolumeEnv(t)
	keep := filepath.Join(mnt, "keep.txt")
	if err := os.WriteFile(keep, []byte("underneath"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := e.run("mount", backing, mnt)
	if r.code == 0 || mounted(t, mnt) {
		t.Fatalf("mounted over a non-empty directory without -o nonempty: %v", r)
	}
	for _, want := range []string{mnt, "not empty", "keep.txt", "hide", "-o nonempty"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal does not say %q: %v", want, r)
		}
	}
	if r := e.run("mount", backing, mnt, "-f"); r.code == 0 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("foreground mount over a non-empty directory: %v", r)
	}

	e.must("mount", backing, mnt, "-o", "nonempty")
	if _, err := os.Stat(keep); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file underneath is visible through the mount: %v", err)
	}
	e.must("umount", mnt)
	if b, err := os.ReadFile(keep); err != nil || string(b) != "underneath" {
		t.Errorf("the file underneath after unmount: %q %v", b, err)
	}
}
