package kms

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadableByOthers(t *testing.T) {
	// t.TempDir sits inside a 0700 directory, which would hide every
	// file; this one sits right in the temporary directory.
	open, err := os.MkdirTemp("", "readable-by-others-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(open) })
	for d := filepath.Dir(open); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("the temporary directory %s is closed to other users at %s; run the tests with TMPDIR=/tmp", os.TempDir(), d)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(open, "closed")
	groupOnly := filepath.Join(open, "group")
	for dir, mode := range map[string]os.FileMode{closed: 0o700, groupOnly: 0o710} {
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		dir  string
		mode os.FileMode
		want bool
	}{
		{open, 0o600, false},
		{open, 0o644, true},
		{open, 0o640, true},
		{open, 0o604, true},
		{closed, 0o644, false}, // nobody else gets into the directory
		{groupOnly, 0o640, true},
		{groupOnly, 0o604, false}, // others stop at the directory
	} {
		p := filepath.Join(c.dir, "secret")
		if err := os.WriteFile(p, []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		got, mode, err := ReadableByOthers(p)
		if err != nil || got != c.want || mode != c.mode {
			t.Errorf("%04o file in %s: readable=%v mode=%04o err=%v, want %v", c.mode, filepath.Base(c.dir), got, mode, err, c.want)
		}
		os.Remove(p)
	}
	if _, _, err := ReadableByOthers(filepath.Join(open, "missing")); err == nil {
		t.Error("a missing file gave no error")
	}
}

// A store directory that others can enter is made private when opened.
func TestOpenMakesStoreDirPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("store directory is %04o after Open, want 0700", fi.Mode().Perm())
	}
}
