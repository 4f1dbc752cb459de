package fusefs_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/fusefs/fusefstest"
)

// These tests run with the default mount, whose entry, attribute and
// negative entry timeouts are long (fusefs.DefaultCacheTimeout): what the
// kernel caches must never be seen stale, and the gate must take it all
// back.

// cachedView is what stat(2) shows from the kernel's caches, compared to
// what the daemon answers when asked (AT_STATX_FORCE_SYNC) and to the
// names a READDIR returns.
type cachedView struct {
	t    *testing.T
	mnt  string
	fsys *fusefs.FS
}

// kernelListing is what getdents(2) returns for dir through the mount
// (the kernel's cached listing, if it has one): name to inode number,
// "." and ".." included.
func kernelListing(dir string) (map[string]uint64, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	out := make(map[string]uint64)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for rec := buf[:n]; len(rec) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			name, _, _ := strings.Cut(string(rec[19:reclen]), "\x00")
			out[name] = binary.NativeEndian.Uint64(rec[0:8])
			rec = rec[reclen:]
		}
	}
}

// daemonListing is what the daemon lists for dir (relative to the mount)
// when asked now, bypassing every kernel cache.
func (v cachedView) daemonListing(rel string) (map[string]uint64, error) {
	in := v.fsys.Root().EmbeddedInode()
	if rel != "." {
		for _, c := range strings.Split(rel, "/") {
			if in = in.GetChild(c); in == nil {
				return nil, fmt.Errorf("the daemon knows no %s", rel)
			}
		}
	}
	ds, errno := in.Operations().(*fusefs.Node).Readdir(context.Background())
	if errno != 0 {
		return nil, errno
	}
	out := make(map[string]uint64)
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			return nil, errno
		}
		if e.Ino == 0 {
			e.Ino = fuse.FUSE_UNKNOWN_INO // as go-fuse sends it
		}
		out[e.Name] = e.Ino
	}
	return out, nil
}

// checkListing fails the test where the kernel lists directory rel
// (relative to the mount) otherwise than the daemon does, names and
// inode numbers, ".." included.
func (v cachedView) checkListing(step, rel string) {
	v.t.Helper()
	kernel, err := kernelListing(filepath.Join(v.mnt, rel))
	if err != nil {
		v.t.Errorf("%s: list %s: %v", step, rel, err)
		return
	}
	daemon, err := v.daemonListing(rel)
	if err != nil {
		v.t.Errorf("%s: daemon listing of %s: %v", step, rel, err)
		return
	}
	if k, d := fmt.Sprint(kernel), fmt.Sprint(daemon); k != d {
		v.t.Errorf("%s: the kernel's listing of %s is stale:\n kernel %s\n daemon %s", step, rel, k, d)
	}
}

const staleMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_NLINK | unix.STATX_UID | unix.STATX_GID |
	unix.STATX_SIZE | unix.STATX_MTIME | unix.STATX_CTIME

func statxAt(p string, flags int) (unix.Statx_t, error) {
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW|flags, staleMask, &st)
	return st, err
}

func attrLine(st unix.Statx_t) string {
	return fmt.Sprintf("mode %o nlink %d uid %d gid %d size %d mtime %d.%09d ctime %d.%09d",
		st.Mode, st.Nlink, st.Uid, st.Gid, st.Size, st.Mtime.Sec, st.Mtime.Nsec, st.Ctime.Sec, st.Ctime.Nsec)
}

// check fails the test where the cached view of a path (relative to the
// mount) differs from the daemon's: existence against the parent's
// listing, attributes against a forced GETATTR.
func (v cachedView) check(step string, rels ...string) {
	v.t.Helper()
	for _, rel := range rels {
		p := filepath.Join(v.mnt, rel)
		listed := false
		ents, err := os.ReadDir(filepath.Dir(p))
		if err == nil {
			for _, e := range ents {
				if e.Name() == filepath.Base(p) {
					listed = true
				}
			}
		}
		if rel == "." {
			listed = true
		} else if err == nil {
			v.checkListing(step, filepath.Dir(rel))
		}
		cached, err := statxAt(p, 0)
		switch {
		case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
			if listed {
				v.t.Errorf("%s: %s is listed but stat says %v", step, rel, err)
			}
			continue
		case err != nil:
			v.t.Errorf("%s: stat %s: %v", step, rel, err)
			continue
		case !listed:
			v.t.Errorf("%s: stat finds %s, which its directory no longer lists (stale entry)", step, rel)
			continue
		}
		fresh, err := statxAt(p, unix.AT_STATX_FORCE_SYNC)
		if err != nil {
			v.t.Errorf("%s: forced stat %s: %v", step, rel, err)
			continue
		}
		if c, f := attrLine(cached), attrLine(fresh); c != f {
			v.t.Errorf("%s: %s: cached attributes are stale:\n cached %s\n daemon %s", step, rel, c, f)
		}
	}
}

