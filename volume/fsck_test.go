package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/sector"
)

// fsckRun checks v with fresh keys.
func fsckRun(t *testing.T, v *fusefstest.Volume, repair bool) *FsckReport {
	t.Helper()
	src := newTestSource(t, v)
	mode := NameModeEncrypted
	if v.PlaintextNames {
		mode = NameModePlaintext
	}
	rep, err := Fsck(context.Background(), src, &keywrap.Header{Version: testHeaderVersion(v), VolumeID: "vol-test", NameMode: mode}, FsckOptions{Repair: repair, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// testHeaderVersion is the header version that goes with a test volume's
// metadata format.
func testHeaderVersion(v *fusefstest.Volume) int {
	if v.BindEntries {
		return keywrap.HeaderVersionEntries
	}
	if v.HoleMap {
		return keywrap.HeaderVersionHoles
	}
	if v.AuthMeta {
		return keywrap.HeaderVersionAuth
	}
	return keywrap.HeaderVersion
}

// flipBackingByte inverts the byte at off of a backing file, as a failing
// disk might. Writing a fixed value instead leaves the byte as it was
// whenever the ciphertext already held that value (one time in 256).
func flipBackingByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^b[0]}, off); err != nil {
		t.Fatal(err)
	}
}

// findingKinds lists "severity kind where" of every finding, sorted.
func findingKinds(rep *FsckReport) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, f.Severity+" "+f.Kind+" "+f.Where())
	}
	slices.Sort(out)
	return out
}

// backingOf maps the plaintext paths of a clean walk to backing paths.
func backingOf(t *testing.T, v *fusefstest.Volume) map[string]string {
	t.Helper()
	entries, _ := bsWalk(t, newTestSource(t, v))
	m := map[string]string{}
	for _, e := range entries {
		m[e.Path] = e.Backing
	}
	return m
}

