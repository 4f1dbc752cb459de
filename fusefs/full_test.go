package fusefs_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// writeSynced writes data to a new file at p and fsyncs it, so that it is
// on the backing file system before that fills up.
func writeSynced(t *testing.T, p string, data []byte) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// writeUntilFull writes 1 MiB blocks to a new file at p until a write or
// the final fsync fails, and returns that error.
func writeUntilFull(t *testing.T, p string, maxBytes int) error {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	for written := 0; written < maxBytes; written += len(block) {
		if _, err := rand.Read(block); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(block); err != nil {
			return err
		}
	}
	return f.Sync()
}

// TestFullBackingFileSystem: when the backing file system fills up, writes
// fail with ENOSPC (through the writeback cache: at fsync at the latest),
// the daemon says so in its log, and no file is left unreadable: after a
// remount every file reads to its end, the files written before are intact,
// and once space is freed writing works again.
func TestFullBackingFileSystem(t *testing.T) {
	small := t.TempDir()
	if err := unix.Mount("encvol-full-test", small, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Fatalf("mount a small tmpfs for the backing directory (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(small, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", small, err)
		}
	})
	logs := &logBuffer{}
	log := zerolog.New(logs)
	v := fusefstest.NewVolume(t, fusefstest.Options{BackingParent: small})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})

	keep := make([]byte, 1<<20)
	if _, err := rand.Read(keep); err != nil {
		t.Fatal(err)
	}
	writeSynced(t, filepath.Join(m.Dir, "keep"), keep)
	head := bytes.Repeat([]byte("a short file. "), 700)
	writeSynced(t, filepath.Join(m.Dir, "short"), head)

	if err := writeUntilFull(t, filepath.Join(m.Dir, "big"), 32<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the backing file system: %v, want ENOSPC", err)
	}
	// Appending to a file whose last sector is short rewrites that sector.
	f, err := os.OpenFile(filepath.Join(m.Dir, "short"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(make([]byte, 2<<20))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full backing file system: %v, want ENOSPC", err)
	}
	if !strings.Contains(logs.String(), "backing file system is full") {
		t.Errorf("no log line about the full backing file system; log:\n%s", logs.String())
	}

	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &log})
	if got := readFile(t, filepath.Join(m.Dir, "keep")); !bytes.Equal(got, keep) {
		t.Fatalf("keep changed after the backing file system filled up")
	}
	for _, name := range []string{"short", "big"} {
		// readFile fails the test on EIO, which a torn sector would give.
		got := readFile(t, filepath.Join(m.Dir, name))
		if name == "short" && !bytes.HasPrefix(got, head) {
			t.Fatalf("short lost its content: %d bytes", len(got))
		}
	}
	if strings.Contains(logs.String(), "failed authentication") {
		t.Fatalf("a sector failed authentication after the failed writes; log:\n%s", logs.String())
	}

	if err := os.Remove(filepath.Join(m.Dir, "big")); err != nil {
		t.Fatal(err)
	}
	more := bytes.Repeat([]byte("more. "), 100000)
	// The daemon keeps a removed file's backing open until the kernel
	// forgets the inode (it cannot know whether the file is still open,
	// see pinLocked), and the kernel sends that FORGET after unlink
	// returns, so the space comes back a moment later: as on any file
	// system for a file that was open somewhere.
	waitFor(t, "the space of the removed file", 10*time.Second, func() bool {
		var st unix.Statfs_t
		if err := unix.Statfs(small, &st); err != nil {
			t.Fatal(err)
		}
		return st.Bavail*uint64(st.Bsize) >= 2*uint64(len(more))
	})
	writeFile(t, filepath.Join(m.Dir, "after"), more)
	if got := readFile(t, filepath.Join(m.Dir, "after")); !bytes.Equal(got, more) {
		t.Fatal("writing after space was freed: content differs")
	}
}
