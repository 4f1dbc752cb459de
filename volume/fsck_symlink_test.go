package volume

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// TestFsckSymlinkTargetMoved: on a volume of the current format, stored
// targets swapped between symlinks of two directories, and one copied
// over another symlink's in the same directory, are symlink-target
// errors; --repair removes those symlinks, and a symlink whose name does
// not decrypt (its target bound to the lost name) instead of moving it
// into lost+found, their stored targets in the repair log, and leaves the
// untouched one readable.
func TestFsckSymlinkTargetMoved(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{NoWritebackCache: true})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(m.Dir, "d"), 0o755))
	for name, target := range map[string]string{"a": "target-a", "b": "target-b", "keep": "target-keep", "d/c": "../target-c", "renamed": "target-r"} {
		must(os.Symlink(target, filepath.Join(m.Dir, name)))
	}
	if rep := fsckRun(t, v, false); rep.ExitCode != FsckClean || len(rep.Findings) != 0 {
		t.Fatalf("a clean volume: exit %d, findings %v", rep.ExitCode, findingKinds(rep))
	}
	bk := backingOf(t, v)
	must(m.Unmount())
	bp := func(p string) string { return filepath.Join(v.Backing, bk[p]) }
	setTarget := func(p, target string) {
		must(os.Remove(bp(p)))
		must(os.Symlink(target, bp(p)))
	}
	read := func(p string) string {
		s, err := os.Readlink(bp(p))
		must(err)
		return s
	}
	ta, tc, tk := read("a"), read("d/c"), read("keep")
	setTarget("a", tc)
	setTarget("d/c", ta)
	setTarget("b", tk)
	// A symlink whose name no longer decrypts: its target cannot be
	// checked, nor read under any other name.
	must(os.Rename(bp("renamed"), filepath.Join(v.Backing, "notAnEncryptedNameAtAllXYZ")))

	rep := fsckRun(t, v, false)
	want := []string{"error bad-name backing notAnEncryptedNameAtAllXYZ",
		"error symlink-target /a", "error symlink-target /b", "error symlink-target /d/c"}
	if got := findingKinds(rep); !slices.Equal(got, want) || rep.ExitCode != FsckUncorrected {
		t.Fatalf("exit %d, findings\n%s\nwant\n%s", rep.ExitCode, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	rep = fsckRun(t, v, true)
	if rep.ExitCode != FsckCorrected || rep.Counts.Uncorrected != 0 {
		t.Fatalf("repair: exit %d, uncorrected %d; actions:\n%s", rep.ExitCode, rep.Counts.Uncorrected, actionLines(rep))
	}
	if rep := fsckRun(t, v, false); rep.ExitCode != FsckClean || len(rep.Findings) != 0 {
		t.Errorf("after the repair: exit %d, findings %v", rep.ExitCode, findingKinds(rep))
	}
	m = fusefstest.MountVolume(t, v, fusefstest.Options{})
	if got, err := os.Readlink(filepath.Join(m.Dir, "keep")); err != nil || got != "target-keep" {
		t.Errorf("the untouched symlink after the repair: %q %v", got, err)
	}
	for _, p := range []string{"a", "b", "d/c"} {
		if _, err := os.Lstat(filepath.Join(m.Dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s after the repair: %v, want it removed", p, err)
		}
	}
	if lf, err := os.ReadDir(filepath.Join(m.Dir, LostFound)); err != nil || len(lf) != 1 {
		t.Errorf("lost+found holds %d entries (%v), want only the repair log", len(lf), err)
	}
	logText, err := os.ReadFile(filepath.Join(m.Dir, rep.RepairLog))
	if err != nil || strings.Count(string(logText), "symlink target") < 4 {
		t.Errorf("the repair log does not keep the four stored targets:\n%s", logText)
	}
}
