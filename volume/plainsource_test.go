package volume

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// TestPlainSourceWalk: the walk order (root, then each directory's names
// sorted, a directory's entries right after it), the entry fields, hard
// links by identity, user attributes only, data extents of a sparse file,
// and no access time changed by the walk or by reading content.
func TestPlainSourceWalk(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	mk("b/y", []byte("why"))
	mk("b/x", nil)
	mk("a", []byte("aaa"))
	mk("c.d/z", []byte("zed")) // sorts before "c/..." children but after "c"
	mk("c/w", []byte("w"))
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b", "hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../a", filepath.Join(dir, "b", "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "a"), "user.note", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("data"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Access times far in the past: any read would move them.
	old := time.Unix(1_000_000_000, 123)
	var all []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		all = append(all, p)
		return err
	})
	for _, p := range all { // after the listing, which reads directories
		ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), {Nsec: unix.UTIME_OMIT}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}

	s, err := OpenPlainSource(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var order []string
	byPath := map[string]*Entry{}
	if err := s.Walk(context.Background(), func(e *Entry) error {
		order = append(order, e.Path)
		byPath[e.Path] = e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "a", "b", "b/hard", "b/link", "b/x", "b/y", "c", "c/w", "c.d", "c.d/z", "fifo", "sparse"}
	if !slices.Equal(order, want) {
		t.Fatalf("walk order %q, want %q", order, want)
	}
	a, hard := byPath["a"], byPath["b/hard"]
	if a.Type != unix.S_IFREG || a.Mode != 0o640 || a.Size != 3 || a.Nlink != 2 || a.Inode != hard.Inode {
		t.Errorf("a: %+v (hard link %+v)", a, hard)
	}
	if len(a.Xattrs) != 1 || a.Xattrs[0].Name != "user.note" || string(a.Xattrs[0].Value) != "v" {
		t.Errorf("a: attributes %+v", a.Xattrs)
	}
	if l := byPath["b/link"]; l.Type != unix.S_IFLNK || l.Target != "../a" {
		t.Errorf("link: %+v", l)
	}
	if byPath["fifo"].Type != unix.S_IFIFO || byPath["c"].Type != unix.S_IFDIR {
		t.Errorf("fifo %+v, c %+v", byPath["fifo"], byPath["c"])
	}

	sp := byPath["sparse"]
	c, err := s.Open(sp)
	if err != nil {
		t.Fatal(err)
	}
	start, end, err := c.NextData(0)
	if err != nil || start > 1<<20 || end < 1<<20+4 || end > 2<<20 {
		t.Errorf("first extent [%d, %d) %v, want one around 1 MiB", start, end, err)
	}
	if _, _, err := c.NextData(2 << 20); !errors.Is(err, io.EOF) {
		t.Errorf("after the data: %v, want EOF", err)
	}
	buf := make([]byte, 4)
	if _, err := c.ReadAt(buf, 1<<20); err != nil || string(buf) != "data" {
		t.Errorf("read %q %v", buf, err)
	}
	c.Close()

	// No access time moved (symlinks aside: the kernel touches a symlink
	// whose target is read).
	for _, p := range all {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK && !time.Unix(st.Atim.Unix()).Equal(old) {
			t.Errorf("%s: access time changed to %v", strings.TrimPrefix(p, dir), time.Unix(st.Atim.Unix()))
		}
	}
}

// TestPlainSourceRefusesFile: a file instead of a directory
// is refused, naming the fix.
func TestPlainSourceRefusesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPlainSource(p, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("OpenPlainSource(file): %v", err)
	}
}
