package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// TestSwappedFilesEndToEnd: on a new volume (format version 5) rename,
// RENAME_EXCHANGE and link through the mount leave a volume that fsck
// finds clean. Then, in the backing directory, two files are swapped, a
// file is moved over a name in another directory and two directories are
// swapped: each of those names is EIO through the mount with a log line,
// a rename of one is refused, the untouched names still read, and fsck
// reports each as a moved-entry error (exit 4). fsck --repair moves them
// into lost+found (exit 1), where they read with their own contents under
// their names, and a second check is clean (exit 0).
func TestSwappedFilesEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	backing := e.newVolume("vol", e.createKey("alias/entries"))
	maHeaderVersion(t, backing, "v5")
	mnt := e.mount(e.cfg, backing)
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	for _, d := range []string{"d1", "d2", "d1/sub", "d2/other"} {
		if err := os.Mkdir(p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{}
	for i, name := range []string{"a", "b", "d1/c", "d2/c", "d1/sub/x", "d2/other/y", "ren", "xa", "d1/xb", "keep"} {
		files[name] = gxRandom(t, 1000*(i+1))
		if err := os.WriteFile(p(name), files[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(p("ren"), p("d2/ren2")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, p("xa"), unix.AT_FDCWD, p("d1/xb"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p("keep"), p("d2/keep2")); err != nil {
		t.Fatal(err)
	}
	back := map[string]string{}
	for _, name := range []string{"a", "b", "d1/c", "d2/c", "d1/sub", "d2/other"} {
		back[name] = fusefstest.BackingOf(t, backing, mnt, name)
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)
	if code, got := hxFsck(t, e, backing); code != 0 || got != "" {
		t.Fatalf("fsck after rename, exchange and link through the mount: exit %d, findings:\n%s", code, got)
	}

	fusefstest.SwapEntries(t, back["a"], back["b"])
	if err := os.Rename(back["d1/c"], back["d2/c"]); err != nil {
		t.Fatal(err)
	}
	fusefstest.SwapEntries(t, back["d1/sub"], back["d2/other"])
	mnt, logPath := hxMount(t, e, backing, "mnt2")
	for _, name := range []string{"a", "b", "d2/c", "d1/sub", "d2/other"} {
		if _, err := os.Stat(filepath.Join(mnt, name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s after the backing swap: %v, want EIO", name, err)
		}
	}
	if err := os.Rename(filepath.Join(mnt, "a"), filepath.Join(mnt, "a2")); !errors.Is(err, syscall.EIO) {
		t.Errorf("rename of a swapped file: %v, want EIO", err)
	}
	for name, want := range map[string][]byte{"d2/ren2": files["ren"], "xa": files["d1/xb"], "d1/xb": files["xa"], "d2/keep2": files["keep"]} {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("untouched %s: %d bytes, %v", name, len(got), err)
		}
	}
	maWaitLog(t, logPath, "belongs to another name")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	want := []string{"error moved-entry /a", "error moved-entry /b", "error moved-entry /d1/sub", "error moved-entry /d2/c", "error moved-entry /d2/other"}
	if code, got := hxFsck(t, e, backing); code != 4 || got != strings.Join(want, "\n") {
		t.Errorf("fsck of the swapped volume: exit %d, findings:\n%s\nwant:\n%s", code, got, strings.Join(want, "\n"))
	}
	r := e.runWith(e.cfg, "fsck", backing, "--repair", "--json")
	if rep := fxReport(t, r); r.code != 1 {
		t.Errorf("fsck --repair: exit %d, actions %+v", r.code, rep.Actions)
	}
	if code, got := hxFsck(t, e, backing); code != 0 {
		t.Errorf("fsck after the repair: exit %d, findings:\n%s", code, got)
	}
	mnt, _ = hxMount(t, e, backing, "mnt3")
	lf := filepath.Join(mnt, "lost+found")
	ents, err := os.ReadDir(lf)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, de := range ents {
		got = append(got, de.Name())
	}
	for _, n := range []string{"a", "b", "c", "sub", "other"} {
		if !slices.Contains(got, n) {
			t.Errorf("lost+found holds %v, no %s", got, n)
		}
	}
	// Each quarantined entry reads under the name it was found at; the
	// backing file found at "a" was b's.
	for name, want := range map[string][]byte{"a": files["b"], "b": files["a"], "c": files["d1/c"], "sub/y": files["d2/other/y"], "other/x": files["d1/sub/x"]} {
		if got, err := os.ReadFile(filepath.Join(lf, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("lost+found/%s: %d bytes, %v", name, len(got), err)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "d1/sub")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("d1/sub after the repair: %v", err)
	}
}
