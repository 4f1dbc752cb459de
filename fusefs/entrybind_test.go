package fusefs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap/names"
)

// entryTree is the tree both entry-binding tests start from: files of
// distinct contents in two directories, and a directory in each.
func entryTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	for _, d := range []string{"d1", "d2", "d1/sub", "d2/other"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{}
	for i, name := range []string{"d1/a", "d1/b", "d1/c", "d2/c", "d1/sub/x", "d2/other/y", "ren", "xa", "d2/xb", "hard", "keep"} {
		files[name] = bytes.Repeat([]byte{byte('a' + i)}, 100+i)
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// TestEntriesBoundThroughMount: on a volume of the current format the
// record of every regular file and directory names its entry. Rename
// (across directories, over another file, of a directory),
// RENAME_EXCHANGE and link through the mount keep every name readable,
// also after a remount, and leave records that name only the entry they
// ended at. Backing files swapped in one directory, a backing file moved
// over a name in another directory, and two swapped backing directories
// then fail their lookups with EIO and a log line, a rename of one of
// them through the mount is refused with EIO, and the untouched names
// still read. A hard-linked file is unbound: under another name it still
// reads.
func TestEntriesBoundThroughMount(t *testing.T) {
	logs := &logBuffer{}
	log := zerolog.New(logs).Level(zerolog.WarnLevel)
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	if !v.BindEntries {
		t.Fatal("the default test volume does not bind entries")
	}
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	p := func(rel string) string { return filepath.Join(m.Dir, rel) }
	files := entryTree(t, m.Dir)

	// Through the mount.
	mustRename := func(a, b string) {
		t.Helper()
		if err := os.Rename(p(a), p(b)); err != nil {
			t.Fatal(err)
		}
		files[b] = files[a]
		delete(files, a)
	}
	mustRename("ren", "d2/ren2")
	mustRename("d1/b", "d2/c") // over another file
	if err := unix.Renameat2(unix.AT_FDCWD, p("xa"), unix.AT_FDCWD, p("d2/xb"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	files["xa"], files["d2/xb"] = files["d2/xb"], files["xa"]
	if err := os.Rename(p("d2/other"), p("d1/other2")); err != nil {
		t.Fatal(err)
	}
	files["d1/other2/y"] = files["d2/other/y"]
	delete(files, "d2/other/y")
	if err := os.Link(p("hard"), p("d1/hard2")); err != nil {
		t.Fatal(err)
	}
	files["d1/hard2"] = files["hard"]
	if err := os.Chmod(p("d2/ren2"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFiles := func(where string) {
		t.Helper()
		for name, want := range files {
			if got, err := os.ReadFile(p(name)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %s: %q, %v; want %q", where, name, got, err, want)
			}
		}
	}
	checkFiles("after the renames")
	if fi, err := os.Stat(p("d2/ren2")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after rename and chmod: %v, %v", fi, err)
	}
	// The records name only where each entry ended.
	k := v.Keys(t)
	defer k.Names.Close()
	defer k.Content.Close()
	for _, c := range []struct{ now, was string }{{"d2/ren2", "ren"}, {"d2/c", "d1/b"}, {"d1/other2", "d2/other"}, {"xa", "d2/xb"}} {
		b := fusefstest.BackingOf(t, v.Backing, m.Dir, c.now)
		for _, at := range []string{c.now, c.was} {
			err := decodeAt(t, k.Names, v.Backing, m.Dir, b, at)
			if at == c.now && err != nil {
				t.Errorf("%s: its record does not name %s: %v", c.now, at, err)
			}
			if at == c.was && !errors.Is(err, fusefs.ErrEntryMoved) {
				t.Errorf("%s: its record still names %s (%v)", c.now, at, err)
			}
		}
	}
	backingOf := map[string]string{}
	for _, name := range []string{"d1/a", "d2/c", "d1/c", "d2/xb", "d1/sub", "d1/other2", "hard", "keep"} {
		backingOf[name] = fusefstest.BackingOf(t, v.Backing, m.Dir, name)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	checkFiles("after a remount")
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}

	// In the backing directory.
	fusefstest.SwapEntries(t, backingOf["d1/a"], backingOf["d1/c"])
	if err := os.Rename(backingOf["d2/xb"], backingOf["d2/c"]); err != nil {
		t.Fatal(err)
	}
	fusefstest.SwapEntries(t, backingOf["d1/sub"], backingOf["d1/other2"])
	// The hard-linked file's record is unbound (docs/threat-model.md).
	fusefstest.SwapEntries(t, backingOf["hard"], backingOf["keep"])
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	for _, name := range []string{"d1/a", "d1/c", "d2/c", "d1/sub", "d1/other2"} {
		if _, err := os.Lstat(p(name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s after the backing swap: %v, want EIO", name, err)
		}
	}
	if err := os.Rename(p("d1/a"), p("d1/a-renamed")); !errors.Is(err, syscall.EIO) {
		t.Errorf("rename of a swapped file: %v, want EIO", err)
	}
	for _, name := range []string{"d2/ren2", "xa", "d1/hard2"} {
		if got, err := os.ReadFile(p(name)); err != nil || !bytes.Equal(got, files[name]) {
			t.Errorf("untouched %s: %q, %v", name, got, err)
		}
	}
	// At "keep" the hard-linked file now reads; at "hard" the file of
	// "keep" is refused.
	if got, err := os.ReadFile(p("keep")); err != nil || !bytes.Equal(got, files["hard"]) {
		t.Errorf("keep after the swap with the hard-linked file: %q, %v; want the hard-linked file's contents", got, err)
	}
	if _, err := os.ReadFile(p("hard")); !errors.Is(err, syscall.EIO) {
		t.Errorf("hard after the swap: %v, want EIO", err)
	}
	if !strings.Contains(logs.String(), "belongs to another name") {
		t.Errorf("no log line names the moved entries:\n%s", logs.String())
	}
}

// decodeAt checks the record of backing entry b against the entry rel of
// the mount at mnt (whose backing directory is backing).
func decodeAt(t *testing.T, nc *names.Codec, backing, mnt, b, rel string) error {
	t.Helper()
	dirBacking := backing
	if filepath.Dir(rel) != "." {
		dirBacking = fusefstest.BackingOf(t, backing, mnt, filepath.Dir(rel))
	}
	df, err := os.Open(dirBacking)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	dirID, err := names.ReadDirID(int(df.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(b, &st); err != nil {
		t.Fatal(err)
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	id, err := fusefs.EntryID(-1, b, dir)
	if err != nil {
		t.Fatal(err)
	}
	val, err := fusefs.GetXattr(b, fusefs.MetaXattr)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = fusefs.DecodeMetaFor(nc, id, &fusefs.Place{DirID: dirID, Name: filepath.Base(rel)}, val)
	return err
}

// TestEntriesNotBoundBefore5: on a volume of format version 4 the same
// backing swaps go unnoticed (each name shows the other's contents), which
// is what version 5 detects.
func TestEntriesNotBoundBefore5(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{NoBindEntries: true})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	files := entryTree(t, m.Dir)
	a := fusefstest.BackingOf(t, v.Backing, m.Dir, "d1/a")
	c := fusefstest.BackingOf(t, v.Backing, m.Dir, "d1/c")
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	fusefstest.SwapEntries(t, a, c)
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	if got, err := os.ReadFile(filepath.Join(m.Dir, "d1/a")); err != nil || !bytes.Equal(got, files["d1/c"]) {
		t.Errorf("d1/a on a version 4 volume after the swap: %q, %v; want the other file's contents", got, err)
	}
}
