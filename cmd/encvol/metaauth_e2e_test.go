package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/sector"
)

// TestMetaTamperEndToEnd: a new volume (and its copy) is format version 5;
// a uid changed in a file's stored mode and owner is EIO plus a log line in
// the mount, and fsck reports it as bad-mode-owner.
func TestMetaTamperEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/meta")
	backing := e.newVolume("vol", key)
	maHeaderVersion(t, backing, "v5")
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
	maHeaderVersion(t, dst, "v5")
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

	mnt, logPath := maRemount(t, e, backing)
	if err := unix.Lstat(filepath.Join(mnt, "victim"), &st); !errors.Is(err, syscall.EIO) {
		t.Errorf("stat of the tampered file: uid %d, err %v; want EIO", st.Uid, err)
	}
	maWaitLog(t, logPath, "stored mode and owner failed authentication")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	r := e.runWith(e.cfg, "fsck", backing, "--json")
	rep := fxReport(t, r)
	if got := strings.Join(fxFindings(rep), "\n"); r.code != 4 || !strings.Contains(got, "error bad-mode-owner /victim") {
		t.Errorf("fsck of the tampered volume: exit %d, findings:\n%s", r.code, got)
	}
}

// maRemount mounts backing a second time, on a mountpoint of its own, and
// returns it with the path of the mount's log.
func maRemount(t *testing.T, e *gxEnv, backing string) (mnt, logPath string) {
	t.Helper()
	return hxMount(t, e, backing, "mnt2")
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

// TestXattrMovedEndToEnd: a user attribute's sealed value copied from one
// file onto another (where the attribute's backing name is the same) is
// EIO there, with a log line, and an fsck error.
func TestXattrMovedEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	backing := e.newVolume("vol", e.createKey("alias/xattr"))
	mnt := e.mount(e.cfg, backing)
	sizes := map[string]int{"first": 1001, "second": 2002}
	for name, n := range sizes {
		p := filepath.Join(mnt, name)
		if err := os.WriteFile(p, gxRandom(t, n), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.owner-note", []byte("note of "+name), 0); err != nil {
			t.Fatal(err)
		}
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	first, second := fxBackingFile(t, backing, 1001), fxBackingFile(t, backing, 2002)
	attrs, err := fusefs.ListXattrs(first)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, a := range attrs {
		if fusefs.IsOwnXattr(a) {
			continue
		}
		val, err := fusefs.GetXattr(first, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Lsetxattr(second, a, val, 0); err != nil {
			t.Fatal(err)
		}
		moved++
	}
	if moved != 1 {
		t.Fatalf("%d user attributes on the first file's backing, want 1", moved)
	}

	mnt, logPath := maRemount(t, e, backing)
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(mnt, "second"), "user.owner-note", buf); !errors.Is(err, syscall.EIO) {
		t.Errorf("the moved value: %q, %v; want EIO", buf[:max(n, 0)], err)
	}
	maWaitLog(t, logPath, "extended attribute failed authentication")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)
	r := e.runWith(e.cfg, "fsck", backing, "--json")
	if got := strings.Join(fxFindings(fxReport(t, r)), "\n"); r.code != 4 || !strings.Contains(got, "error bad-xattr /second") {
		t.Errorf("fsck: exit %d, findings:\n%s", r.code, got)
	}
}

// TestCutAtSectorBoundaryEndToEnd: a file whose backing is cut after a
// whole number of sectors is EIO at its new end, with a log line, and an
// fsck error; the untouched rest of the file still reads.
func TestCutAtSectorBoundaryEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	backing := e.newVolume("vol", e.createKey("alias/cut"))
	mnt := e.mount(e.cfg, backing)
	data := gxRandom(t, 10*sector.DefaultSectorSize+77)
	if err := os.WriteFile(filepath.Join(mnt, "long"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	file := fxBackingFile(t, backing, int64(len(data)))
	if err := os.Truncate(file, sector.BackingSize(4*sector.DefaultSectorSize, sector.DefaultSectorSize)); err != nil {
		t.Fatal(err)
	}
	mnt, logPath := maRemount(t, e, backing)
	if b, err := os.ReadFile(filepath.Join(mnt, "long")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the cut file: %d bytes, %v; want EIO", len(b), err)
	}
	f, err := os.Open(filepath.Join(mnt, "long"))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 3*sector.DefaultSectorSize)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, data[:len(head)]) {
		t.Errorf("the sectors before the cut: %v", err)
	}
	f.Close()
	maWaitLog(t, logPath, "sector failed authentication")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)
	r := e.runWith(e.cfg, "fsck", backing, "--json")
	if got := strings.Join(fxFindings(fxReport(t, r)), "\n"); r.code != 4 || !strings.Contains(got, "error bad-sectors /long sectors 3-3") {
		t.Errorf("fsck: exit %d, findings:\n%s", r.code, got)
	}
}
