package volume

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func writeFile(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// makeTree fills dir with what a backing directory can hold: nested
// directories with odd modes, files with xattrs, a sparse file, hard
// links, a symlink, a FIFO, an empty file, old times.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "a/b/file"), randBytes(t, 100_000), 0o604)
	writeFile(t, filepath.Join(dir, "a/empty"), nil, 0o600)
	writeFile(t, filepath.Join(dir, "top"), randBytes(t, 5000), 0o600)
	if err := unix.Setxattr(filepath.Join(dir, "a/b/file"), "user.encvol.meta", []byte{1, 0, 0, 1, 0xa4, 0, 0, 0, 0, 0, 0, 0, 0}, 0); err != nil {
		t.Fatalf("this test needs user xattrs on %s: %v", dir, err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "a"), "user.dir", []byte("dirattr"), 0); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(randBytes(t, 8192), 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Link(filepath.Join(dir, "a/b/file"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/b/file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "a/b"), 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, p := range []string{"top", "a/b", "a"} {
		if err := os.Chtimes(filepath.Join(dir, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

// describeTree lists everything a clone must keep, one line per entry:
// type and mode, size, owner, modification time, xattrs, symlink target,
// content hash, the hard-link group, and whether the file is sparse.
func describeTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	groups := map[uint64]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := info.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %o uid=%d gid=%d", rel, st.Mode, st.Uid, st.Gid)
		if !info.IsDir() || rel != "." {
			line += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		names, _ := listXattrs(p)
		sort.Strings(names)
		for _, n := range names {
			v, _ := getXattr(p, n)
			line += fmt.Sprintf(" %s=%x", n, v)
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d sha256=%x sparse=%v", len(b), sha256.Sum256(b), st.Blocks*512 < st.Size)
			if st.Nlink > 1 {
				if g, ok := groups[st.Ino]; ok {
					line += " linked-to=" + g
				} else {
					groups[st.Ino] = rel
				}
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTrees(t *testing.T, src, dst string) {
	t.Helper()
	a, b := describeTree(t, src), describeTree(t, dst)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("clone differs from its source:\nsource:\n  %s\nclone:\n  %s", strings.Join(a, "\n  "), strings.Join(b, "\n  "))
	}
}

// TestCloneTree: a clone keeps content, holes, modes, times, xattrs,
// symlinks, FIFOs and hard links; Update then follows every kind of
// change of the source.
func TestCloneTree(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	dst := filepath.Join(t.TempDir(), "dst")
	c, st, err := CloneTree(context.Background(), src, dst, CloneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sameTrees(t, src, dst)
	if st.Entries != 9 || c.Entries() != 9 {
		t.Errorf("entries: %d (%d), want 9", st.Entries, c.Entries())
	}

	// Changes of every kind; one keeps its size and modification time.
	same := filepath.Join(src, "top")
	info, _ := os.Stat(same)
	writeFile(t, same, randBytes(t, 5000), 0o600)
	if err := os.Chtimes(same, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "a/empty")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "fifo")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "fifo"), 0o700); err != nil { // a FIFO becomes a directory
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "new/deep/x"), randBytes(t, 300), 0o600)
	if err := os.Link(filepath.Join(src, "top"), filepath.Join(src, "new/top-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(src, "a/b"), filepath.Join(src, "a/renamed")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(src, "sparse"), "user.late", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	st, err = c.Update(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sameTrees(t, src, dst)
	if st.Removed == 0 || st.Files == 0 {
		t.Errorf("update removed %d and wrote %d files; want some of each", st.Removed, st.Files)
	}
	// Nothing changed since: once the clock has moved past the changes
	// (an update may copy again what changed too close to its stat), an
	// update copies and removes nothing.
	newest := newestCtime(t, src)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &now); err != nil {
			t.Fatal(err)
		}
		if now.Nano()-newest > racyMargin {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the coarse clock does not move")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err = c.Update(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sameTrees(t, src, dst)
	if st.Removed != 0 || st.Files != 0 {
		t.Errorf("an update of an unchanged tree removed %d entries and wrote %d files", st.Removed, st.Files)
	}
}

// newestCtime is the latest change time below dir, in nanoseconds.
func newestCtime(t *testing.T, dir string) int64 {
	t.Helper()
	var newest int64
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		newest = max(newest, st.Ctim.Nano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return newest
}

// TestCloneReflink: on XFS with reflinks every file is cloned (method
// reflink, blocks shared); from there onto another file system it is a
// copy.
func TestCloneReflink(t *testing.T) {
	xfs := mountReflinkXFS(t)
	src := filepath.Join(xfs, "src")
	makeTree(t, src)
	c, st, err := CloneTree(context.Background(), src, filepath.Join(xfs, "dst"), CloneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sameTrees(t, src, filepath.Join(xfs, "dst"))
	if c.Method() != MethodReflink || st.Reflinked != st.Files || st.Files == 0 {
		t.Fatalf("on XFS with reflink=1: method %s, %d of %d files reflinked", c.Method(), st.Reflinked, st.Files)
	}
	// Changed in place: the update remaps what changed into the same
	// copy (its inode stays); a hole where there was data stays a hole.
	dst := filepath.Join(xfs, "dst")
	frag := filepath.Join(src, "frag")
	writeFile(t, frag, randBytes(t, 4<<20), 0o600)
	c, _, err = CloneTree(context.Background(), src, dst+"2", CloneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inode := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before := inode(filepath.Join(dst+"2", "frag"))
	f, err := os.OpenFile(frag, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		var b [2]byte
		rand.Read(b[:])
		off := int64(b[0])<<12 | int64(b[1]&0x3)<<20
		if _, err := f.WriteAt(randBytes(t, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(1 << 20); err != nil { // data beyond becomes a hole...
		t.Fatal(err)
	}
	if err := f.Truncate(6 << 20); err != nil { // ...and the file longer than before
		t.Fatal(err)
	}
	if _, err := f.WriteAt(randBytes(t, 100), 6<<20-100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, err = c.Update(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sameTrees(t, src, dst+"2")
	if got := inode(filepath.Join(dst+"2", "frag")); got != before {
		t.Errorf("the changed file was copied anew (inode %d, was %d), not updated in place", got, before)
	}

	other := filepath.Join(t.TempDir(), "dst")
	c, st, err = CloneTree(context.Background(), src, other, CloneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sameTrees(t, src, other)
	if c.Method() != MethodCopy || st.Reflinked != 0 {
		t.Fatalf("across file systems: method %s, %d reflinked", c.Method(), st.Reflinked)
	}
}

// mountReflinkXFS mounts a fresh loop XFS image with reflinks for the test.
func mountReflinkXFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("mounting an XFS image needs root")
	}
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		t.Fatal("the reflink test needs mkfs.xfs (apt-get install xfsprogs)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount the XFS image: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}
