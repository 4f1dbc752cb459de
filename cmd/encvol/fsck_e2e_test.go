package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/encvol/encvol/sector"
	"github.com/encvol/encvol/volume"
)

// End-to-end tests of `encvol fsck` through the real binary, on the
// embedded KMS and on `encvol kms serve`: a clean volume, each kind of
// damage the check must find, the repair that quarantines without losing
// the readable rest, and the refusal of a mounted volume.

// fxStored is the size of a stored 4 KiB sector.
const fxStored = sector.DefaultSectorSize + sector.Overhead

// fxBackingFile finds the backing file of plaintext size n (the tests give
// each file a size of its own).
func fxBackingFile(t *testing.T, backing string, n int64) string {
	t.Helper()
	want := sector.BackingSize(n, sector.DefaultSectorSize)
	var found []string
	filepath.Walk(backing, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() == want {
			found = append(found, p)
		}
		return nil
	})
	if len(found) != 1 {
		t.Fatalf("%d backing files of %d bytes, want 1", len(found), want)
	}
	return found[0]
}

// fxSubdirParent finds the root-level backing directory that holds a
// directory (the tests make only one).
func fxSubdirParent(t *testing.T, backing string) string {
	t.Helper()
	top, err := os.ReadDir(backing)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range top {
		if !d.IsDir() {
			continue
		}
		sub, _ := os.ReadDir(filepath.Join(backing, d.Name()))
		for _, s := range sub {
			if s.IsDir() {
				return filepath.Join(backing, d.Name())
			}
		}
	}
	t.Fatal("no backing directory with a subdirectory")
	return ""
}

func fxReport(t *testing.T, r gxResult) *volume.FsckReport {
	t.Helper()
	var rep volume.FsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("fsck --json: %v\n%v", err, r)
	}
	if rep.ExitCode != r.code {
		t.Errorf("the report says exit %d, the process exited %d", rep.ExitCode, r.code)
	}
	return &rep
}

