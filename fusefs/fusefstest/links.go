package fusefstest

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// BackingSymlinks lists the symlinks of a backing directory by the
// directory that holds them (relative to backing, "." for the root), each
// list sorted.
func BackingSymlinks(t testing.TB, backing string) map[string][]string {
	t.Helper()
	backing = filepath.Clean(backing)
	out := map[string][]string{}
	err := filepath.WalkDir(backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(backing, filepath.Dir(p))
			out[rel] = append(out[rel], p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	for _, l := range out {
		slices.Sort(l)
	}
	return out
}

// SwapTargets gives the backing symlinks a and b each other's stored
// target, as someone who can write the backing directory can.
func SwapTargets(t testing.TB, a, b string) {
	t.Helper()
	ta, err := os.Readlink(a)
	if err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	tb, err := os.Readlink(b)
	if err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	for _, s := range []struct{ path, target string }{{a, tb}, {b, ta}} {
		if err := os.Remove(s.path); err != nil {
			t.Fatalf("fusefstest: %v", err)
		}
		if err := os.Symlink(s.target, s.path); err != nil {
			t.Fatalf("fusefstest: %v", err)
		}
	}
}
