package names

import (
	"errors"
	"strings"
	"testing"
)

// TestSymlinkBoundToEntry: in a volume that binds targets, a stored target
// opens only for the symlink it was sealed for; moved to another name in
// the same directory, or to the same name in another directory, it fails.
func TestSymlinkBoundToEntry(t *testing.T) {
	c := newCodec(t, false)
	c.SetBindLinks()
	if !c.BindLinks() {
		t.Fatal("BindLinks false after SetBindLinks")
	}
	for _, target := range []string{"../x/y", strings.Repeat("t", 3100)} {
		s, err := c.EncryptSymlink(dirID(1), "a", target)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.DecryptSymlink(dirID(1), "a", s); err != nil || got != target {
			t.Fatalf("own entry: %d bytes, %v", len(got), err)
		}
		for _, e := range []struct {
			dir  []byte
			name string
		}{{dirID(1), "b"}, {dirID(2), "a"}, {dirID(1), "ab"}, {dirID(1), "A"}} {
			if _, err := c.DecryptSymlink(e.dir, e.name, s); !errors.Is(err, ErrNameAuth) {
				t.Errorf("target of a in dir 1 opens as %q in dir %d: %v", e.name, e.dir[0], err)
			}
		}
	}
	if _, err := c.EncryptSymlink(nil, "a", "x"); !errors.Is(err, ErrDirIDCorrupt) {
		t.Errorf("no directory ID: %v", err)
	}
	if _, err := c.EncryptSymlink(dirID(1), "", "x"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("no name: %v", err)
	}
}

// TestSymlinkUnboundOldFormat: without SetBindLinks (format versions 1 to
// 3) the additional data stays empty, so existing volumes keep reading.
func TestSymlinkUnboundOldFormat(t *testing.T) {
	c := newCodec(t, false)
	s, err := c.EncryptSymlink(dirID(1), "a", "../x")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.DecryptSymlink(nil, "", s); err != nil || got != "../x" {
		t.Fatalf("unbound target: %q %v", got, err)
	}
	c.SetBindLinks()
	if _, err := c.DecryptSymlink(dirID(1), "a", s); !errors.Is(err, ErrNameAuth) {
		t.Fatalf("unbound target opens in a binding volume: %v", err)
	}
}
