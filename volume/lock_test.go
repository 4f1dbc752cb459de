package volume

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// holdFlock takes the volume's flock through a descriptor of its own, as
// another process would (flock belongs to the open file description).
func holdFlock(t *testing.T, backing string) *os.File {
	t.Helper()
	f, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLockWaitsForExitingHolder: a holder that is not a mount (a daemon
// whose mount umount(8) just detached) is waited for, so the lock is taken
// once it lets go; one that keeps it is reported as in use after the wait.
func TestLockWaitsForExitingHolder(t *testing.T) {
	backing := t.TempDir()
	f := holdFlock(t, backing)
	type result struct {
		l   *VolumeLock
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := LockVolume(backing)
		got <- result{l, err}
	}()
	// While the holder keeps the lock no result comes (a LockVolume that
	// does not wait fails here at once); once it lets go, the waiter has it.
	select {
	case r := <-got:
		t.Fatalf("lock taken while held: %v, %v", r.l, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	f.Close()
	r := <-got
	if r.err != nil {
		t.Fatalf("lock after the holder exited: %v", r.err)
	}
	r.l.Release()

	f = holdFlock(t, backing)
	defer f.Close()
	start := time.Now()
	_, err := LockVolume(backing)
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Mountpoint != "" {
		t.Fatalf("a held lock: %v", err)
	}
	if waited := time.Since(start); waited < exitingHolderWait {
		t.Errorf("gave up after %v, want at least %v", waited, exitingHolderWait)
	}
}
