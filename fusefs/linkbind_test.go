package fusefs_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap"
)

func lstatT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", filepath.Base(p), err)
	}
	return &st
}

// TestSymlinkTargetsBoundThroughMount: a volume of the current format
// binds each symlink target to its entry. Rename (in a directory, across
// directories, over another symlink, RENAME_NOREPLACE), RENAME_EXCHANGE
// (with a symlink and with a file) and link keep every readlink and lstat
// right through the mount, with the kernel's entries and attributes
// cached before each call, and after a remount; link makes a symlink of
// its own (link count 1 on both names). Targets swapped between two
// backing symlinks (same directory, other directory, long targets) then
// read as EIO with a log line.
func TestSymlinkTargetsBoundThroughMount(t *testing.T) {
	logs := &logBuffer{}
	log := zerolog.New(logs).Level(zerolog.WarnLevel)
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	p := func(rel string) string { return filepath.Join(m.Dir, rel) }
	for _, d := range []string{"sub", "other"} {
		if err := os.Mkdir(p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	long := longTarget(3100)
	links := map[string]string{"a": "target-a", "b": "target-b", "la": long, "sub/c": "target-c", "other/d": "target-d"}
	for name, target := range links {
		if err := os.Symlink(target, p(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p("file"), []byte("plain file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p("a"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	ts := []unix.Timespec{{Sec: 1_000_000_000}, {Sec: 1_100_000_000}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p("a"), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	cache := func(names ...string) {
		for _, n := range names {
			_ = lstatT(t, p(n))
		}
	}

	// Across directories; owner and times go along.
	cache("a", "sub/c")
	if err := os.Rename(p("a"), p("sub/a2")); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("sub/a2"), "target-a")
	if _, err := os.Lstat(p("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the renamed symlink's old name: %v", err)
	}
	st := lstatT(t, p("sub/a2"))
	if st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != 1_100_000_000 {
		t.Errorf("renamed symlink: owner %d:%d, mtime %d; want 1234:5678, 1100000000", st.Uid, st.Gid, st.Mtim.Sec)
	}
	// In one directory, a long target.
	cache("la")
	if err := os.Rename(p("la"), p("lb")); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("lb"), long)
	// RENAME_NOREPLACE onto an existing name changes nothing.
	cache("b", "sub/c")
	if err := unix.Renameat2(unix.AT_FDCWD, p("sub/c"), unix.AT_FDCWD, p("b"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
		t.Errorf("RENAME_NOREPLACE onto b: %v, want EEXIST", err)
	}
	checkLink(t, p("b"), "target-b")
	checkLink(t, p("sub/c"), "target-c")
	// Over another symlink, and onto a directory (EISDIR).
	if err := os.Rename(p("sub/c"), p("b")); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("b"), "target-c")
	if err := os.Rename(p("b"), p("other")); !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EEXIST) {
		t.Errorf("rename of a symlink onto a directory: %v", err)
	}
	checkLink(t, p("b"), "target-c")
	// RENAME_EXCHANGE of two symlinks in different directories, and of a
	// symlink with a regular file.
	cache("sub/a2", "other/d", "file")
	if err := unix.Renameat2(unix.AT_FDCWD, p("sub/a2"), unix.AT_FDCWD, p("other/d"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("sub/a2"), "target-d")
	checkLink(t, p("other/d"), "target-a")
	if err := unix.Renameat2(unix.AT_FDCWD, p("other/d"), unix.AT_FDCWD, p("file"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("file"), "target-a")
	if got, err := os.ReadFile(p("other/d")); err != nil || string(got) != "plain file" {
		t.Errorf("the exchanged regular file: %q %v", got, err)
	}
	// link: a symlink of its own under the new name.
	cache("b")
	if err := os.Link(p("b"), p("sub/hard")); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("sub/hard"), "target-c")
	checkLink(t, p("b"), "target-c")
	for _, n := range []string{"b", "sub/hard"} {
		if st := lstatT(t, p(n)); st.Nlink != 1 {
			t.Errorf("%s after link: link count %d, want 1 (a symlink of its own)", n, st.Nlink)
		}
	}
	if err := os.Remove(p("b")); err != nil {
		t.Fatal(err)
	}
	checkLink(t, p("sub/hard"), "target-c")

	want := map[string]string{"sub/a2": "target-d", "file": "target-a", "lb": long, "sub/hard": "target-c"}
	err := filepath.WalkDir(v.Backing, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), keywrap.TempPrefix) {
			t.Errorf("a temporary name left in the backing: %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	for n, target := range want {
		checkLink(t, p(n), target)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	if logs.String() != "" {
		t.Fatalf("log lines before any tampering:\n%s", logs)
	}

	// Swap stored targets in the backing: the two at the root (a short
	// and a long one), then a short one between two directories.
	bl := fusefstest.BackingSymlinks(t, v.Backing)
	var sub []string
	for d, l := range bl {
		if d != "." {
			sub = l
		}
	}
	if len(bl["."]) != 2 || len(bl) != 2 || len(sub) != 2 {
		t.Fatalf("backing symlinks: %v; want 2 at the root and 2 in one subdirectory", bl)
	}
	readEIO := func(names ...string) int {
		n := 0
		for _, name := range names {
			got, err := os.Readlink(p(name))
			switch {
			case errors.Is(err, syscall.EIO):
				n++
			case err != nil:
				t.Errorf("readlink %s: %v", name, err)
			case got != want[name]:
				t.Errorf("readlink %s: another target (%d bytes)", name, len(got))
			}
		}
		return n
	}
	fusefstest.SwapTargets(t, bl["."][0], bl["."][1])
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	if n := readEIO("file", "lb"); n != 2 {
		t.Errorf("%d of the 2 symlinks whose targets were swapped in their directory read EIO", n)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "symlink target failed authentication") {
		t.Errorf("no log line for the swapped targets:\n%s", logs)
	}
	fusefstest.SwapTargets(t, bl["."][0], bl["."][1]) // back again
	fusefstest.SwapTargets(t, bl["."][0], sub[0])
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	if n := readEIO("file", "lb", "sub/a2", "sub/hard"); n != 2 {
		t.Errorf("%d of the 2 symlinks whose targets were swapped between directories read EIO", n)
	}
}
