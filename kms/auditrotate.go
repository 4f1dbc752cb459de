package kms

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Rotation of the audit log by size, safe with several processes appending
// (a mount daemon with the local KMS, `encvol kms disable-key`, `encvol kms
// serve` may all have the store open):
//
//   - Rotation renames, it never copies: audit.jsonl.N-1 -> .N, ..., .1 ->
//     .2, audit.jsonl -> .1, each with RENAME_NOREPLACE, then the directory
//     is fsync'd. A record is in exactly one file, whatever moment a crash
//     picks; a crash between two renames leaves a gap in the numbering,
//     which readers tolerate.
//   - audit.lock (flock) is taken exclusively by a rotator, without
//     waiting (a busy lock postpones the rotation to the next append), and
//     shared by readers and by writers while they open audit.jsonl. So two
//     processes never rotate at once, a reader lists and opens a consistent
//     set of files, and a writer's open and lock (next point) are not split
//     by a rename.
//   - Every writer holds a shared flock on the file it appends to; retention
//     deletes an old file only under an exclusive flock taken without
//     waiting, so a file a writer still holds is kept (renamed one further)
//     rather than deleted under it. An idle process thus keeps one file
//     past the retention until it next writes or closes the store.
//   - A rotated file is made read-only (0400). Before every write a writer
//     fstats its descriptor: a read-only file means another process
//     rotated it away, and the writer reopens audit.jsonl; a file at the
//     size limit means rotation is due. A record written in the instant
//     between that fstat and another process's rename lands at the end of
//     audit.jsonl.1: kept, in its writer's order, only one file earlier
//     than records other processes wrote a moment before it.
const (
	auditLockFile = "audit.lock"
	rotatedMode   = 0o400
	// rotateRetry spaces attempts after a failed rotation, which each
	// append would otherwise repeat.
	rotateRetry = time.Minute
)

