package fusefs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/fusefs/fusefstest"
)

// TestMetaReadOncePerInode: files and directories made through the mount
// never have their stored mode and owner, or the entry ID it is sealed
// to, read back from the backing directory, whatever the kernel asks afterwards (attributes, chmod,
// chown, times, writes), and every answer is still the latest value.
func TestMetaReadOncePerInode(t *testing.T) {
	opts := fusefstest.Options{}
	v := fusefstest.NewVolume(t, opts)
	m := fusefstest.MountVolume(t, v, opts)
	// The root's own value is read at the first GETATTR of the mount.
	lstatAttr(t, m.Dir)
	base, baseID := fusefs.MetaReads(m.FS), fusefs.IDReads(m.FS)
	const n = 20
	for i := 0; i < n; i++ {
		d := filepath.Join(m.Dir, fmt.Sprintf("d%d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(d, "f")
		if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		for j, mode := range []uint32{0o600, 0o4755, 0o640} {
			if err := unix.Chmod(f, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(f, 1000+j, 2000+j); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			if err := os.Chtimes(f, now, now); err != nil {
				t.Fatal(err)
			}
			want := mode
			if j > 0 {
				// chown of a non-directory drops set-user-ID.
				want &^= unix.S_ISUID
			}
			if got := lstatAttr(t, f); got != (plainAttr{unix.S_IFREG | want, uint32(1000 + j), uint32(2000 + j)}) {
				t.Fatalf("%s after chmod %04o, chown %d:%d: mode %07o owner %d:%d", f, mode, 1000+j, 2000+j, got.mode, got.uid, got.gid)
			}
		}
		if err := unix.Chmod(d, 0o750); err != nil {
			t.Fatal(err)
		}
		waitAttr(t, m.Dir, fmt.Sprintf("d%d", i), plainAttr{unix.S_IFDIR | 0o750, 0, 0})
	}
	if got := fusefs.MetaReads(m.FS) - base; got != 0 {
		t.Errorf("%d reads of the stored mode and owner for entries made through the mount, want 0", got)
	}
	if got := fusefs.IDReads(m.FS) - baseID; got != 0 {
		t.Errorf("%d reads of entry IDs for entries made through the mount, want 0", got)
	}

	// A fresh mount reads each once, then serves the rest from memory.
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, opts)
	lstatAttr(t, m.Dir)
	base = fusefs.MetaReads(m.FS)
	for i := 0; i < n; i++ {
		f := filepath.Join(m.Dir, fmt.Sprintf("d%d", i), "f")
		for j := 0; j < 3; j++ {
			if got := lstatAttr(t, f); got != (plainAttr{unix.S_IFREG | 0o640, 1002, 2002}) {
				t.Fatalf("%s after remount: mode %07o owner %d:%d", f, got.mode, got.uid, got.gid)
			}
			now := time.Now()
			if err := os.Chtimes(f, now, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, most := fusefs.MetaReads(m.FS)-base, uint64(2*n); got > most {
		t.Errorf("%d reads of the stored mode and owner for %d entries looked up once, want at most %d", got, 2*n, most)
	}
}

// TestMetaCacheConcurrentChanges: while one caller changes a file's mode
// and owner through one name, others stat, write and touch it through a
// hard link; every chmod is seen by the changer at once, and what the
// mount shows in the end is what the backing holds after a remount.
func TestMetaCacheConcurrentChanges(t *testing.T) {
	opts := fusefstest.Options{}
	v := fusefstest.NewVolume(t, opts)
	m := fusefstest.MountVolume(t, v, opts)
	a := filepath.Join(m.Dir, "a")
	b := filepath.Join(m.Dir, "b")
	if err := os.WriteFile(a, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch (i + w) % 3 {
				case 0:
					var st unix.Stat_t
					err = unix.Lstat(b, &st)
				case 1:
					now := time.Now()
					err = os.Chtimes(b, now, now)
				case 2:
					var f *os.File
					if f, err = os.OpenFile(b, os.O_WRONLY, 0); err == nil {
						_, err = f.WriteAt([]byte("y"), int64(i%4096))
						if cerr := f.Close(); err == nil {
							err = cerr
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	var last plainAttr
	for i := 0; i < 300; i++ {
		mode := uint32(0o600 | i%0o100)
		if err := unix.Chmod(a, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(a, 100+i, 200+i); err != nil {
			t.Fatal(err)
		}
		last = plainAttr{unix.S_IFREG | mode, uint32(100 + i), uint32(200 + i)}
		for _, p := range []string{a, b} {
			if got := lstatAttr(t, p); got != last {
				t.Fatalf("%s right after chmod %04o, chown %d:%d: mode %07o owner %d:%d", p, mode, last.uid, last.gid, got.mode, got.uid, got.gid)
			}
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, opts)
	for _, name := range []string{"a", "b"} {
		if got := lstatAttr(t, filepath.Join(m.Dir, name)); got != last {
			t.Errorf("%s after remount: mode %07o owner %d:%d, want %07o %d:%d", name, got.mode, got.uid, got.gid, last.mode, last.uid, last.gid)
		}
	}
}
