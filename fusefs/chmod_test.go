package fusefs_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// Someone who can write the backing directory replaces the backing entry of
// a FIFO (whose mode lives on the backing entry itself) with a symlink to a
// file outside the volume. A chmod through the mount must not follow that
// symlink: the daemon runs as root and would change any file on the host.
func TestChmodNeverFollowsASwappedBackingSymlink(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{PlaintextNames: true})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	if err := unix.Mkfifo(filepath.Join(m.Dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("host file"), 0o600); err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(v.Backing, "fifo")
	if err := os.Remove(backing); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, backing); err != nil {
		t.Fatal(err)
	}
	// The kernel still knows "fifo" as a FIFO; the chmod goes to the daemon.
	_ = os.Chmod(filepath.Join(m.Dir, "fifo"), 0o777)
	var st unix.Stat_t
	if err := unix.Stat(victim, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&07777 != 0o600 {
		t.Fatalf("chmod through the mount changed a file outside the volume to %04o", st.Mode&07777)
	}
}
