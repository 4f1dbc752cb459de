package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/volume"
)

// TestMetaTamperEndToEnd: a new volume (and its copy) is format version 3;
// a uid changed in a file's stored mode and owner is EIO plus a log line in
// the mount, and fsck reports it as bad-mode-owner.
func TestMetaTamperEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/meta")
	backing := e.newVolume("vol", key)
	maHeaderVersion(t, backing, "v3")
	mnt := e.mount(e.cfg, backing)
	victim := gxRandom(t, 12_345)
	if err := os.WriteFile(filepath.Join(mnt, "victim"), victim, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(mnt, "victim"), 1234, 1234); err != nil {
		t.Fatal(err)
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	// A copy is of the current format and keeps the record.
	dst := filepath.Join(e.dir, "copy")
	e.must("copy", backing, "--backing", dst, "--key", key)
	maHeaderVersion(t, dst, "v3")
	cmnt := e.mount(e.cfg, dst)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(cmnt, "victim"), &st); err != nil || st.Uid != 1234 || st.Mode&0o7777 != 0o640 {
		t.Errorf("victim in the copy: uid %d mode %o, %v", st.Uid, st.Mode&0o7777, err)
	}
	gxUnmount(t, cmnt)
	waitUnlocked(t, dst)

	// The attacker gives the file to root.
	file := fxBackingFile(t, backing, int64(len(victim)))
	rec, err := fusefs.GetXattr(file, fusefs.MetaXattr)
	if err != nil {
		t.Fatal(err)
	}
	copy(rec[5:9], []byte{0, 0, 0, 0})
	if err := unix.Lsetxattr(file, fusefs.MetaXattr, rec, 0); err != nil {
		t.Fatal(err)
	}

	mnt = backing + ".mnt2"
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gxUnmount(t, mnt) })
	e.must("mount", backing, mnt)
	if err := unix.Lstat(filepath.Join(mnt, "victim"), &st); !errors.Is(err, syscall.EIO) {
		t.Errorf("stat of the tampered file: uid %d, err %v; want EIO", st.Uid, err)
	}
	mp, err := volume.CanonicalMountpoint(mnt)
	if err != nil {
		t.Fatal(err)
	}
	maWaitLog(t, volume.LogPath(mp), "stored mode and owner failed authentication")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	r := e.runWith(e.cfg, "fsck", backing, "--json")
	rep := fxReport(t, r)
	if got := strings.Join(fxFindings(rep), "\n"); r.code != 4 || !strings.Contains(got, "error bad-mode-owner /victim") {
		t.Errorf("fsck of the tampered volume: exit %d, findings:\n%s", r.code, got)
	}
}

// maHeaderVersion checks the magic line of backing's header.
func maHeaderVersion(t *testing.T, backing, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(backing, "encvol.volume"))
	if err != nil {
		t.Fatal(err)
	}
	if line, _, _ := strings.Cut(string(b), "\n"); line != "encvol-volume "+want {
		t.Fatalf("%s: header %q, want format %s", backing, line, want)
	}
}

// maWaitLog waits until the mount's log file holds want: the daemon
// writes its log lines after it answered the request.
func maWaitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mount log does not say %q:\n%s", want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