// TestCacheNeverStaleSameMount: after each change made through the mount,
// the names and attributes the kernel serves from its caches equal what the
// daemon answers, for the changed entry, its parents and the root.
func TestCacheNeverStaleSameMount(t *testing.T) {
	m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{}), fusefstest.Options{})
	v := cachedView{t, m.Dir, m.FS}
	at := func(rel string) string { return filepath.Join(m.Dir, rel) }
	all := []string{".", "a", "b", "a/f", "b/g", "b/f2", "b/a", "b/a/f", "b/long", "a/missing", "b/missing", "sub"}
	must := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		v.check(step, all...)
	}
	v.check("start", all...)
	must("mkdir a", os.Mkdir(at("a"), 0o755))
	must("mkdir b", os.Mkdir(at("b"), 0o755))
	// The missing names are looked up (and cached as missing) above.
	must("create a/missing", os.WriteFile(at("a/missing"), []byte("now here"), 0o644))
	must("mkdir b/missing", os.Mkdir(at("b/missing"), 0o700))
	must("create a/f", os.WriteFile(at("a/f"), []byte("content"), 0o644))
	must("link a/f b/g", os.Link(at("a/f"), at("b/g")))
	must("chmod a/f", os.Chmod(at("a/f"), 0o600))
	must("chown a/f", os.Chown(at("a/f"), 1234, 5678))
	must("setxattr a/f", unix.Setxattr(at("a/f"), "user.k", []byte("v"), 0))
	must("truncate b/g", os.Truncate(at("b/g"), 3))
	must("rename a/f b/f2", os.Rename(at("a/f"), at("b/f2")))
	must("unlink b/g", os.Remove(at("b/g")))
	must("rename a/missing over b/f2", os.Rename(at("a/missing"), at("b/f2")))
	must("rename dir a to b/a", os.Rename(at("a"), at("b/a")))
	must("create b/a/f", os.WriteFile(at("b/a/f"), []byte("x"), 0o644))
	must("rmdir b/missing", os.Remove(at("b/missing")))
	// A target too long for a backing symlink goes to a side file under
	// the backing root, which changes the root's link count and times.
	must("symlink b/long", os.Symlink(strings.Repeat("t/", 2000), at("b/long")))
	must("unlink b/long", os.Remove(at("b/long")))
	must("mkdir sub", os.Mkdir(at("sub"), 0o755))
	must("rmdir sub", os.Remove(at("sub")))
}

