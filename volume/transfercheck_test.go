package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestCompareTrees: the check finds every kind of difference between two
// trees and names the entry; equal trees pass.
func TestCompareTrees(t *testing.T) {
	build := func(t *testing.T, dir string) {
		t.Helper()
		for _, f := range []struct{ rel, data string }{
			{"a/one", strings.Repeat("1", 5000)}, {"a/two", "2"}, {"b/three", "3"}, {"big", strings.Repeat("b", 3*chunkSize)},
		} {
			p := filepath.Join(dir, f.rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Link(filepath.Join(dir, "a/one"), filepath.Join(dir, "b/one-link")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(dir string) error
		path   string
		what   string
	}{
		{"equal", func(string) error { return nil }, "", ""},
		{"content", func(d string) error {
			f, err := os.OpenFile(filepath.Join(d, "big"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("x"), 2*chunkSize+7)
			return err
		}, "big", "content differs from the source at byte 16777223"},
		{"mode", func(d string) error { return os.Chmod(filepath.Join(d, "a/two"), 0o600) }, "a/two", "mode"},
		{"missing", func(d string) error { return os.Remove(filepath.Join(d, "b/three")) }, "b/three", "missing"},
		{"extra", func(d string) error { return os.WriteFile(filepath.Join(d, "c"), nil, 0o644) }, "c", "not in the source"},
		{"size", func(d string) error { return os.WriteFile(filepath.Join(d, "a/two"), []byte("22"), 0o644) }, "a/two", "size"},
		{"links", func(d string) error {
			os.Remove(filepath.Join(d, "b/one-link"))
			return os.WriteFile(filepath.Join(d, "b/one-link"), []byte(strings.Repeat("1", 5000)), 0o644)
		}, "b/one-link", "hard links"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := t.TempDir(), t.TempDir()
			build(t, a)
			build(t, b)
			if err := tc.change(b); err != nil {
				t.Fatal(err)
			}
			// Same modification times, so only the change differs.
			for _, rel := range []string{"a/one", "a/two", "b/three", "big", "b/one-link", "c"} {
				if st, err := os.Stat(filepath.Join(a, rel)); err == nil {
					os.Chtimes(filepath.Join(b, rel), st.ModTime(), st.ModTime())
				}
			}
			sa, err := OpenPlainSource(a, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer sa.Close()
			sb, err := OpenPlainSource(b, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			n, err := compareTrees(context.Background(), sa, sb, 4, NoProgress{})
			if tc.path == "" {
				if err != nil || n != 5 {
					t.Fatalf("equal trees: %d files, %v", n, err)
				}
				return
			}
			var m *Mismatch
			if !errors.As(err, &m) || !errors.Is(err, ErrMismatch) || m.Path != tc.path || !strings.Contains(m.What, tc.what) {
				t.Fatalf("got %v, want a mismatch of %s naming %q", err, tc.path, tc.what)
			}
		})
	}
}
