package volume

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/sector"
)

// bsTree builds, through the mount mnt, a tree with every kind of entry the
// walker must show as the mount does.
func bsTree(t *testing.T, mnt string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	long := strings.Repeat("L", 200)
	must(os.MkdirAll(p("a/b/c"), 0o755))
	must(os.Mkdir(p(long), 0o750))
	must(os.WriteFile(p(long+"/"+strings.Repeat("n", 180)), vfRandom(t, 5000), 0o640))
	must(os.WriteFile(p("a/b/c/deep.bin"), vfRandom(t, 3*4096+7), 0o600))
	must(os.WriteFile(p("empty"), nil, 0o644))
	must(os.WriteFile(p("small.txt"), []byte("hello\n"), 0o644))
	must(os.WriteFile(p("suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(p("suid"), 0o4755))
	must(os.Mkdir(p("sgid"), 0o755))
	must(os.Chmod(p("sgid"), 0o2775))
	must(os.Mkdir(p("sticky"), 0o755))
	must(os.Chmod(p("sticky"), 0o1777))
	must(os.WriteFile(p("owned"), []byte("x"), 0o600))
	must(os.Lchown(p("owned"), 1234, 5678))
	must(os.Symlink("a/b/c/deep.bin", p("link")))
	must(os.Symlink(strings.Repeat("t/", 600), p("longlink")))
	must(os.Link(p("small.txt"), p("a/hard")))
	must(unix.Mkfifo(p("fifo"), 0o620))
	must(unix.Mknod(p("chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	must(unix.Setxattr(p("small.txt"), "user.color", []byte("blue"), 0))
	must(unix.Setxattr(p("small.txt"), "user.alpha", []byte{0, 1, 2}, 0))
	must(unix.Setxattr(p("a"), "user.dir", []byte("on a directory"), 0))
	must(unix.Setxattr(p("empty"), "user.empty", nil, 0))
	// Sparse: data, a hole of many sectors, data again.
	f, err := os.OpenFile(p("sparse"), os.O_CREATE|os.O_WRONLY, 0o600)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{7}, 5000), 0)
	must(err)
	_, err = f.WriteAt([]byte("tail"), 10<<20)
	must(err)
	must(f.Sync())
	must(f.Close())
}

// bsWalk collects the entries and strays of a walk.
func bsWalk(t *testing.T, src *BackingSource) ([]*Entry, []*Stray) {
	t.Helper()
	var entries []*Entry
	var strays []*Stray
	src.OnStray(func(s *Stray) error { strays = append(strays, s); return nil })
	if err := src.Walk(context.Background(), func(e *Entry) error { entries = append(entries, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return entries, strays
}

func newTestSource(t *testing.T, v *fusefstest.Volume) *BackingSource {
	t.Helper()
	keys := v.Keys(t)
	t.Cleanup(func() { keys.Content.Close(); keys.Names.Close() })
	src, err := NewBackingSource(v.Backing, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// TestBackingSourceMatchesMount: every entry the walker yields shows the
// type, mode, owner, size, times, link count, inode, target and user
// attributes that stat, readlink and getxattr show through the mount, the
// walk reaches every entry of the mount, in order, and the content reads
// back equal, holes included.
func TestBackingSourceMatchesMount(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(map[bool]string{false: "encrypted-names", true: "plaintext-names"}[plain], func(t *testing.T) {
			m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{PlaintextNames: plain}),
				fusefstest.Options{NoWritebackCache: true})
			bsTree(t, m.Dir)
			// The mount's listing first: it sets the directories' atimes,
			// which the walker must then show (and leave alone).
			var mountPaths []string
			err := filepath.Walk(m.Dir, func(p string, _ os.FileInfo, err error) error {
				rel, _ := filepath.Rel(m.Dir, p)
				if rel == "." {
					rel = ""
				}
				mountPaths = append(mountPaths, rel)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			src := newTestSource(t, m.Volume)
			entries, strays := bsWalk(t, src)
			if len(strays) != 0 {
				t.Errorf("strays in a clean volume: %+v", strays[0])
			}
			bsCheckOrder(t, entries)
			var walked []string
			for _, e := range entries {
				if e.Err != nil {
					t.Errorf("%s: %v", e.describe(), e.Err)
					continue
				}
				walked = append(walked, e.Path)
				bsCompareStat(t, m.Dir, e)
			}
			slices.Sort(mountPaths)
			slices.Sort(walked)
			if !slices.Equal(mountPaths, walked) {
				t.Errorf("walk yields\n%q\nthe mount shows\n%q", walked, mountPaths)
			}
			for _, e := range entries {
				if e.Type == unix.S_IFREG {
					bsCompareContent(t, src, m.Dir, e)
				}
			}
			bsCheckLinks(t, entries)
		})
	}
}

// bsCheckOrder: the root first, every directory before its children, the
// children of one directory in name order.
func bsCheckOrder(t *testing.T, entries []*Entry) {
	t.Helper()
	if len(entries) == 0 || entries[0].Path != "" || entries[0].Type != unix.S_IFDIR {
		t.Fatalf("the walk does not start at the root directory")
	}
	seen := map[string]bool{"": true}
	last := map[string]string{}
	for _, e := range entries[1:] {
		dir, name := "", e.Path
		if i := strings.LastIndexByte(e.Path, '/'); i >= 0 {
			dir, name = e.Path[:i], e.Path[i+1:]
		}
		if !seen[dir] {
			t.Errorf("%s comes before its directory", e.Path)
		}
		if prev, ok := last[dir]; ok && prev >= name {
			t.Errorf("in %q, %q comes after %q", dir, name, prev)
		}
		last[dir] = name
		seen[e.Path] = true
	}
}

func bsCompareStat(t *testing.T, mnt string, e *Entry) {
	t.Helper()
	p := filepath.Join(mnt, e.Path)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("lstat %s through the mount: %v", e.Path, err)
		return
	}
	check := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %s %v, the mount shows %v", e.describe(), what, got, want)
		}
	}
	check("type", e.Type, st.Mode&unix.S_IFMT)
	check("mode", e.Mode, st.Mode&0o7777)
	check("uid", e.UID, st.Uid)
	check("gid", e.GID, st.Gid)
	check("nlink", uint64(e.Nlink), uint64(st.Nlink))
	if e.Path != "" { // the mount's root is the FUSE root node, not the backing inode
		check("inode", e.Inode, st.Ino)
	}
	check("rdev", e.Rdev, st.Rdev)
	check("mtime", e.Mtime.UnixNano(), st.Mtim.Nano())
	check("atime", e.Atime.UnixNano(), st.Atim.Nano())
	if e.Type == unix.S_IFREG || e.Type == unix.S_IFLNK {
		check("size", e.Size, st.Size)
	}
	if e.Type == unix.S_IFLNK {
		target, err := os.Readlink(p)
		if err != nil {
			t.Errorf("readlink %s: %v", e.Path, err)
		}
		check("target", e.Target, target)
	}
	if e.Type == unix.S_IFREG || e.Type == unix.S_IFDIR {
		check("xattrs", xattrString(e.Xattrs), xattrString(mountXattrs(t, p)))
	}
}

func mountXattrs(t *testing.T, p string) []Xattr {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []Xattr
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		out = append(out, Xattr{Name: name, Value: v[:m]})
	}
	slices.SortFunc(out, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func xattrString(xs []Xattr) string {
	var b strings.Builder
	for _, x := range xs {
		b.WriteString(x.Name + "=" + string(x.Value) + ";")
	}
	return b.String()
}

// bsCompareContent reads e through the walker's Content, from several
// goroutines at once, and compares it with the mount's bytes; the data
// extents must cover every non-zero byte and leave the sparse file's hole
// out.
func bsCompareContent(t *testing.T, src *BackingSource, mnt string, e *Entry) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(mnt, e.Path))
	if err != nil {
		t.Fatal(err)
	}
	c, err := src.Open(e)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, e.Size)
	const part = 1 << 20
	var wg sync.WaitGroup
	for off := int64(0); off < e.Size; off += part {
		wg.Go(func() {
			n, err := c.ReadAt(got[off:min(off+part, e.Size)], off)
			if err != nil && !(err == io.EOF && off+int64(n) == e.Size) {
				t.Errorf("%s: read at %d: %v", e.Path, off, err)
			}
		})
	}
	wg.Wait()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs from the mount's", e.Path)
	}
	covered := make([]bool, e.Size)
	extents := dataExtents(t, c)
	for _, x := range extents {
		for i := x[0]; i < x[1]; i++ {
			covered[i] = true
		}
	}
	for i, b := range want {
		if b != 0 && !covered[i] {
			t.Fatalf("%s: byte %d (non-zero) outside every data extent %v", e.Path, i, extents)
		}
	}
	if e.Path == "sparse" {
		if len(extents) != 2 || extents[0][1] > 8192 || extents[1][0] < 10<<20-4096 {
			t.Errorf("sparse: data extents %v, want one at the start and one at 10 MiB", extents)
		}
	}
}

// bsCheckLinks: the two names of the hard link share inode and count.
func bsCheckLinks(t *testing.T, entries []*Entry) {
	t.Helper()
	byPath := map[string]*Entry{}
	for _, e := range entries {
		byPath[e.Path] = e
	}
	a, b := byPath["small.txt"], byPath["a/hard"]
	if a == nil || b == nil || a.Inode != b.Inode || a.Nlink != 2 || b.Nlink != 2 {
		t.Errorf("hard links small.txt and a/hard: %+v %+v", a, b)
	}
}

// TestBackingSourceStoredHoles: a stored sector of zero bytes (a hole the
// backing file system holds as allocated zeros) reads as zeros and is left
// out of the data extents.
func TestBackingSourceStoredHoles(t *testing.T) {
	// Format version 3: zeroing sectors in place makes them holes there
	// (version 4 would refuse them as zeroed; see sector's hole map).
	m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{NoHoleMap: true}), fusefstest.Options{NoWritebackCache: true})
	data := vfRandom(t, 8*4096)
	if err := os.WriteFile(filepath.Join(m.Dir, "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	src := newTestSource(t, m.Volume)
	entries, _ := bsWalk(t, src)
	var e *Entry
	for _, x := range entries {
		if x.Path == "f" {
			e = x
		}
	}
	if e == nil {
		t.Fatal("f not walked")
	}
	// Zero stored sectors 2 and 3 in place (allocated, not a file system hole).
	bf, err := os.OpenFile(filepath.Join(m.Volume.Backing, e.Backing), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	stored := int64(4096 + sector.Overhead)
	if _, err := bf.WriteAt(make([]byte, 2*stored), sector.HeaderSize+2*stored); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	c, err := src.Open(e)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, len(data))
	if _, err := c.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	clear(data[2*4096 : 4*4096])
	if !bytes.Equal(got, data) {
		t.Error("content with stored holes differs")
	}
	extents := dataExtents(t, c)
	want := [][2]int64{{0, 2 * 4096}, {4 * 4096, 8 * 4096}}
	if !slices.Equal(extents, want) {
		t.Errorf("extents %v, want %v", extents, want)
	}
}

// TestBackingSourceDamage: what does not decode is yielded with Err naming
// the part, the walk goes on past it, and leftovers go to the stray
// handler; a bad sector is a read error naming its index.
func TestBackingSourceDamage(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{NoWritebackCache: true})
	bsTree(t, m.Dir)
	if err := os.Mkdir(filepath.Join(m.Dir, "noid"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "noid", "child"), []byte("c"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := newTestSource(t, v)
	entries, _ := bsWalk(t, src)
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	back := map[string]*Entry{}
	for _, e := range entries {
		back[e.Path] = e
	}
	bp := func(p string) string { return filepath.Join(v.Backing, back[p].Backing) }
	long := strings.Repeat("L", 200)

	// The damage, each of a kind.
	if err := os.Rename(bp("empty"), filepath.Join(filepath.Dir(bp("empty")), "AAAAAAAAAAAAAAAAAAAAAAAAAA")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bp(long+"/"+strings.Repeat("n", 180)) + ".name"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bp("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bm90IGEgdmFsaWQgdGFyZ2V0IGF0IGFsbCBubyBubw", bp("link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(bp("suid"), "user.encvol.meta", []byte{9, 9}, 0); err != nil {
		t.Fatal(err)
	}
	list, _ := (func() ([]string, error) {
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(bp("small.txt"), buf)
		return strings.Split(string(buf[:n]), "\x00"), err
	})()
	for _, x := range list {
		if strings.HasPrefix(x, "user.encvol.") && x != "user.encvol.meta" {
			if err := unix.Lsetxattr(bp("small.txt"), x, []byte("garbage value that is long enough"), 0); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if err := os.Remove(filepath.Join(bp("noid"), "encvol.dirid")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bp("a/b"), "encvol.tmp.0123456789abcdef"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bp("a"), "encvol.longname.SxZsbiwNGyTlWrlt2kByQvhUGl7kL1QFdjnDpmGEgIM.name"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	flipBackingByte(t, bp("a/b/c/deep.bin"), sector.HeaderSize+2*(4096+sector.Overhead)+100)

	src2 := newTestSource(t, v)
	entries2, strays := bsWalk(t, src2)
	parts := map[string][]string{}
	for _, e := range entries2 {
		for _, ee := range EntryErrors(e.Err) {
			parts[e.Backing] = append(parts[e.Backing], ee.Part)
		}
	}
	wantPart := func(backing, part string) {
		t.Helper()
		if !slices.Contains(parts[backing], part) {
			t.Errorf("backing %s: error parts %v, want %s", backing, parts[backing], part)
		}
	}
	wantPart("AAAAAAAAAAAAAAAAAAAAAAAAAA", PartName)
	wantPart(back[long+"/"+strings.Repeat("n", 180)].Backing, PartName)
	wantPart(back["link"].Backing, PartTarget)
	wantPart(back["suid"].Backing, PartMeta)
	wantPart(back["small.txt"].Backing, PartXattr)
	wantPart(back["a/hard"].Backing, PartXattr) // the same inode
	wantPart(back["noid/child"].Backing, PartName)
	if len(parts) != 7 {
		t.Errorf("errors on %d entries, want 7: %v", len(parts), parts)
	}
	kinds := map[StrayKind]int{}
	for _, s := range strays {
		kinds[s.Kind]++
	}
	want := map[StrayKind]int{StrayMissingDirID: 1, StrayTemp: 1, StrayOrphanLongName: 1}
	if !maps.Equal(kinds, want) {
		t.Errorf("strays %v, want %v", kinds, want)
	}
	// The walk went on: every other entry is there, undamaged.
	for p, e := range back {
		if p == "empty" || p == "noid/child" || p == long+"/"+strings.Repeat("n", 180) {
			continue
		}
		found := false
		for _, e2 := range entries2 {
			if e2.Path == p && e2.Backing == e.Backing {
				found = true
			}
		}
		if !found {
			t.Errorf("%s missing from the walk after the damage", p)
		}
	}
	for _, e := range entries2 {
		if e.Path != "a/b/c/deep.bin" {
			continue
		}
		c, err := src2.Open(e)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ReadAt(make([]byte, e.Size), 0)
		c.Close()
		var ae *sector.AuthError
		if !errors.As(err, &ae) || ae.Index != 2 || !strings.Contains(err.Error(), "a/b/c/deep.bin") || !strings.Contains(err.Error(), "sector 2") {
			t.Errorf("read of the damaged file: %v, want sector 2 of a/b/c/deep.bin", err)
		}
	}
}

// TestOpenBackingSourceOwnsKeys: a source opened from an unlocked volume
// walks it and drops the keys on Close.
func TestOpenBackingSourceOwnsKeys(t *testing.T) {
	f, dir, _ := newTestVolume(t)
	u, err := Unlock(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenBackingSource(u)
	if err != nil {
		t.Fatal(err)
	}
	entries, strays := bsWalk(t, src)
	if len(entries) != 1 || entries[0].Path != "" || entries[0].Err != nil || len(strays) != 0 {
		t.Errorf("a new volume walks as %d entries (first %+v), %d strays; want the root alone", len(entries), entries[0], len(strays))
	}
	keys := src.Keys()
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if !keys.Content.Closed() {
		t.Error("Close left the content key open")
	}
}

// dataExtents lists every extent NextData reports, checking that each
// starts at or after where it was asked for and is not empty.
func dataExtents(t *testing.T, c Content) [][2]int64 {
	t.Helper()
	var extents [][2]int64
	for off := int64(0); ; {
		s, end, err := c.NextData(off)
		if err == io.EOF {
			return extents
		}
		if err != nil {
			t.Fatalf("NextData(%d): %v", off, err)
		}
		if end <= off || s < off || end <= s {
			t.Fatalf("NextData(%d) = [%d, %d)", off, s, end)
		}
		extents = append(extents, [2]int64{s, end})
		off = end
	}
}