// TestCacheTwoProcessesSeeChanges: a separate process (stat(1)) sees the
// renames, unlinks, link counts and modes this process changes, at once.
func TestCacheTwoProcessesSeeChanges(t *testing.T) {
	statBin, err := exec.LookPath("stat")
	if err != nil {
		t.Fatalf("stat(1) is needed: %v", err)
	}
	m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{}), fusefstest.Options{})
	at := func(rel string) string { return filepath.Join(m.Dir, rel) }
	// observe runs stat(1) in its own process: "-" for a missing name.
	observe := func(rels ...string) string {
		t.Helper()
		var out []string
		for _, rel := range rels {
			b, err := exec.Command(statBin, "-c", "%n %h %a", at(rel)).Output()
			if err != nil {
				out = append(out, rel+" -")
				continue
			}
			out = append(out, strings.TrimPrefix(strings.TrimSpace(string(b)), m.Dir+"/"))
		}
		return strings.Join(out, "; ")
	}
	expect := func(step, want string, rels ...string) {
		t.Helper()
		if got := observe(rels...); got != want {
			t.Errorf("%s: the other process sees %q, want %q", step, got, want)
		}
	}
	if err := os.Mkdir(at("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(at("d/f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("before", "d/f 1 644; d/g -; d/h -", "d/f", "d/g", "d/h")
	if err := os.Link(at("d/f"), at("d/g")); err != nil {
		t.Fatal(err)
	}
	expect("link", "d/f 2 644; d/g 2 644", "d/f", "d/g")
	if err := os.Chmod(at("d/g"), 0o640); err != nil {
		t.Fatal(err)
	}
	expect("chmod", "d/f 2 640; d/g 2 640", "d/f", "d/g")
	if err := os.Rename(at("d/g"), at("d/h")); err != nil {
		t.Fatal(err)
	}
	expect("rename", "d/f 2 640; d/g -; d/h 2 640", "d/f", "d/g", "d/h")
	if err := os.Remove(at("d/f")); err != nil {
		t.Fatal(err)
	}
	expect("unlink", "d/f -; d/h 1 640", "d/f", "d/h")
	if err := os.Mkdir(at("d/sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	expect("mkdir", "d 3 755; d/sub 2 700", "d", "d/sub")
	if err := os.Remove(at("d/sub")); err != nil {
		t.Fatal(err)
	}
	expect("rmdir", "d 2 755; d/sub -", "d", "d/sub")
}

// TestGateCloseDropsCachedNames: with long timeouts the kernel caches
// names, attributes, pages and negative entries; after the gate closes
// each of them fails with EIO (not ENOENT, not old data).
func TestGateCloseDropsCachedNames(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{})
	at := func(rel string) string { return filepath.Join(m.Dir, rel) }
	if err := os.MkdirAll(at("d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, at("d/e/f"), []byte("cached page"))
	readFile(t, at("d/e/f"))
	for _, p := range []string{"d/nothing", "d/e/nothing", "nothing"} {
		if _, err := os.Stat(at(p)); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("stat %s: %v, want ENOENT", p, err)
		}
	}
	// The negative entries are cached: asking again sends no LOOKUP.
	lookups := m.FS.Ops()["LOOKUP"]
	for _, p := range []string{"d/nothing", "d/e/nothing", "nothing"} {
		os.Stat(at(p))
	}
	if got := m.FS.Ops()["LOOKUP"]; got != lookups {
		t.Fatalf("missing names were looked up again (%d LOOKUPs): negative entries are not cached", got-lookups)
	}
	// So are the listings: listing again sends no READDIR(PLUS).
	listings := func() uint64 { ops := m.FS.Ops(); return ops["READDIR"] + ops["READDIRPLUS"] }
	for _, d := range []string{".", "d", "d/e"} {
		if _, err := os.ReadDir(at(d)); err != nil {
			t.Fatal(err)
		}
	}
	before := listings()
	for _, d := range []string{".", "d", "d/e"} {
		if _, err := os.ReadDir(at(d)); err != nil {
			t.Fatal(err)
		}
	}
	if got := listings(); got != before {
		t.Fatalf("unchanged directories were listed again (%d requests): listings are not cached", got-before)
	}
	f, err := os.Open(at("d/e/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	m.Gate.Close("test")
	for _, d := range []string{".", "d", "d/e"} {
		if ents, err := os.ReadDir(at(d)); !errors.Is(err, syscall.EIO) {
			t.Errorf("list %s after close: %d entries, %v; want EIO", d, len(ents), err)
		}
	}
	for _, p := range []string{"d", "d/e", "d/e/f", "d/nothing", "d/e/nothing", "nothing"} {
		if _, err := os.Lstat(at(p)); !errors.Is(err, syscall.EIO) {
			t.Errorf("stat %s after close: %v, want EIO", p, err)
		}
	}
	if _, err := os.ReadFile(at("d/e/f")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after close: %v, want EIO", err)
	}
	buf := make([]byte, 4)
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read through an open descriptor after close: %v, want EIO", err)
	}

	m.Gate.Open(v.Keys(t))
	if _, err := os.Stat(at("d/nothing")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of a missing name after reopen: %v, want ENOENT", err)
	}
	if got := readFile(t, at("d/e/f")); string(got) != "cached page" {
		t.Errorf("after reopen: %q", got)
	}
	if ents, err := os.ReadDir(at("d")); err != nil || len(ents) != 1 || ents[0].Name() != "e" {
		t.Errorf("list d after reopen: %v, %v; want [e]", ents, err)
	}
}

// TestGateCloseRacingLookups: lookups answered while the gate closes leave
// nothing cached behind the invalidation: every name, present or missing,
// fails with EIO once Close has returned.
func TestGateCloseRacingLookups(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{})
	var names []string
	for i := range 8 {
		d := filepath.Join(m.Dir, fmt.Sprintf("d%d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range 16 {
			writeFile(t, filepath.Join(d, fmt.Sprintf("f%d", j)), []byte("x"))
			names = append(names, filepath.Join(d, fmt.Sprintf("f%d", j)), filepath.Join(d, fmt.Sprintf("missing%d", j)))
		}
	}
	for round := range 20 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; ; i = (i + 4) % len(names) {
					select {
					case <-stop:
						return
					default:
					}
					os.Lstat(names[i])
					if i%16 == w {
						// READDIRPLUS answers names and attributes too.
						os.ReadDir(filepath.Dir(names[i]))
					}
				}
			}()
		}
		for range 50 {
			os.Lstat(names[round%len(names)])
		}
		m.Gate.Close("test")
		close(stop)
		wg.Wait()
		for _, p := range names {
			if _, err := os.Lstat(p); !errors.Is(err, syscall.EIO) {
				t.Fatalf("round %d: stat %s after close: %v, want EIO", round, p, err)
			}
		}
		m.Gate.Open(v.Keys(t))
	}
}

// TestCacheTimeoutOption: a negative CacheTimeout caches nothing: every
// stat of a missing name reaches the daemon.
func TestCacheTimeoutOption(t *testing.T) {
	m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{}), fusefstest.Options{CacheTimeout: -1})
	p := filepath.Join(m.Dir, "nothing")
	os.Stat(p)
	lookups := m.FS.Ops()["LOOKUP"]
	os.Stat(p)
	if got := m.FS.Ops()["LOOKUP"]; got == lookups {
		t.Fatal("with no caching, a second stat of a missing name sent no LOOKUP")
	}
}

