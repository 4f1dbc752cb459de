package sector

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// fullFS mounts a small tmpfs for the test: a real file system that runs out
// of space the way a full disk does, stopping a write part way. The suite
// runs as root (it mounts FUSE file systems too), so a failure here is a
// failure, not a skip.
func fullFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("encvol-full-test", dir, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Fatalf("mount a small tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// leaveFree fills dir's file system until only free bytes (rounded to
// pages by tmpfs) are left, and returns the filler's path.
func leaveFree(t *testing.T, dir string, free int64) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail <= free {
		t.Fatalf("only %d bytes free, want more than %d", avail, free)
	}
	path := filepath.Join(dir, "filler")
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fallocate(fd, 0, 0, avail-free); err != nil {
		t.Fatalf("fallocate %d bytes: %v", avail-free, err)
	}
	return path
}

// TestWriteOnFullFileSystem: a write that runs out of space fails with
// ENOSPC and leaves a file that reads back completely: the old content,
// then at most a prefix of the new data, never a torn sector. Once space is
// freed the same write succeeds.
func TestWriteOnFullFileSystem(t *testing.T) {
	const S = 4096
	cases := []struct {
		name       string
		old        int64 // plaintext bytes before
		off        int64 // where the failing write starts
		size       int64 // how much it writes
		free       int64 // bytes left free before it
		truncateTo int64 // > 0: grow with Truncate instead of writing
		tail       int64 // > 0: 100 bytes written there too, leaving a hole after old
		fits       bool  // the write needs no new space and succeeds
	}{
		{name: "append to a short last sector", old: 10000, off: 10000, size: 3 << 20, free: 64 << 10},
		{name: "append to a short last sector, no space at all", old: 10000, off: 10000, size: 1 << 20, free: 0},
		{name: "append whole sectors", old: 8 * S, off: 8 * S, size: 3 << 20, free: 100 << 10},
		{name: "write past the end, leaving a hole", old: 10000, off: 50000, size: 2 << 20, free: 64 << 10},
		{name: "first write of an empty file", old: 0, off: 0, size: 1 << 20, free: 0},
		{name: "overwrite and extend", old: 3*S + 100, off: S + 7, size: 2 << 20, free: 32 << 10},
		{name: "pad the short last sector", old: 1<<20 + 10, off: 3 << 20, size: 5, free: 0},
		{name: "truncate up from a short last sector", old: 10000, truncateTo: 1 << 30, free: 0},
		{name: "fill a hole", old: 5 * S, tail: 3 << 20, off: 6 * S, size: 2 << 20, free: 16 << 10},
		{name: "fill a hole from inside a sector", old: 5*S + 9, tail: 3 << 20, off: 5*S + 9, size: 1 << 20, free: 16 << 10},
		{name: "overwrite in place", old: 1 << 20, off: 4097, size: 500000, free: 0, fits: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := fullFS(t)
			c := newTestCipher(t, fixedKey(3), S)
			path := filepath.Join(dir, "f")
			f := openBacking(t, path, S)
			old := bytes.Repeat([]byte("old content. "), int(tc.old/13)+1)[:tc.old]
			if tc.old > 0 {
				mustWrite(t, f, c, old, 0)
			}
			before := old
			if tc.tail > 0 {
				tail := bytes.Repeat([]byte{'t'}, 100)
				mustWrite(t, f, c, tail, tc.tail)
				before = make([]byte, tc.tail+100)
				copy(before, old)
				copy(before[tc.tail:], tail)
			}
			filler := leaveFree(t, dir, tc.free)

			data := mod256(tc.size)
			var err error
			if tc.truncateTo > 0 {
				err = f.Truncate(c, tc.truncateTo)
			} else {
				_, err = f.WriteAt(c, data, tc.off)
			}
			if tc.fits {
				if err != nil {
					t.Fatalf("overwrite in place on a full file system: %v", err)
				}
			} else if tc.truncateTo > 0 && err == nil {
				// Growing by ftruncate allocates nothing on tmpfs: only the
				// re-sealed last sector needs space, and that may fit.
				t.Logf("truncate fitted in the space left")
			} else if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write on a full file system: %v, want ENOSPC", err)
			}

			size, serr := f.Size()
			if serr != nil {
				t.Fatalf("Size after the failed write: %v", serr)
			}
			got := make([]byte, size)
			if n, rerr := f.ReadAt(c, got, 0); n != len(got) || (rerr != nil && rerr != io.EOF) {
				t.Fatalf("read back %d of %d bytes after the failed write: %v", n, size, rerr)
			}
			checkAfterFailure(t, got, before, data, tc.off, tc.truncateTo)

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			if tc.truncateTo > 0 {
				if err := f.Truncate(c, tc.truncateTo); err != nil {
					t.Fatalf("truncate again with space: %v", err)
				}
				return
			}
			mustWrite(t, f, c, data, tc.off)
			want := make([]byte, max(int64(len(before)), tc.off+tc.size))
			copy(want, before)
			copy(want[tc.off:], data)
			got = make([]byte, len(want))
			if n, err := f.ReadAt(c, got, 0); n != len(got) || !bytes.Equal(got, want) {
				t.Fatalf("after the write with space: %d bytes, %v, equal %v", n, err, bytes.Equal(got, want))
			}
		})
	}
}

// checkAfterFailure: got is the whole file after a failed write of data at
// off over old (the content before). Every byte is the old one, the new one,
// or a zero of a hole or of a short write's end.
func checkAfterFailure(t *testing.T, got, old, data []byte, off, truncateTo int64) {
	t.Helper()
	for i := range int64(len(got)) {
		b := got[i]
		var want []byte
		if i < int64(len(old)) {
			want = append(want, old[i])
		}
		if truncateTo == 0 && i >= off && i-off < int64(len(data)) {
			want = append(want, data[i-off])
		}
		if i >= int64(len(old)) {
			want = append(want, 0)
		}
		if !bytes.Contains(want, []byte{b}) {
			t.Fatalf("byte %d of %d is %#x, want one of %x (old %d bytes, write at %d)", i, len(got), b, want, len(old), off)
		}
	}
	if int64(len(got)) < int64(len(old)) {
		t.Fatalf("file shrank from %d to %d bytes", len(old), len(got))
	}
}