func fxFindings(rep *volume.FsckReport) []string {
	var out []string
	for _, f := range rep.Findings {
		s := f.Severity + " " + f.Kind + " " + f.Where()
		if len(f.Sectors) > 0 {
			s += " sectors"
			for _, r := range f.Sectors {
				s += fmt.Sprintf(" %d-%d", r.First, r.Last)
			}
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestFsckEndToEnd: fsck of a clean volume exits 0; after a flipped byte,
// two swapped stored sectors, a removed directory ID and a stray temp file
// it exits 4 naming each (the damaged files by plaintext path and sector);
// a mounted volume is refused (8); --repair exits 1 and a second check 0;
// mounted again, every other file reads as before, and lost+found shows
// what moved, readable where it can be.
func TestFsckEndToEnd(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			key := e.createKey("alias/fsck")
			backing := e.newVolume("vol", key)
			mnt := e.mount(e.cfg, backing)
			files := map[string][]byte{
				"datafile77":         gxRandom(t, 300_000),
				"swapped.bin":        gxRandom(t, 10*sector.DefaultSectorSize+123),
				"keep.txt":           gxRandom(t, 100_001),
				"keepdir/a.txt":      []byte("kept\n"),
				"sub/f.txt":          gxRandom(t, 7_777),
				"sub/inner/deep.txt": gxRandom(t, 5_555),
			}
			for p, b := range files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(mnt, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(mnt, p), b, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink("keep.txt", filepath.Join(mnt, "link")); err != nil {
				t.Fatal(err)
			}
			gxUnmount(t, mnt)

			r := e.runWith(e.cfg, "fsck", backing, "--json")
			if rep := fxReport(t, r); r.code != 0 || len(rep.Findings) != 0 || rep.Files != 6 || rep.Bytes == 0 {
				t.Fatalf("fsck of a clean volume: %v", r)
			}

			// The damage.
			data := fxBackingFile(t, backing, int64(len(files["datafile77"])))
			f, err := os.OpenFile(data, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			flipAt := int64(sector.HeaderSize + 36*fxStored + 1000)
			b := make([]byte, 1)
			f.ReadAt(b, flipAt)
			b[0] ^= 1
			f.WriteAt(b, flipAt)
			f.Close()
			swapped := fxBackingFile(t, backing, int64(len(files["swapped.bin"])))
			sb, err := os.ReadFile(swapped)
			if err != nil {
				t.Fatal(err)
			}
			s2 := bytes.Clone(sb[sector.HeaderSize+2*fxStored : sector.HeaderSize+3*fxStored])
			copy(sb[sector.HeaderSize+2*fxStored:], sb[sector.HeaderSize+5*fxStored:sector.HeaderSize+6*fxStored])
			copy(sb[sector.HeaderSize+5*fxStored:], s2)
			if err := os.WriteFile(swapped, sb, 0o600); err != nil {
				t.Fatal(err)
			}
			sub := fxSubdirParent(t, backing)
			if err := os.Remove(filepath.Join(sub, "encvol.dirid")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(backing, "encvol.tmp.1234567890abcdef"), []byte("interrupted"), 0o600); err != nil {
				t.Fatal(err)
			}

			r = e.runWith(e.cfg, "fsck", backing)
			if r.code != 4 || !strings.Contains(r.stdout, "/datafile77") || !strings.Contains(r.stdout, "sector 36") ||
				!strings.Contains(r.stdout, "/swapped.bin") || !strings.Contains(r.stderr, "--repair") {
				t.Errorf("fsck of the damaged volume: %v", r)
			}
			r = e.runWith(e.cfg, "fsck", backing, "--json")
			rep := fxReport(t, r)
			subRel, _ := filepath.Rel(backing, sub)
			want := []string{
				"error bad-name backing " + subRel + "/", // prefix: f.txt and inner, names under the lost ID
				"error bad-name backing " + subRel + "/",
				"error bad-sectors /datafile77 sectors 36-36",
				"error bad-sectors /swapped.bin sectors 2-2 5-5",
				"error missing-dir-id /sub",
				"leftover temp-file backing encvol.tmp.1234567890abcdef",
			}
			got := fxFindings(rep)
			if len(got) != len(want) {
				t.Fatalf("findings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for i := range want {
				if !strings.HasPrefix(got[i], want[i]) {
					t.Errorf("finding %q, want %q", got[i], want[i])
				}
			}

			// A mounted volume is not checked.
			mnt2 := backing + ".mnt2"
			os.Mkdir(mnt2, 0o755)
			t.Cleanup(func() { gxUnmount(t, mnt2) })
			e.must("mount", backing, mnt2)
			r = e.runWith(e.cfg, "fsck", backing)
			if r.code != 8 || !strings.Contains(r.stderr, "is mounted on "+mnt2) || !strings.Contains(r.stderr, "encvol umount") {
				t.Errorf("fsck of a mounted volume: %v", r)
			}
			gxUnmount(t, mnt2)

			r = e.runWith(e.cfg, "fsck", backing, "--repair", "--json")
			rep = fxReport(t, r)
			if r.code != 1 || rep.Counts.Corrected != 6 || rep.Counts.Uncorrected != 0 || rep.RepairLog == "" {
				t.Errorf("fsck --repair: exit %d, counts %+v\n%s", r.code, rep.Counts, r.stdout)
			}
			r = e.runWith(e.cfg, "fsck", backing)
			if r.code != 0 || !strings.Contains(r.stdout, "QUARANTINED") {
				t.Errorf("fsck after the repair: %v", r)
			}

			mnt3 := backing + ".mnt3"
			os.Mkdir(mnt3, 0o755)
			t.Cleanup(func() { gxUnmount(t, mnt3) })
			e.must("mount", backing, mnt3)
			for _, p := range []string{"keep.txt", "keepdir/a.txt", "link"} {
				got, err := os.ReadFile(filepath.Join(mnt3, p))
				want := files[p]
				if p == "link" {
					want = files["keep.txt"]
				}
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s after the repair: %v (equal %v)", p, err, bytes.Equal(got, want))
				}
			}
			lf := filepath.Join(mnt3, volume.LostFound)
			head := make([]byte, 36*sector.DefaultSectorSize)
			df, err := os.Open(filepath.Join(lf, "datafile77"))
			if err != nil {
				t.Fatalf("lost+found/datafile77: %v", err)
			}
			_, err = df.ReadAt(head, 0)
			df.Close()
			if err != nil || !bytes.Equal(head, files["datafile77"][:len(head)]) {
				t.Errorf("the readable sectors of the quarantined datafile77: %v", err)
			}
			if _, err := os.ReadFile(filepath.Join(lf, "datafile77")); err == nil {
				t.Error("the damaged sector of datafile77 reads without an error")
			}
			// What the lost directory ID named: f.txt as a file, inner as a
			// directory whose own content is intact.
			found := map[string]bool{}
			entries, err := os.ReadDir(lf)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range entries {
				p := filepath.Join(lf, d.Name())
				if b, err := os.ReadFile(filepath.Join(p, "deep.txt")); err == nil && bytes.Equal(b, files["sub/inner/deep.txt"]) {
					found["inner"] = true
				}
				if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, files["sub/f.txt"]) {
					found["f.txt"] = true
				}
			}
			if !found["inner"] || !found["f.txt"] {
				t.Errorf("lost+found (%d entries) lacks what the lost directory ID named: %v", len(entries), found)
			}
			if d, err := os.ReadDir(filepath.Join(mnt3, "sub")); err != nil || len(d) != 0 {
				t.Errorf("sub after the repair: %v, %d entries (want listable, empty)", err, len(d))
			}
		})
	}
}

// TestFsckUsage: fsck's own exit codes for a bad command line and for a
// directory that is not a volume.
func TestFsckUsage(t *testing.T) {
	e := newEnv(t, "")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"fsck"}, 16, "one volume"},
		{[]string{"fsck", "--bogus", e.dir}, 16, "unknown flag"},
		{[]string{"fsck", e.dir}, 16, "not an encvol volume"},
	} {
		r := e.run(c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("encvol %s: want exit %d with %q: %v", strings.Join(c.args, " "), c.code, c.msg, r)
		}
		oneLine(t, strings.Join(c.args, " "), r.stderr)
	}
	r := e.run("fsck", "--help")
	for _, s := range []string{"0   no errors", "4   errors were left uncorrected", "8   operational error", "lost+found"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("fsck --help lacks %q", s)
		}
	}
}
