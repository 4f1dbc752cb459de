package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Trees for the copy and import tests: one with everything a volume must
// keep, and a listing of a tree that two equal trees share, read without
// moving any access time (so it can run before and after an operation
// that must not change its source).

// canary marks plaintext that must never reach a backing directory: names
// and contents of the test trees carry it.
const canary = "canary-qz8"

// makeTree fills dir with nested directories, regular files (empty,
// small, several chunks long), hard links, symlinks, a sparse file,
// user attributes, odd modes, other owners, a 255-byte name, a FIFO, a
// socket and a character device, with times to the nanosecond.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	put := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	put("top-"+canary+".txt", []byte("hello "+canary+"\n"), 0o644)
	put("empty", nil, 0o644)
	put("zero-mode", []byte("nobody may read "+canary), 0)
	put("suid", []byte("#!/bin/sh\n"), 0o4755)
	put("sgid", []byte("#!/bin/sh\n"), 0o2750)
	put("a/b/c/deep-"+canary, gxRandom(t, 100_000), 0o600)
	put("a/b/chunks", gxRandom(t, 20<<20+12345), 0o640) // several chunks of the writers
	put("a/small", []byte(strings.Repeat(canary+" ", 1000)), 0o664)
	put(strings.Repeat("n", 255), []byte("long name "+canary), 0o644)
	check(os.Mkdir(filepath.Join(dir, strings.Repeat("d", 255)), 0o755))
	put(filepath.Join(strings.Repeat("d", 255), "inside"), []byte("in a long-named directory"), 0o644)
	check(os.Mkdir(filepath.Join(dir, "sticky"), 0o1777))
	check(os.Chmod(filepath.Join(dir, "sticky"), 0o1777))
	check(os.Mkdir(filepath.Join(dir, "closed"), 0o755))
	put("closed/secret", []byte("behind mode 0000"), 0o600)
	check(os.Chmod(filepath.Join(dir, "closed"), 0))

	// hard links: two in different directories, three of one file
	check(os.Link(filepath.Join(dir, "a/small"), filepath.Join(dir, "a/b/small-link")))
	put("trio", []byte("one file, three names "+canary), 0o644)
	check(os.Link(filepath.Join(dir, "trio"), filepath.Join(dir, "trio2")))
	check(os.Link(filepath.Join(dir, "trio"), filepath.Join(dir, "a/trio3")))

	check(os.Symlink("a/small", filepath.Join(dir, "rel-link")))
	check(os.Symlink("/nonexistent/"+canary, filepath.Join(dir, "dangling-link")))
	check(os.Symlink(strings.Repeat("x/", 500)+"end", filepath.Join(dir, "long-target")))
	check(os.Symlink(strings.Repeat("y/", 2000)+canary, filepath.Join(dir, "longer-target"))) // encrypted, too long for a backing symlink

	// sparse: data at 1 MiB and 40 MiB of a 64 MiB file
	f, err := os.Create(filepath.Join(dir, "sparse"))
	check(err)
	_, err = f.WriteAt([]byte("island one "+canary), 1<<20)
	check(err)
	_, err = f.WriteAt(gxRandom(t, 70000), 40<<20)
	check(err)
	check(f.Truncate(64 << 20))
	check(f.Close())

	check(unix.Setxattr(filepath.Join(dir, "a/small"), "user.comment", []byte("note "+canary), 0))
	check(unix.Setxattr(filepath.Join(dir, "a/small"), "user.bin", []byte{0, 1, 2, 255}, 0))
	check(unix.Setxattr(filepath.Join(dir, "a"), "user.dir-attr", []byte("on a directory"), 0))

	check(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	check(os.Link(filepath.Join(dir, "fifo"), filepath.Join(dir, "a/fifo-link")))
	check(os.Link(filepath.Join(dir, "rel-link"), filepath.Join(dir, "a/symlink-link"))) // a hard link of the symlink itself
	check(unix.Mknod(filepath.Join(dir, "socket"), unix.S_IFSOCK|0o600, 0))
	if os.Geteuid() == 0 {
		check(unix.Mknod(filepath.Join(dir, "null-dev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		check(os.Lchown(filepath.Join(dir, "a/small"), 1234, 5678))
		check(os.Lchown(filepath.Join(dir, "rel-link"), 4321, 8765))
		check(os.Lchown(filepath.Join(dir, "a/b"), 99, 98))
	}

	// Times: distinct, to the nanosecond, set last and deepest first so
	// that no later change moves them.
	var all []string
	check(filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil && !os.IsPermission(err) {
			return err
		}
		all = append(all, p)
		return nil
	}))
	for i := len(all) - 1; i >= 0; i-- {
		base := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * 1234567891)
		ts := []unix.Timespec{unix.NsecToTimespec(base.Add(time.Hour).UnixNano() + 7), unix.NsecToTimespec(base.UnixNano() + 11)}
		check(unix.UtimesNanoAt(unix.AT_FDCWD, all[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// treeListing describes every entry under root, one line each, sorted:
// path, type, mode, owner, link count, size of non-directories, rdev,
// modification time and access time (not of symlinks: reading a target
// touches it), symlink target, user attributes, the hash of the content,
// and for hard links the first path of their inode. It opens everything
// with O_NOATIME, so it changes no access time itself.
func treeListing(t *testing.T, root string) []string {
	t.Helper()
	var lines []string
	first := map[uint64]string{}
	walkNoAtime(t, root, func(p string, st *unix.Stat_t) {
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		typ := st.Mode & unix.S_IFMT
		var b strings.Builder
		fmt.Fprintf(&b, "%q type=%o mode=%o owner=%d:%d", rel, typ, st.Mode&0o7777, st.Uid, st.Gid)
		if p != root {
			// A volume's root counts the hidden directory of long symlink
			// targets among its links (as the mount shows the backing's).
			fmt.Fprintf(&b, " nlink=%d", st.Nlink)
		}
		fmt.Fprintf(&b, " mtime=%d", st.Mtim.Nano())
		if typ != unix.S_IFLNK {
			fmt.Fprintf(&b, " atime=%d", st.Atim.Nano())
		}
		if typ != unix.S_IFDIR {
			fmt.Fprintf(&b, " size=%d", st.Size)
		}
		if typ == unix.S_IFCHR || typ == unix.S_IFBLK {
			fmt.Fprintf(&b, " rdev=%x", st.Rdev)
		}
		if typ == unix.S_IFLNK {
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " target=%q", target)
		}
		if typ == unix.S_IFREG || typ == unix.S_IFDIR {
			b.WriteString(" xattrs=" + xattrList(t, p))
		}
		if typ != unix.S_IFDIR && st.Nlink > 1 {
			if f, ok := first[st.Ino]; ok {
				fmt.Fprintf(&b, " link-of=%q", f)
			}
			first[st.Ino] = rel
		}
		if typ == unix.S_IFREG {
			b.WriteString(" sha256=" + hashNoAtime(t, p))
		}
		lines = append(lines, b.String())
	})
	sort.Strings(lines)
	return lines
}

func xattrList(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 1<<16)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		out = append(out, name+"="+hex.EncodeToString(v[:m]))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func hashNoAtime(t *testing.T, p string) string {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ownSymlinks turns the listing of a plaintext tree into the listing of
// a volume of the current format made from it: a symlink's target is bound
// to its name, so each name of a hard-linked symlink is a symlink of its
// own (docs/operations.md, "Differences from a local file system").
func ownSymlinks(lines []string) []string {
	nlink := regexp.MustCompile(` nlink=[0-9]+`)
	linkOf := regexp.MustCompile(` link-of="(?:[^"\\]|\\.)*"`)
	out := make([]string, len(lines))
	for i, l := range lines {
		if strings.Contains(l, " type=120000 ") {
			l = linkOf.ReplaceAllString(nlink.ReplaceAllString(l, " nlink=1"), "")
		}
		out[i] = l
	}
	return out
}

// sameListing fails the test with the first lines that differ.
func sameListing(t *testing.T, what string, want, got []string) {
	t.Helper()
	if strings.Join(want, "\n") == strings.Join(got, "\n") {
		return
	}
	var diff []string
	for _, l := range want {
		if !slices.Contains(got, l) {
			diff = append(diff, "- "+l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			diff = append(diff, "+ "+l)
		}
	}
	if len(diff) > 20 {
		diff = diff[:20]
	}
	t.Fatalf("%s: listings differ (- expected, + found):\n%s", what, strings.Join(diff, "\n"))
}

// walkNoAtime calls fn for dir and everything under it, depth first,
// reading directories with O_NOATIME so that no access time moves.
func walkNoAtime(t *testing.T, dir string, fn func(p string, st *unix.Stat_t)) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		t.Fatal(err)
	}
	fn(dir, &st)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := os.NewFile(uintptr(fd), dir)
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	for _, n := range names {
		walkNoAtime(t, filepath.Join(dir, n), fn)
	}
}

// scanForCanary fails the test if any name, content, symlink target or
// attribute under dir (every file, temporary ones included) holds the
// canary. It changes no access time.
func scanForCanary(t *testing.T, dir string) {
	t.Helper()
	walkNoAtime(t, dir, func(p string, st *unix.Stat_t) {
		if strings.Contains(filepath.Base(p), canary) {
			t.Errorf("plaintext name in the backing: %s", p)
		}
		for _, x := range strings.Split(xattrList(t, p), ",") {
			if strings.Contains(x, hex.EncodeToString([]byte(canary))) || strings.Contains(x, canary) {
				t.Errorf("plaintext attribute in the backing: %s %s", p, x)
			}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(target, canary) {
				t.Errorf("plaintext symlink target in the backing: %s", p)
			}
		case unix.S_IFREG:
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), p)
			b, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(canary)) {
				t.Errorf("plaintext content in the backing file %s", p)
			}
		}
	})
}