// TestFsckFindsAndRepairsEachKind damages a volume in every way fsck knows
// (through the backing directory, as a failing disk or a crash would),
// then checks that fsck names each problem, that --repair fixes them
// without losing what is readable, and that a second check is clean.
func TestFsckFindsAndRepairsEachKind(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{NoWritebackCache: true})
	bsTree(t, m.Dir)
	keep := map[string][]byte{}
	for _, p := range []string{"small.txt", "sparse", "a/b/c/deep.bin", strings.Repeat("L", 200) + "/" + strings.Repeat("n", 180)} {
		b, err := os.ReadFile(filepath.Join(m.Dir, p))
		if err != nil {
			t.Fatal(err)
		}
		keep[p] = b
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(m.Dir, "lostid/inner"), 0o755))
	must(os.WriteFile(filepath.Join(m.Dir, "lostid/inner/kept.txt"), []byte("still readable"), 0o600))
	must(os.WriteFile(filepath.Join(m.Dir, "damaged"), vfRandom(t, 10*4096), 0o600))
	must(os.Link(filepath.Join(m.Dir, "damaged"), filepath.Join(m.Dir, "a/damaged-link")))
	must(os.WriteFile(filepath.Join(m.Dir, "misnamed"), []byte("content survives"), 0o600))
	if rep := fsckRun(t, v, false); rep.ExitCode != FsckClean || len(rep.Findings) != 0 {
		t.Fatalf("a clean volume: exit %d, findings %v", rep.ExitCode, findingKinds(rep))
	}
	bk := backingOf(t, v)
	must(m.Unmount())
	bp := func(p string) string { return filepath.Join(v.Backing, bk[p]) }

	for _, i := range []int64{3, 4, 7} {
		flipBackingByte(t, bp("damaged"), sector.HeaderSize+i*(4096+sector.Overhead)+50)
	}
	must(os.Rename(bp("misnamed"), filepath.Join(v.Backing, "notAnEncryptedNameAtAllXYZ")))
	must(os.Remove(filepath.Join(bp("lostid"), "encvol.dirid")))
	must(unix.Lsetxattr(bp("suid"), "user.encvol.meta", []byte{1, 2, 3}, 0))
	must(os.Remove(bp("link")))
	must(os.Symlink("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", bp("link")))
	must(os.WriteFile(filepath.Join(bp("a/b"), "encvol.tmp.00000000deadbeef"), []byte("half"), 0o600))
	must(os.WriteFile(filepath.Join(v.Backing, "encvol.longname.SxZsbiwNGyTlWrlt2kByQvhUGl7kL1QFdjnDpmGEgIM.name"), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(v.Backing, "encvol.future-thing"), []byte("?"), 0o600))

	rep := fsckRun(t, v, false)
	want := []string{
		"error bad-mode-owner /suid",
		"error bad-name backing notAnEncryptedNameAtAllXYZ",
		"error bad-name backing " + bk["lostid/inner"],
		"error bad-sectors /a/damaged-link", // the first of its names in walk order
		"error bad-symlink /link",
		"error missing-dir-id /lostid",
		"leftover orphan-long-name backing encvol.longname.SxZsbiwNGyTlWrlt2kByQvhUGl7kL1QFdjnDpmGEgIM.name",
		"leftover temp-file backing " + bk["a/b"] + "/encvol.tmp.00000000deadbeef",
		"warning unknown-encvol-file backing encvol.future-thing",
	}
	slices.Sort(want)
	if got := findingKinds(rep); !slices.Equal(got, want) {
		t.Errorf("findings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rep.ExitCode != FsckUncorrected {
		t.Errorf("exit %d, want %d", rep.ExitCode, FsckUncorrected)
	}
	for _, f := range rep.Findings {
		if f.Kind == FindBadSectors && rangesString(f.Sectors) != "3-4, 7" {
			t.Errorf("bad sectors %s, want 3-4, 7", rangesString(f.Sectors))
		}
	}

	rep = fsckRun(t, v, true)
	repairLog := rep.RepairLog
	if rep.ExitCode != FsckCorrected || rep.Counts.Uncorrected != 0 {
		t.Errorf("repair: exit %d, uncorrected %d; actions:\n%s", rep.ExitCode, rep.Counts.Uncorrected, actionLines(rep))
	}
	moved := 0
	for _, a := range rep.Actions {
		if a.Action == "quarantine" {
			moved++
		}
	}
	// damaged and its link, misnamed, lostid/inner.
	if moved != 4 {
		t.Errorf("%d entries quarantined, want 4:\n%s", moved, actionLines(rep))
	}
	if rep.RepairLog == "" {
		t.Error("no repair log written")
	}
	if _, err := os.Stat(filepath.Join(v.Backing, "encvol.future-thing")); err != nil {
		t.Errorf("an unknown encvol file was not left alone: %v", err)
	}

	rep = fsckRun(t, v, false)
	if rep.ExitCode != FsckClean || rep.Counts.Quarantined != 1 || rep.Counts.Warnings != 1 {
		t.Errorf("after the repair: exit %d, counts %+v, findings\n%s", rep.ExitCode, rep.Counts, strings.Join(findingKinds(rep), "\n"))
	}

	// Through a mount: the rest reads as before, lost+found holds what
	// moved, readable where it can be.
	m = fusefstest.MountVolume(t, v, fusefstest.Options{})
	for p, b := range keep {
		got, err := os.ReadFile(filepath.Join(m.Dir, p))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s after the repair: %v (equal %v)", p, err, bytes.Equal(got, b))
		}
	}
	lf, err := os.ReadDir(filepath.Join(m.Dir, LostFound))
	must(err)
	var lfNames []string
	for _, d := range lf {
		lfNames = append(lfNames, d.Name())
	}
	got := map[string]string{}
	for _, n := range lfNames {
		switch {
		case strings.HasPrefix(n, "damaged"):
			b := make([]byte, 3*4096)
			f, err := os.Open(filepath.Join(m.Dir, LostFound, n))
			must(err)
			_, err = f.ReadAt(b, 0)
			f.Close()
			got[n] = "readable head " + map[bool]string{true: "ok", false: "failed"}[err == nil]
		case strings.HasPrefix(n, "unnamed-"):
			if b, err := os.ReadFile(filepath.Join(m.Dir, LostFound, n, "kept.txt")); err == nil {
				got["dir"] = string(b)
			} else if b, err := os.ReadFile(filepath.Join(m.Dir, LostFound, n)); err == nil {
				got["file"] = string(b)
			}
		}
	}
	if got["dir"] != "still readable" || got["file"] != "content survives" {
		t.Errorf("lost+found %v: the quarantined directory and file read %q", lfNames, got)
	}
	if x := mountXattrs(t, filepath.Join(m.Dir, LostFound, "damaged")); len(x) != 0 {
		t.Errorf("the mount lists attributes of a quarantined file: %v", x)
	}
	if got["damaged"] != "readable head ok" || got["damaged-link"] != "readable head ok" {
		t.Errorf("lost+found %v: the damaged file's two names read %v", lfNames, got)
	}
	if d, err := os.ReadDir(filepath.Join(m.Dir, "lostid")); err != nil || len(d) != 0 {
		t.Errorf("lostid after the repair: %v, %d entries (want listable and empty)", err, len(d))
	}
	if _, err := os.Lstat(filepath.Join(m.Dir, "link")); !os.IsNotExist(err) {
		t.Errorf("the symlink with the bad target is still there: %v", err)
	}
	logText, err := os.ReadFile(filepath.Join(m.Dir, repairLog))
	if err != nil || !strings.Contains(string(logText), "symlink target") || !strings.Contains(string(logText), "user.encvol.meta") {
		t.Errorf("the repair log keeps no symlink target:\n%s", logText)
	}
}

