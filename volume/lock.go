package volume

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// VolumeLock is an exclusive hold on a volume: a flock(2) on its backing
// directory. Two daemons serving one backing directory would each trust
// their own caches and could interleave sector writes, so a mount holds
// the lock for as long as it serves. The kernel drops the lock when the
// holder exits, killed or not, so a crashed daemon never leaves the volume
// locked. The lock names the directory by inode, so a second path to it
// (symlink, bind mount) meets the same lock.
type VolumeLock struct {
	f *os.File
}

// InUseError says that another process holds a volume's lock.
type InUseError struct {
	Backing    string
	PID        int    // holder of the lock; 0 when /proc/locks does not say
	Mountpoint string // where that holder has it mounted; "" when not mounted
}

func (e *InUseError) Error() string {
	switch {
	case e.Mountpoint != "" && e.PID != 0:
		return fmt.Sprintf("volume %s is already mounted on %s (daemon pid %d); a volume can be mounted once at a time: use that mount, or unmount it first with `encvol umount %s`", e.Backing, e.Mountpoint, e.PID, e.Mountpoint)
	case e.Mountpoint != "":
		return fmt.Sprintf("volume %s is already mounted on %s; a volume can be mounted once at a time: use that mount, or unmount it first with `encvol umount %s`", e.Backing, e.Mountpoint, e.Mountpoint)
	case e.PID != 0:
		return fmt.Sprintf("volume %s is in use by process %d (%s); wait for it to finish", e.Backing, e.PID, processName(e.PID))
	}
	return fmt.Sprintf("volume %s is in use by another encvol process; wait for it to finish", e.Backing)
}

// exitingHolderWait bounds how long LockVolume waits for a holder that is
// not a mount. umount(8) returns once the kernel has detached a mount, a
// little before its daemon has exited and dropped the lock, so a command
// run right after it would otherwise find the volume in use.
const exitingHolderWait = 2 * time.Second

// LockVolume takes the volume's exclusive lock. A live mount's lock is
// refused at once; another holder (a daemon whose mount was just
// detached, an operation on the whole volume) is waited for up to
// exitingHolderWait. When the lock stays held, the error is an
// *InUseError naming the holder and, if it is a mount, its mountpoint.
func LockVolume(backing string) (*VolumeLock, error) {
	f, err := os.Open(backing)
	if err != nil {
		return nil, fmt.Errorf("lock volume %s: %w", backing, err)
	}
	deadline := time.Now().Add(exitingHolderWait)
	for {
		err = tryFlock(f)
		if err == nil {
			return &VolumeLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock volume %s: %w", backing, err)
		}
		holder := lockHolder(backing, f)
		if holder.Mountpoint != "" || time.Now().After(deadline) {
			f.Close()
			return nil, holder
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tryFlock takes the exclusive flock of f without waiting.
func tryFlock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// CheckNotInUse fails with an *InUseError when the volume is locked (by a
// mount or another operation on the whole volume) and returns at once.
func CheckNotInUse(backing string) error {
	l, err := LockVolume(backing)
	if err != nil {
		return err
	}
	return l.Release()
}

// Release gives the lock up.
func (l *VolumeLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	return err
}

// lockHolder finds who holds the lock on the open directory f.
func lockHolder(backing string, f *os.File) *InUseError {
	e := &InUseError{Backing: backing}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return e
	}
	id := identityOf(&st)
	e.PID = flockHolder(id)
	e.Mountpoint = encvolMountOf(id)
	return e
}

// flockHolder reads /proc/locks for the process holding a flock on id.
// Its lines look like "1: FLOCK  ADVISORY  WRITE 4711 fe:00:9979281 0 EOF",
// the device as hexadecimal major:minor.
func flockHolder(id fileID) int {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(id.dev), unix.Minor(id.dev), id.ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A waiter's line starts with "->", which shifts its fields by one.
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil {
			return pid
		}
	}
	return 0
}

// encvolMountOf returns the mountpoint of the encvol mount whose backing
// directory is id, or "". A mount's source field is its backing directory;
// stat-ing that never touches a FUSE mount.
func encvolMountOf(id fileID) string {
	mounts, err := EncvolMounts()
	if err != nil {
		return ""
	}
	for _, m := range mounts {
		if src, err := dirIdentity(m.Source); err == nil && src == id {
			return m.Mountpoint
		}
	}
	return ""
}

// processName is the command name of pid, for messages.
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
