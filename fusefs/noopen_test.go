package fusefs_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// remounted writes files through one mount and returns a fresh mount of
// the same volume: the kernel there has neither cached pages nor handles
// for them, so every open(2) goes the handle-less way (no OPEN request).
func remounted(t *testing.T, files map[string][]byte) *fusefstest.Mount {
	t.Helper()
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{})
	for name, data := range files {
		writeFile(t, filepath.Join(m.Dir, name), data)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	return fusefstest.MountVolume(t, v, fusefstest.Options{})
}

func TestOpenFileOutlivesItsName(t *testing.T) {
	old := bytes.Repeat([]byte("old content "), 1000)
	m := remounted(t, map[string][]byte{"gone": old, "target": old, "other": []byte("new")})
	dir := m.Dir

	// Unlink while open: reads, writes, fstat and fsync keep working.
	f, err := os.OpenFile(filepath.Join(dir, "gone"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(filepath.Join(dir, "gone")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(old))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("read after unlink: %v, equal=%v", err, bytes.Equal(got, old))
	}
	if _, err := f.WriteAt([]byte("tail"), int64(len(old))); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after unlink: %v", err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != int64(len(old))+4 {
		t.Fatalf("fstat after unlink: %v, size %v", err, st)
	}
	// The page cache would answer a re-read; drop it so the daemon does.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, 4)
	if _, err := f.ReadAt(tail, int64(len(old))); err != nil || string(tail) != "tail" {
		t.Fatalf("re-read after unlink: %v, %q", err, tail)
	}

	// Rename over an open file: the open descriptor keeps the old content.
	g, err := os.Open(filepath.Join(dir, "target"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := os.Rename(filepath.Join(dir, "other"), filepath.Join(dir, "target")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.ReadAt(got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("read of a renamed-over file: %v, equal=%v", err, bytes.Equal(got, old))
	}
	if now := readFile(t, filepath.Join(dir, "target")); string(now) != "new" {
		t.Fatalf("target after rename: %q, want %q", now, "new")
	}
}

func TestOpenTruncAppendWithoutOpenRequests(t *testing.T) {
	m := remounted(t, map[string][]byte{"f": []byte("abcdef")})
	p := filepath.Join(m.Dir, "f")
	writeOpened(t, p, os.O_WRONLY|os.O_TRUNC, []byte("xy"))
	writeOpened(t, p, os.O_WRONLY|os.O_APPEND, []byte("z"))
	if got := readFile(t, p); string(got) != "xyz" {
		t.Fatalf("after O_TRUNC write and O_APPEND write: %q, want %q", got, "xyz")
	}
}

// Every file read stays open in the daemon until the kernel forgets it;
// the idle ones are closed once too many are open.
func TestIdleBackingFilesBounded(t *testing.T) {
	const n = 2600
	files := make(map[string][]byte, n)
	for i := range n {
		files[fmt.Sprintf("f%04d", i)] = []byte(fmt.Sprintf("file %d", i))
	}
	m := remounted(t, files)
	for name, want := range files {
		if got := readFile(t, filepath.Join(m.Dir, name)); !bytes.Equal(got, want) {
			t.Fatalf("%s: %q, want %q", name, got, want)
		}
	}
	if open := m.FS.Counters().OpenFiles; open > 2048 || open == 0 {
		t.Fatalf("%d backing files open after reading %d files; want between 1 and 2048", open, n)
	}
}
