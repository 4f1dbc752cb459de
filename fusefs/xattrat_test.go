package fusefs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// lgetxattrFast must answer exactly like lgetxattr on the /proc path it
// replaces: value, size query, missing attribute and missing entry.
func TestLgetxattrFastMatchesLgetxattr(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(dir, "f"), "user.x", []byte("value"), 0); err != nil {
		t.Fatalf("backing file system without user xattrs: %v", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	buf := make([]byte, 16)
	n, err := lgetxattrFast(fdPath(fd, "f"), "user.x", buf)
	if err != nil || string(buf[:n]) != "value" {
		t.Fatalf("value: got %q, %v", buf[:n], err)
	}
	if n, err := lgetxattrFast(fdPath(fd, "f"), "user.x", nil); err != nil || n != 5 {
		t.Fatalf("size query: got %d, %v", n, err)
	}
	for _, c := range []struct {
		name, attr string
		want       syscall.Errno
	}{
		{"f", "user.none", syscall.ENODATA},
		{"missing", "user.x", syscall.ENOENT},
		{"l", "user.x", syscall.ENODATA}, // the link itself, not its target
	} {
		_, err := lgetxattrFast(fdPath(fd, c.name), c.attr, buf)
		_, ref := unix.Lgetxattr(fdPath(fd, c.name), c.attr, buf)
		if !errors.Is(err, c.want) || !errors.Is(ref, c.want) {
			t.Errorf("%s %s: got %v, lgetxattr %v, want %v", c.name, c.attr, err, ref, c.want)
		}
	}
	// A plain path still works (fallback).
	if n, err := lgetxattrFast(filepath.Join(dir, "f"), "user.x", buf); err != nil || string(buf[:n]) != "value" {
		t.Fatalf("plain path: got %q, %v", buf[:n], err)
	}
}
