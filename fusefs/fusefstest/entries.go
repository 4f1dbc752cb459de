package fusefstest

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// BackingByInode returns the backing path of the entry that the mount
// shows with inode number ino: the mount passes backing inode numbers
// through when the backing directory is on one device.
func BackingByInode(t testing.TB, backing string, ino uint64) string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err == nil && st.Ino == ino {
			found = append(found, p)
		}
		return nil
	})
	if err != nil || len(found) != 1 {
		t.Fatalf("fusefstest: backing entries with inode %d: %v (%v)", ino, found, err)
	}
	return found[0]
}

// BackingOf returns the backing path of the entry rel of the mount mnt of
// backing: the entry of its backing directory with its inode number.
func BackingOf(t testing.TB, backing, mnt, rel string) string {
	t.Helper()
	dir := backing
	if parent := filepath.Dir(rel); parent != "." {
		dir = BackingOf(t, backing, mnt, parent)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(mnt, rel), &st); err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	for _, e := range ents {
		var bst unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, e.Name()), &bst); err == nil && bst.Ino == st.Ino {
			return filepath.Join(dir, e.Name())
		}
	}
	t.Fatalf("fusefstest: no backing entry of %s in %s", rel, dir)
	return ""
}

// SwapEntries exchanges two backing entries, as someone who can write the
// backing directory could.
func SwapEntries(t testing.TB, a, b string) {
	t.Helper()
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("fusefstest: swap backing entries: %v", err)
	}
}