func actionLines(rep *FsckReport) string {
	var b strings.Builder
	for _, a := range rep.Actions {
		b.WriteString(a.String() + "\n")
	}
	return b.String()
}

// TestFsckRepairsMore: an attribute value that does not decrypt, a long
// name without its side file, a directory ID of the wrong size, new damage
// in a quarantined file, in both name modes.
func TestFsckRepairsMore(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(map[bool]string{false: "encrypted-names", true: "plaintext-names"}[plain], func(t *testing.T) {
			v := fusefstest.NewVolume(t, fusefstest.Options{PlaintextNames: plain})
			m := fusefstest.MountVolume(t, v, fusefstest.Options{NoWritebackCache: true})
			bsTree(t, m.Dir)
			long := strings.Repeat("L", 200) + "/" + strings.Repeat("n", 180)
			longData, err := os.ReadFile(filepath.Join(m.Dir, long))
			if err != nil {
				t.Fatal(err)
			}
			bk := backingOf(t, v)
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
			bp := func(p string) string { return filepath.Join(v.Backing, bk[p]) }
			attrs, err := unixListXattr(bp("small.txt"))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range attrs {
				if a != "user.encvol.meta" && strings.HasPrefix(a, "user.") {
					if err := unix.Lsetxattr(bp("small.txt"), a, []byte("0123456789abcdef0123456789abcdef"), 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := os.WriteFile(filepath.Join(bp("a/b"), "encvol.dirid"), []byte("short"), 0o600); err != nil {
				t.Fatal(err)
			}
			// Both attributes of the file, reported with its first name.
			want := []string{"error bad-xattr /a/hard", "error bad-xattr /a/hard", "error damaged-dir-id /a/b"}
			if !plain {
				if err := os.Remove(bp(long) + ".name"); err != nil {
					t.Fatal(err)
				}
				want = append(want, "error bad-name backing "+bk[long], "error bad-name backing "+bk["a/b/c"])
			}
			slices.Sort(want)
			rep := fsckRun(t, v, false)
			if got := findingKinds(rep); !slices.Equal(got, want) {
				t.Errorf("findings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if rep = fsckRun(t, v, true); rep.ExitCode != FsckCorrected {
				t.Errorf("repair: exit %d:\n%s", rep.ExitCode, actionLines(rep))
			}
			if rep = fsckRun(t, v, false); rep.ExitCode != FsckClean || len(rep.Findings) != 0 {
				t.Errorf("after the repair: exit %d, findings %v", rep.ExitCode, findingKinds(rep))
			}

			// A quarantined file whose damage grows is an error again,
			// until a repair updates its record.
			m = fusefstest.MountVolume(t, v, fusefstest.Options{NoWritebackCache: true})
			if err := os.WriteFile(filepath.Join(m.Dir, "q"), vfRandom(t, 6*4096), 0o600); err != nil {
				t.Fatal(err)
			}
			if !plain {
				got, err := os.ReadDir(filepath.Join(m.Dir, LostFound))
				if err != nil || len(got) != 3 { // the long name's file, a/b/c, the log
					t.Errorf("lost+found: %v, %d entries", err, len(got))
				}
				for _, d := range got {
					if b, err := os.ReadFile(filepath.Join(m.Dir, LostFound, d.Name())); err == nil && bytes.Equal(b, longData) {
						longData = nil
					}
				}
				if longData != nil {
					t.Error("the file whose long name was lost does not read back in lost+found")
				}
			}
			bk = backingOf(t, v)
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
			flipSector(t, filepath.Join(v.Backing, bk["q"]), 1)
			if rep = fsckRun(t, v, true); rep.ExitCode != FsckCorrected {
				t.Fatalf("repair of q: exit %d %v", rep.ExitCode, findingKinds(rep))
			}
			bk = backingOf(t, v)
			flipSector(t, filepath.Join(v.Backing, bk[LostFound+"/q"]), 4)
			rep = fsckRun(t, v, false)
			if got := findingKinds(rep); !slices.Equal(got, []string{"error quarantine-changed /" + LostFound + "/q"}) {
				t.Errorf("new damage in a quarantined file: %v", got)
			}
			if rep = fsckRun(t, v, true); rep.ExitCode != FsckCorrected {
				t.Errorf("update of the record: exit %d %v", rep.ExitCode, findingKinds(rep))
			}
			if rep = fsckRun(t, v, false); rep.ExitCode != FsckClean || rep.Counts.Quarantined != 1 {
				t.Errorf("after the update: exit %d %v", rep.ExitCode, findingKinds(rep))
			}
		})
	}
}

// flipSector changes one byte of stored sector i of a backing file.
func flipSector(t *testing.T, path string, i int64) {
	t.Helper()
	flipBackingByte(t, path, sector.HeaderSize+i*(4096+sector.Overhead)+70)
}

func unixListXattr(p string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00"), nil
}
