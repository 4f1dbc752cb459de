package fusefs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap/names"
)

// longTarget is a symlink target of n bytes that names a real path shape
// and carries a canary the backing must never show.
func longTarget(n int) string {
	s := "canary-LONGLINK-q9/" + strings.Repeat("d/", n)
	return s[:n-1] + "x"
}

// sideFiles lists the side files of long symlink targets in a backing.
func sideFiles(t *testing.T, backing string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(backing, names.LongLinkDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Symlink targets up to PATH_MAX - 1 bytes work as on a local file
// system, in both name modes, including targets whose encrypted form does
// not fit a backing symlink; they survive renames, hard links and
// remounts, and their side files go with their last link.
func TestLongSymlinkTargets(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "encrypted"
		if plain {
			name = "plaintext-names"
		}
		t.Run(name, func(t *testing.T) {
			v := fusefstest.NewVolume(t, fusefstest.Options{PlaintextNames: plain})
			m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
			if err := os.Mkdir(filepath.Join(m.Dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 3043, 3044, 4095} {
				p := filepath.Join(m.Dir, "l"+strconv.Itoa(n))
				if err := os.Symlink(longTarget(n), p); err != nil {
					t.Fatalf("symlink with a %d-byte target: %v", n, err)
				}
				checkLink(t, p, longTarget(n))
			}
			if err := os.Symlink(longTarget(4096), filepath.Join(m.Dir, "toolong")); !errors.Is(err, unix.ENAMETOOLONG) {
				t.Errorf("4096-byte target: %v, want ENAMETOOLONG", err)
			}
			if !plain && len(sideFiles(t, v.Backing)) == 0 {
				t.Fatal("no side file for a 4095-byte target")
			}

			// Rename into another directory, then hard-link the symlink.
			moved := filepath.Join(m.Dir, "sub", "moved")
			if err := os.Rename(filepath.Join(m.Dir, "l4095"), moved); err != nil {
				t.Fatal(err)
			}
			checkLink(t, moved, longTarget(4095))
			second := filepath.Join(m.Dir, "second")
			if err := os.Link(moved, second); err != nil {
				t.Fatal(err)
			}
			checkLink(t, second, longTarget(4095))

			// Remount: what the kernel cached is gone, the backing answers.
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
			m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
			moved, second = filepath.Join(m.Dir, "sub", "moved"), filepath.Join(m.Dir, "second")
			checkLink(t, moved, longTarget(4095))
			checkLink(t, filepath.Join(m.Dir, "l3044"), longTarget(3044))

			// An encrypted target is bound to its name, so the second name
			// is a symlink of its own, with its own side file.
			before := len(sideFiles(t, v.Backing))
			if err := os.Remove(moved); err != nil {
				t.Fatal(err)
			}
			want := before
			if !plain {
				want--
			}
			if got := len(sideFiles(t, v.Backing)); got != want {
				t.Fatalf("side files %d -> %d after removing one of two names, want %d", before, got, want)
			}
			checkLink(t, second, longTarget(4095))
			for _, p := range []string{second, filepath.Join(m.Dir, "l3044"), filepath.Join(m.Dir, "l3043"), filepath.Join(m.Dir, "l1")} {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			if left := sideFiles(t, v.Backing); len(left) != 0 {
				t.Fatalf("side files left after every long symlink was removed: %v", left)
			}
		})
	}
}

func checkLink(t *testing.T, p, want string) {
	t.Helper()
	got, err := os.Readlink(p)
	if err != nil {
		t.Fatalf("readlink %s: %v", filepath.Base(p), err)
	}
	if got != want {
		t.Fatalf("readlink %s: %d bytes, want %d", filepath.Base(p), len(got), len(want))
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(want)) {
		t.Fatalf("lstat %s: size %d, want %d", filepath.Base(p), fi.Size(), len(want))
	}
}

// The side file of a long target is ciphertext, and an edited or swapped
// one fails readlink with EIO instead of returning another target.
func TestLongSymlinkSideFileAuthenticated(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	a, b := filepath.Join(m.Dir, "a"), filepath.Join(m.Dir, "b")
	for _, p := range []string{a, b} {
		if err := os.Symlink(longTarget(4000), p); err != nil {
			t.Fatal(err)
		}
	}
	files := sideFiles(t, v.Backing)
	if len(files) != 2 {
		t.Fatalf("%d side files for two long targets", len(files))
	}
	dir := filepath.Join(v.Backing, names.LongLinkDir)
	for _, f := range files {
		body, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(body), "canary-LONGLINK") {
			t.Fatal("a side file holds the plaintext target")
		}
	}
	// Swap the two side files' contents: each now fails its hash.
	x, _ := os.ReadFile(filepath.Join(dir, files[0]))
	y, _ := os.ReadFile(filepath.Join(dir, files[1]))
	os.WriteFile(filepath.Join(dir, files[0]), y, 0o600)
	os.WriteFile(filepath.Join(dir, files[1]), x, 0o600)
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	if _, err := os.Readlink(filepath.Join(m.Dir, "a")); !fusefstest.IsEIO(err) {
		t.Fatalf("readlink through a swapped side file: %v, want EIO", err)
	}
}

// utimensat with AT_SYMLINK_NOFOLLOW sets the symlink's own times and
// leaves its target's alone.
func TestUtimensSymlinkNoFollow(t *testing.T) {
	mnt, _, _ := fusefstest.MountTemp(t, fusefstest.Options{})
	f, l := filepath.Join(mnt, "f"), filepath.Join(mnt, "l")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", l); err != nil {
		t.Fatal(err)
	}
	var fst unix.Stat_t
	if err := unix.Stat(f, &fst); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2001, 2, 3, 4, 5, 6, 700, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), unix.NsecToTimespec(when.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, l, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	var lst, fst2 unix.Stat_t
	if err := unix.Lstat(l, &lst); err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(lst.Mtim.Unix()); !got.Equal(when) {
		t.Errorf("symlink mtime %v, want %v", got.UTC(), when)
	}
	if err := unix.Stat(f, &fst2); err != nil {
		t.Fatal(err)
	}
	if fst2.Mtim != fst.Mtim {
		t.Errorf("the target's mtime changed from %v to %v", fst.Mtim, fst2.Mtim)
	}
}