// TestACLsNoneCached: the kernel caches each inode's POSIX ACLs (the mount
// asks for FUSE_POSIX_ACL), so asking twice costs one GETXATTR; none can be
// stored, and the umask still applies to what is created.
func TestACLsNoneCached(t *testing.T) {
	m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{}), fusefstest.Options{})
	at := func(rel string) string { return filepath.Join(m.Dir, rel) }
	umask := processUmask(t)
	if err := os.WriteFile(at("f"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(at("d"), 0o777); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rel  string
		want os.FileMode
	}{{"f", 0o666 &^ umask}, {"d", os.ModeDir | 0o777&^umask}} {
		if st, err := os.Stat(at(c.rel)); err != nil || st.Mode() != c.want {
			t.Errorf("%s created with umask %03o: %v, %v; want %v", c.rel, umask, st.Mode(), err, c.want)
		}
	}
	for _, rel := range []string{"f", "d"} {
		names := []string{"system.posix_acl_access"}
		if rel == "d" {
			names = append(names, "system.posix_acl_default")
		}
		for _, name := range names {
			before := m.FS.Ops()["GETXATTR"]
			for range 3 {
				if _, err := unix.Getxattr(at(rel), name, make([]byte, 256)); !errors.Is(err, syscall.ENODATA) {
					t.Errorf("getxattr %s %s: %v, want ENODATA", rel, name, err)
				}
			}
			if got := m.FS.Ops()["GETXATTR"] - before; got > 1 {
				t.Errorf("getxattr %s %s three times sent %d GETXATTR: the kernel does not cache the ACL", rel, name, got)
			}
		}
	}
	// user::rw- group::r-- other::r--, in the kernel's xattr form.
	acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}
	if err := unix.Setxattr(at("f"), "system.posix_acl_access", acl, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("setting an ACL: %v, want EOPNOTSUPP", err)
	}
}

// processUmask reads the umask from /proc: umask(2) would change it for
// every test running at the time.
func processUmask(t *testing.T) os.FileMode {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			var u uint32
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%o", &u); err != nil {
				t.Fatal(err)
			}
			return os.FileMode(u)
		}
	}
	t.Fatal("no Umask line in /proc/self/status")
	return 0
}

// TestListingsWithoutOpendir: the kernel sends no OPENDIR or RELEASEDIR
// after the first OPENDIR is refused, and a directory too large for one
// READDIRPLUS reply is listed exactly, also right after half of it went.
func TestListingsWithoutOpendir(t *testing.T) {
	m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{}), fusefstest.Options{})
	dir := filepath.Join(m.Dir, "big")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := make(map[string]bool)
	for i := range 1500 {
		name := fmt.Sprintf("%04d-%s", i, strings.Repeat("n", 60))
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	check := func(step string) {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		got := make(map[string]bool)
		for _, e := range ents {
			if got[e.Name()] || !want[e.Name()] {
				t.Fatalf("%s: %q listed twice or not there", step, e.Name())
			}
			got[e.Name()] = true
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries listed, want %d", step, len(got), len(want))
		}
	}
	before := m.FS.Ops()
	check("first listing")
	if got := m.FS.Ops()["READDIRPLUS"] - before["READDIRPLUS"]; got < 2 {
		t.Fatalf("the listing took %d READDIRPLUS requests; the test needs one that continues", got)
	}
	for i := range 1500 {
		if i%2 == 0 {
			name := fmt.Sprintf("%04d-%s", i, strings.Repeat("n", 60))
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			delete(want, name)
		}
	}
	check("after removing half")
	check("cached")
	for range 3 {
		for _, d := range []string{m.Dir, dir} {
			if _, err := os.ReadDir(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	ops := m.FS.Ops()
	if ops["OPENDIR"] > 1 || ops["RELEASEDIR"] > 0 {
		t.Errorf("%d OPENDIR and %d RELEASEDIR requests: want at most the first OPENDIR", ops["OPENDIR"], ops["RELEASEDIR"])
	}
}
