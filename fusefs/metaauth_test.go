package fusefs_test

import (
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
)

// The stored mode and owner of a volume with authenticated metadata are
// bound to the entry: a changed uid, or the record of another entry put in
// place of an entry's own, is EIO plus a log line, never shown.
func TestMetaAuthTamperDetected(t *testing.T) {
	opts := fusefstest.Options{PlaintextNames: true}
	v := fusefstest.NewVolume(t, opts)
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	for _, name := range []string{"victim", "donor", "empty"} {
		if err := os.WriteFile(filepath.Join(m.Dir, name), []byte("content of "+name), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(filepath.Join(m.Dir, "empty"), 0); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"dir", "dir2"} {
		if err := os.Mkdir(filepath.Join(m.Dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(m.Dir, "victim"), 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(m.Dir, "donor"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}

	get := func(name string) []byte {
		b, err := fusefs.GetXattr(filepath.Join(v.Backing, name), fusefs.MetaXattr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return b
	}
	set := func(name string, b []byte) {
		if err := unix.Lsetxattr(filepath.Join(v.Backing, name), fusefs.MetaXattr, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	// victim's uid becomes root's.
	rec := get("victim")
	copy(rec[5:9], []byte{0, 0, 0, 0})
	set("victim", rec)
	// empty (a file without content) gets donor's record (0755).
	set("empty", get("donor"))
	// dir gets dir2's record.
	set("dir", get("dir2"))

	var logs logBuffer
	lg := zerolog.New(&logs)
	m2 := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v, Log: &lg})
	for _, name := range []string{"victim", "empty", "dir"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(m2.Dir, name), &st); !errors.Is(err, syscall.EIO) {
			t.Errorf("stat %s with a tampered mode and owner: mode %o uid %d, err %v; want EIO", name, st.Mode, st.Uid, err)
		}
		if !strings.Contains(logs.String(), filepath.Join(v.Backing, name)) {
			t.Errorf("no log line names %s:\n%s", name, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "stored mode and owner failed authentication") {
		t.Errorf("log does not say what failed:\n%s", logs.String())
	}
	// The untouched entries still show what was stored.
	for name, want := range map[string]uint32{"donor": 0o755, "dir2": 0o750} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(m2.Dir, name), &st); err != nil || st.Mode&0o7777 != want {
			t.Errorf("%s: mode %o, %v; want %o", name, st.Mode&0o7777, err, want)
		}
	}
}

// Truncating a file to zero keeps its file ID, and with it the record
// bound to the ID; chmod and chown keep working on the way.
func TestMetaAuthSurvivesTruncateAndRename(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	p := filepath.Join(m.Dir, "f")
	if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o741); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p, filepath.Join(m.Dir, "g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(m.Dir, "g"), filepath.Join(m.Dir, "h")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "h"), []byte("again"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m2 := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	for _, name := range []string{"g", "h"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(m2.Dir, name), &st); err != nil || st.Mode&0o7777 != 0o741 {
			t.Errorf("%s: mode %o, %v; want 0741", name, st.Mode&0o7777, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(m2.Dir, "g")); err != nil || string(b) != "again" {
		t.Errorf("g: %q, %v", b, err)
	}
}

// A user attribute value is bound to the entry that holds it: the sealed
// value of one file copied onto another under the same (deterministic)
// backing name fails there.
func TestXattrValueBoundToEntry(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{PlaintextNames: true})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	for _, name := range []string{"a", "b"} {
		p := filepath.Join(m.Dir, name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.label", []byte("value of "+name), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	const stored = "user.label" // plaintext names keep attribute names
	val, err := fusefs.GetXattr(filepath.Join(v.Backing, "a"), stored)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(v.Backing, "b"), stored, val, 0); err != nil {
		t.Fatal(err)
	}
	m2 := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	buf := make([]byte, 100)
	if n, err := unix.Getxattr(filepath.Join(m2.Dir, "b"), "user.label", buf); !errors.Is(err, syscall.EIO) {
		t.Errorf("b's attribute after a's value was moved there: %q, %v; want EIO", buf[:max(n, 0)], err)
	}
	if n, err := unix.Getxattr(filepath.Join(m2.Dir, "a"), "user.label", buf); err != nil || string(buf[:n]) != "value of a" {
		t.Errorf("a's own attribute: %q, %v", buf[:max(n, 0)], err)
	}
}
