package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// spaceVolume creates a volume whose backing directory is on a new tmpfs
// of size and mounts it; it returns the env and the mountpoint.
func spaceVolume(t *testing.T, size string) (*env, string, string) {
	t.Helper()
	e := newEnv(t, "")
	fsDir, mnt := filepath.Join(e.dir, "fs"), filepath.Join(e.dir, "m")
	for _, d := range []string{fsDir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mountTmpfs(t, fsDir, size)
	b := filepath.Join(fsDir, "b")
	e.must("create", "--backing", b)
	cleanupMount(t, mnt) // registered after the tmpfs: runs before its unmount
	e.must("mount", b, mnt)
	return e, b, mnt
}

// fillFile writes random 1 MiB blocks to f until a write(2) fails and
// returns the SHA-256 and length of what was reported written, and that
// error.
func fillFile(t *testing.T, f *os.File, limit int) ([]byte, int64, error) {
	t.Helper()
	h := sha256.New()
	var total int64
	block := make([]byte, 1<<20)
	for i := 0; i < limit; i++ {
		if _, err := rand.Read(block); err != nil {
			t.Fatal(err)
		}
		n, err := f.Write(block)
		h.Write(block[:n])
		total += int64(n)
		if err != nil {
			return h.Sum(nil), total, err
		}
	}
	return h.Sum(nil), total, nil
}

func fileSum(t *testing.T, p string) ([]byte, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return h.Sum(nil), n
}

// TestFullBackingFailsWrite: on a full backing file system write(2) itself
// fails with ENOSPC, in a new file (a shell's `echo x > f`) and in one that
// was open and cached before the backing filled up, and nothing a write(2)
// reported as written is lost: close succeeds and after a remount every
// file holds exactly what was reported. Before, write(2) succeeded into the
// page cache and only close(2) failed, after the data was gone.
func TestFullBackingFailsWrite(t *testing.T) {
	t.Run("small backing", func(t *testing.T) {
		e, b, mnt := spaceVolume(t, "8m")
		big, err := os.Create(filepath.Join(mnt, "big"))
		if err != nil {
			t.Fatal(err)
		}
		sum, n, werr := fillFile(t, big, 64)
		if !errors.Is(werr, syscall.ENOSPC) {
			t.Fatalf("writing 64 MiB to an 8 MiB backing: write(2) error %v after %d bytes, want ENOSPC", werr, n)
		}
		if err := big.Close(); err != nil {
			t.Errorf("close after write(2) reported ENOSPC: %v (data a write reported written was lost)", err)
		}
		sh := exec.Command("bash", "-c", `echo x > "$0/new.txt"`, mnt)
		var stderr bytes.Buffer
		sh.Stderr = &stderr
		if err := sh.Run(); err == nil || !strings.Contains(stderr.String(), "No space left") {
			t.Errorf("`echo x > new.txt` on a full backing: %v, stderr %q; want a failure with \"No space left\"", err, stderr.String())
		}
		// Reading and seeking are not writes.
		if got, m := fileSum(t, filepath.Join(mnt, "big")); !bytes.Equal(got, sum) || m != n {
			t.Errorf("reading the file on the full backing: %d bytes, want the %d written", m, n)
		}
		e.must("umount", mnt)
		e.must("mount", b, mnt)
		if got, m := fileSum(t, filepath.Join(mnt, "big")); !bytes.Equal(got, sum) || m != n {
			t.Errorf("after remount: %d bytes (sum match %v), want the %d bytes write(2) reported", m, bytes.Equal(got, sum), n)
		}
		if err := os.Remove(filepath.Join(mnt, "big")); err != nil {
			t.Fatal(err)
		}
		// The daemon lets go of the removed file's blocks once the kernel
		// forgets the inode, which it tells the daemon asynchronously.
		waitUntil(t, "a write after removing the big file", 5*time.Second, func() bool {
			return os.WriteFile(filepath.Join(mnt, "after"), []byte("room again"), 0o644) == nil
		})
	})

	t.Run("cached writer outlives the room", func(t *testing.T) {
		// Large enough that the file is made while the mount caches
		// writes; it fills up under the open descriptor.
		e, b, mnt := spaceVolume(t, "400m")
		p := filepath.Join(mnt, "stream")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		old := filepath.Join(mnt, "old")
		if err := os.WriteFile(old, []byte("before"), 0o644); err != nil {
			t.Fatal(err)
		}
		rf, err := os.Open(old)
		if err != nil {
			t.Fatal(err)
		}
		sum, n, werr := fillFile(t, f, 1024)
		if !errors.Is(werr, syscall.ENOSPC) {
			t.Fatalf("write(2) error %v after %d bytes, want ENOSPC", werr, n)
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync after write(2) reported ENOSPC: %v (cached data was lost)", err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		// A descriptor opened earlier still reads and seeks on the full
		// volume.
		if off, err := rf.Seek(0, io.SeekEnd); err != nil || off != int64(len("before")) {
			t.Errorf("lseek(SEEK_END) on the full volume: %d, %v", off, err)
		}
		if b, err := os.ReadFile(old); err != nil || string(b) != "before" {
			t.Errorf("reading a file on the full volume: %q, %v", b, err)
		}
		rf.Close()
		e.must("umount", mnt)
		e.must("mount", b, mnt)
		if got, m := fileSum(t, p); !bytes.Equal(got, sum) || m != n {
			t.Errorf("after remount: %d bytes (sum match %v), want the %d bytes write(2) reported", m, bytes.Equal(got, sum), n)
		}
	})
}
