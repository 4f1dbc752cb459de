package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// TestSwappedSymlinkTargetsEndToEnd: the stored targets of two symlinks
// swapped in the backing directory, both in one directory (short targets,
// and long ones kept in side files) and between two directories, are EIO
// through the mount with a log line, and `encvol fsck` reports each as a
// symlink-target error; the untouched symlinks still read, and a clean
// volume passes fsck.
func TestSwappedSymlinkTargetsEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	backing := e.newVolume("vol", e.createKey("alias/symlinks"))
	maHeaderVersion(t, backing, "v5")
	mnt := e.mount(e.cfg, backing)
	long := func(c string) string { return "/" + strings.Repeat(c+"/", 1550) + "end" } // 3104 bytes: a side file
	links := map[string]string{
		"a": "target-a", "b": "target-b",
		"long/la": long("x"), "long/lb": long("y"),
		"d1/c": "../target-c", "d2/d": "../target-d",
	}
	for _, d := range []string{"long", "d1", "d2"} {
		if err := os.Mkdir(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)
	if code, got := hxFsck(t, e, backing); code != 0 || got != "" {
		t.Fatalf("fsck before the swap: exit %d, findings:\n%s", code, got)
	}

	// Each backing directory holds one pair; the root's pair is the only
	// one at the root, and the long pair the only one whose stored targets
	// refer to side files.
	bl := fusefstest.BackingSymlinks(t, backing)
	if len(bl) != 4 {
		t.Fatalf("backing symlinks in %d directories (%v), want 4", len(bl), bl)
	}
	var longPair, subs [][]string
	for d, l := range bl {
		if d == "." {
			continue
		}
		if len(l) == 1 {
			subs = append(subs, l)
			continue
		}
		longPair = append(longPair, l)
	}
	if len(bl["."]) != 2 || len(longPair) != 1 || len(subs) != 2 {
		t.Fatalf("backing symlinks %v: want 2 at the root, 2 in one directory and 1 in each of two", bl)
	}
	fusefstest.SwapTargets(t, bl["."][0], bl["."][1])
	fusefstest.SwapTargets(t, longPair[0][0], longPair[0][1])
	fusefstest.SwapTargets(t, subs[0][0], subs[1][0])

	mnt, logPath := maRemount(t, e, backing)
	for name := range links {
		if got, err := os.Readlink(filepath.Join(mnt, name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("readlink %s after the swap: %d bytes, %v; want EIO", name, len(got), err)
		}
	}
	if err := os.Symlink("fresh", filepath.Join(mnt, "fresh")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(mnt, "fresh")); err != nil || got != "fresh" {
		t.Errorf("a new symlink beside the swapped ones: %q, %v", got, err)
	}
	maWaitLog(t, logPath, "symlink target failed authentication")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	want := []string{"error symlink-target /a", "error symlink-target /b", "error symlink-target /d1/c", "error symlink-target /d2/d",
		"error symlink-target /long/la", "error symlink-target /long/lb"}
	if code, got := hxFsck(t, e, backing); code != 4 || got != strings.Join(want, "\n") {
		t.Errorf("fsck after the swap: exit %d, findings:\n%s\nwant:\n%s", code, got, strings.Join(want, "\n"))
	}
}