// openCurrentAudit opens audit.jsonl for appending and takes the writer's
// shared lock on it. Unless the caller holds audit.lock already (a
// rotator), it takes it shared for the open, so that no rotation renames
// the file between the open and the lock.
func openCurrentAudit(path string, lockHeld bool) (*os.File, error) {
	if !lockHeld {
		lk, err := lockAuditDir(filepath.Dir(path), unix.LOCK_SH)
		if err != nil {
			return nil, err
		}
		defer lk.Close()
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flock(f, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockAuditDir takes audit.lock (how is LOCK_SH or LOCK_EX, possibly with
// LOCK_NB); closing the returned file releases it.
func lockAuditDir(dir string, how int) (*os.File, error) {
	p := filepath.Join(dir, auditLockFile)
	lk, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	for {
		err = unix.Flock(int(lk.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		lk.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return lk, nil
}

// sameFile reports whether f is the file now at path.
func sameFile(f *os.File, path string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return false, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if err := unix.Stat(path, &pst); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return fst.Dev == pst.Dev && fst.Ino == pst.Ino, nil
}

// turnDue reports whether the file appends go to was rotated away by
// another process or has reached the size limit; the caller holds mu.
func (a *auditLog) turnDue() bool {
	var st unix.Stat_t
	if unix.Fstat(a.fd, &st) != nil {
		return false // the write reports the problem
	}
	return st.Mode&0o200 == 0 || st.Size >= a.maxSize
}

// turn follows another process's rotation or rotates the log. A failure
// does not fail the append that found the turn due: the record still goes
// to the current file, and the failure is recorded in the log itself (at
// most once per rotateRetry, which also spaces rotation attempts).
func (a *auditLog) turn() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || !a.turnDue() {
		return
	}
	same, err := sameFile(a.f, a.path)
	switch {
	case err != nil:
	case !same:
		err = a.reopen(false)
	case !a.failedAt.IsZero() && a.now().Sub(a.failedAt) < rotateRetry:
		return
	default:
		err = a.rotate()
	}
	if err == nil {
		a.failedAt = time.Time{}
		return
	}
	if !a.failedAt.IsZero() && a.now().Sub(a.failedAt) < rotateRetry {
		return
	}
	a.failedAt = a.now()
	line, _ := json.Marshal(&AuditRecord{Time: a.now().UTC(), Principal: systemPrincipal, Operation: "RotateAuditLog",
		Result: CodeInternal, Message: err.Error()})
	_ = a.writeAll(append(line, '\n'))
}

// rotate runs under mu held exclusively, on a file that was audit.jsonl
// a moment ago.
func (a *auditLog) rotate() error {
	lk, err := lockAuditDir(filepath.Dir(a.path), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil // another process rotates or reads: the next append looks again
	}
	if err != nil {
		return err
	}
	// Closing lk releases the lock. Another rotation may have finished
	// before it was taken.
	defer lk.Close()
	same, err := sameFile(a.f, a.path)
	if err != nil {
		return err
	}
	if !same {
		return a.reopen(true)
	}
	var st unix.Stat_t
	if err := unix.Fstat(a.fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", a.path, err)
	}
	if st.Mode&0o200 == 0 {
		// Made read-only by hand (rotation does it only after the
		// rename): writable again, so writers stop turning, and rotate
		// if due.
		if err := unix.Fchmod(a.fd, 0o600); err != nil {
			return fmt.Errorf("chmod %s: %w", a.path, err)
		}
	}
	if st.Size < a.maxSize {
		return nil
	}
	// What this file holds is durable before it stops being audit.jsonl.
	if err := unix.Fsync(a.fd); err != nil {
		return fmt.Errorf("sync %s: %w", a.path, err)
	}
	rotated, err := rotatedAuditFiles(filepath.Dir(a.path))
	if err != nil {
		return err
	}
	for i := len(rotated) - 1; i >= 0; i-- {
		n := rotated[i]
		from := rotatedName(a.path, n)
		if a.keep > 0 && n+1 > a.keep {
			removed, err := removeUnheld(from)
			if err != nil {
				return err
			}
			if removed {
				continue
			}
		}
		if err := renameNoReplace(from, rotatedName(a.path, n+1)); err != nil {
			return err
		}
		// Repairs a file a crashed rotation left writable.
		_ = os.Chmod(rotatedName(a.path, n+1), rotatedMode)
	}
	if err := renameNoReplace(a.path, rotatedName(a.path, 1)); err != nil {
		return err
	}
	if err := unix.Fchmod(a.fd, rotatedMode); err != nil {
		return fmt.Errorf("chmod %s: %w", rotatedName(a.path, 1), err)
	}
	if err := syncDir(filepath.Dir(a.path)); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(a.path), err)
	}
	return a.reopen(true)
}

// reopen switches appends to the file now at the path; mu is held
// exclusively, and lockHeld says whether audit.lock is too.
func (a *auditLog) reopen(lockHeld bool) error {
	f, err := openCurrentAudit(a.path, lockHeld)
	if err != nil {
		return fmt.Errorf("reopen %s: %w", a.path, err)
	}
	// Records this process wrote to the old file get their fsync now: the
	// background flush only knows the current descriptor.
	serr := unix.Fsync(a.fd)
	a.f.Close()
	a.setFile(f)
	if serr != nil {
		return fmt.Errorf("sync %s: %w", rotatedName(a.path, 1), serr)
	}
	return nil
}

// removeUnheld deletes a rotated file unless a writer still holds it.
func removeUnheld(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("remove %s: %w", path, err)
	}
	return true, nil
}

func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE; rotators exclude each
		// other through audit.lock, so checking first is enough.
		if _, serr := os.Lstat(to); serr == nil {
			err = unix.EEXIST
		} else {
			err = os.Rename(from, to)
		}
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	return nil
}

func rotatedName(path string, n int) string { return path + "." + strconv.Itoa(n) }

// rotatedAuditFiles returns the numbers N of the audit.jsonl.N files in
// dir, ascending (newest first).
func rotatedAuditFiles(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var out []int
	for _, e := range ents {
		num, ok := strings.CutPrefix(e.Name(), auditFile+".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || strconv.Itoa(n) != num {
			continue
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}
