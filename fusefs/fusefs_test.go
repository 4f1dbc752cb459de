package fusefs_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0644); err != nil {
		t.Fatal(err)
	}
}

// writeOpened opens p with flag (no O_CREAT), writes data and closes it,
// failing the test at any error.
func writeOpened(t *testing.T, p string, flag int, data []byte) {
	t.Helper()
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func listDir(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestRoundTripTree(t *testing.T) {
	mnt, _, _ := fusefstest.MountTemp(t, fusefstest.Options{})
	data := bytes.Repeat([]byte("hello encvol "), 1000)
	writeFile(t, filepath.Join(mnt, "a.txt"), data)
	if got := readFile(t, filepath.Join(mnt, "a.txt")); !bytes.Equal(got, data) {
		t.Fatalf("content mismatch: %d bytes back, want %d", len(got), len(data))
	}
	st, err := os.Stat(filepath.Join(mnt, "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", st.Size(), len(data))
	}
	if err := os.MkdirAll(filepath.Join(mnt, "d1", "d2"), 0755); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("L", 250)
	writeFile(t, filepath.Join(mnt, "d1", "d2", long), []byte("deep"))
	if got := readFile(t, filepath.Join(mnt, "d1", "d2", long)); string(got) != "deep" {
		t.Fatalf("long name content %q", got)
	}
	if err := os.Symlink("../a.txt", filepath.Join(mnt, "d1", "ln")); err != nil {
		t.Fatal(err)
	}
	if tgt, err := os.Readlink(filepath.Join(mnt, "d1", "ln")); err != nil || tgt != "../a.txt" {
		t.Fatalf("readlink = %q, %v", tgt, err)
	}
	if st, err := os.Lstat(filepath.Join(mnt, "d1", "ln")); err != nil || st.Size() != int64(len("../a.txt")) {
		t.Fatalf("symlink lstat size: %v %v", st, err)
	}
	if got := readFile(t, filepath.Join(mnt, "d1", "ln")); !bytes.Equal(got, data) {
		t.Fatal("read through symlink")
	}
	if err := os.Link(filepath.Join(mnt, "a.txt"), filepath.Join(mnt, "d1", "hard")); err != nil {
		t.Fatal(err)
	}
	var s1, s2 syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "a.txt"), &s1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(mnt, "d1", "hard"), &s2); err != nil {
		t.Fatal(err)
	}
	if s1.Ino != s2.Ino || s1.Nlink != 2 {
		t.Fatalf("hard link: ino %d vs %d, nlink %d", s1.Ino, s2.Ino, s1.Nlink)
	}
	if got := listDir(t, filepath.Join(mnt, "d1")); strings.Join(got, ",") != "d2,hard,ln" {
		t.Fatalf("readdir d1 = %v", got)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		want := map[string]fs.FileMode{"d2": fs.ModeDir, "hard": 0, "ln": fs.ModeSymlink}[e.Name()]
		if e.Type() != want {
			t.Errorf("%s: type %v, want %v", e.Name(), e.Type(), want)
		}
	}
	// rename within and across directories, over an existing target
	if err := os.Rename(filepath.Join(mnt, "d1", "d2", long), filepath.Join(mnt, "moved")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(mnt, "victim"), []byte("old"))
	if err := os.Rename(filepath.Join(mnt, "moved"), filepath.Join(mnt, "victim")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mnt, "victim")); string(got) != "deep" {
		t.Fatalf("after rename over: %q", got)
	}
	if got := listDir(t, filepath.Join(mnt, "d1", "d2")); len(got) != 0 {
		t.Fatalf("d2 not empty after moving out: %v", got)
	}
	// rename a directory over an empty one
	if err := os.Mkdir(filepath.Join(mnt, "empty"), 0755); err != nil {
		t.Fatal(err)
	}
	// (os.Rename refuses an existing directory target itself.)
	if err := syscall.Rename(filepath.Join(mnt, "d1"), filepath.Join(mnt, "empty")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mnt, "empty", "hard")); !bytes.Equal(got, data) {
		t.Fatal("content after dir rename")
	}
	if err := os.Remove(filepath.Join(mnt, "empty", "d2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "empty")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(mnt, "empty")); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, mnt); strings.Join(got, ",") != "a.txt,victim" {
		t.Fatalf("root = %v", got)
	}
}

func TestRenameFlags(t *testing.T) {
	mnt, _, _ := fusefstest.MountTemp(t, fusefstest.Options{})
	a, b := filepath.Join(mnt, "a"), filepath.Join(mnt, strings.Repeat("b", 200))
	writeFile(t, a, []byte("AAA"))
	writeFile(t, b, []byte("BB"))
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("NOREPLACE over existing: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("EXCHANGE: %v", err)
	}
	if string(readFile(t, a)) != "BB" || string(readFile(t, b)) != "AAA" {
		t.Fatalf("exchange result a=%q b=%q", readFile(t, a), readFile(t, b))
	}
	c := filepath.Join(mnt, "c")
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, c, unix.RENAME_NOREPLACE); err != nil {
		t.Fatalf("NOREPLACE to new name: %v", err)
	}
	if string(readFile(t, c)) != "BB" {
		t.Fatal("content after NOREPLACE")
	}
	if _, err := os.Stat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source still there: %v", err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "dir"), 0755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, c, unix.AT_FDCWD, filepath.Join(mnt, "dir"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("EXCHANGE file/dir: %v", err)
	}
	if string(readFile(t, filepath.Join(mnt, "dir"))) != "BB" {
		t.Fatal("file not at dir's name after exchange")
	}
	if st, err := os.Stat(c); err != nil || !st.IsDir() {
		t.Fatalf("dir not at file's name: %v", err)
	}
	if got := listDir(t, mnt); strings.Join(got, ",") != strings.Join([]string{strings.Repeat("b", 200), "c", "dir"}, ",") {
		t.Fatalf("root = %v", got)
	}
}
