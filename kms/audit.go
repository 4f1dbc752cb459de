package kms

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// auditLog appends JSON lines to audit.jsonl. Each call writes its
// records with one write(2) on an O_APPEND descriptor, so records of
// concurrent processes never interleave and a record is in the file
// (surviving a crash of this process) before the operation returns. State
// changes are fsync'd before returning; data-key records are fsync'd within
// the flush interval (or before returning with Options.AuditSync), because
// an fsync per Decrypt would cap a mount's key checks at the disk's sync
// rate.
//
// Appends of this process do not take a lock of their own around the
// write: the kernel already makes each O_APPEND write atomic, and a Go
// mutex held across a system call turns a busy server into a convoy (a
// waiter that has been handed the mutex first has to be scheduled, behind
// every other runnable goroutine). The write goes to the raw descriptor
// for the same reason: os.File serializes its writers with a lock too.
//
// The file is rotated by size (auditrotate.go); before each write an
// fstat tells whether that is due or was done by another process.
type auditLog struct {
	path    string // audit.jsonl
	maxSize int64
	keep    int
	now     func() time.Time

	// mu is held shared by appends and the background flush for as long as
	// they use fd, and exclusively by close and by rotation, which replace
	// or close it and therefore wait for them.
	mu       sync.RWMutex
	f        *os.File
	fd       int
	syncAll  bool
	interval time.Duration
	closed   bool      // set under mu held exclusively
	failedAt time.Time // last failed rotation; under mu held exclusively

	dirty   atomic.Bool // a record was written since the last background fsync was armed
	timerMu sync.Mutex  // guards timer; taken once per flush interval at most
	timer   *time.Timer
}

func openAuditLog(dir string, opt Options, now func() time.Time) (*auditLog, error) {
	a := &auditLog{
		path: filepath.Join(dir, auditFile), maxSize: opt.AuditMaxSize, keep: opt.AuditKeep, now: now,
		syncAll: opt.AuditSync, interval: opt.AuditFlushInterval,
	}
	if a.interval <= 0 {
		a.interval = 100 * time.Millisecond
	}
	if a.maxSize <= 0 {
		a.maxSize = DefaultAuditMaxSize
	}
	if a.maxSize < MinAuditMaxSize {
		return nil, fmt.Errorf("kms: audit log size limit %d bytes is below the minimum of %d", a.maxSize, MinAuditMaxSize)
	}
	if a.keep == 0 {
		a.keep = DefaultAuditKeep
	}
	f, err := openCurrentAudit(a.path, false)
	if err != nil {
		return nil, fmt.Errorf("kms: open audit log: %w", err)
	}
	a.setFile(f)
	return a, nil
}

// setFile makes f the file appends go to; the caller holds mu exclusively
// or owns a alone.
func (a *auditLog) setFile(f *os.File) {
	// Fd puts the descriptor into blocking mode, which a regular file is
	// in any case; f keeps it open until close.
	a.f, a.fd = f, int(f.Fd())
}

// writeAll writes line with as few write(2) calls as the kernel allows:
// one for a regular file unless the disk is full.
func (a *auditLog) writeAll(line []byte) error {
	for len(line) > 0 {
		n, err := unix.Write(a.fd, line)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		line = line[n:]
	}
	return nil
}

// append writes recs in order, in one write.
func (a *auditLog) append(durable bool, recs ...*AuditRecord) error {
	var lines []byte
	for _, rec := range recs {
		line, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encode audit record: %w", err)
		}
		lines = append(append(lines, line...), '\n')
	}
	a.mu.RLock()
	if !a.closed && a.turnDue() {
		a.mu.RUnlock()
		a.turn()
		a.mu.RLock()
	}
	defer a.mu.RUnlock()
	if a.closed {
		return errors.New("audit log closed")
	}
	if err := a.writeAll(lines); err != nil {
		return fmt.Errorf("write audit log %s: %w", a.f.Name(), err)
	}
	if durable || a.syncAll {
		// dirty stays as it is: records other goroutines wrote while this
		// fsync ran may not be covered by it, and their flush is armed.
		if err := unix.Fsync(a.fd); err != nil {
			return fmt.Errorf("sync audit log %s: %w", a.f.Name(), err)
		}
		return nil
	}
	if a.dirty.CompareAndSwap(false, true) {
		a.timerMu.Lock()
		a.timer = time.AfterFunc(a.interval, a.flush)
		a.timerMu.Unlock()
	}
	return nil
}

// flush fsyncs the records written since it was armed. It runs without
// blocking appends of this process; a failed background sync is retried
// by the next durable record or close, which report the error.
func (a *auditLog) flush() {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return
	}
	// Clear dirty before the fsync: a record written during it arms the
	// next flush rather than being assumed covered.
	if a.dirty.Swap(false) {
		_ = unix.Fsync(a.fd)
	}
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	a.timerMu.Lock()
	if a.timer != nil {
		a.timer.Stop()
	}
	a.timerMu.Unlock()
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kms: close audit log: %w", err)
	}
	return nil
}

// systemPrincipal names the store itself in records of what it did on its
// own (lazy events, audit log maintenance).
const systemPrincipal = "encvol-kms"

func resultOf(err error) (string, string) {
	if err == nil {
		return "ok", ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code, e.Message
	}
	return CodeInternal, err.Error()
}

// auditOp records an administrative operation durably and returns opErr,
// or an internal error if the record could not be written after the
// operation succeeded.
func (s *Store) auditOp(principal, op, keyID string, opErr error) error {
	res, msg := resultOf(opErr)
	rec := &AuditRecord{Time: s.now().UTC(), Principal: principal, Operation: op, KeyID: keyID, Result: res, Message: msg}
	if err := s.audit.append(true, rec); err != nil && opErr == nil {
		return internalErr(op+" succeeded but its audit record failed", err)
	}
	return opErr
}

// auditSystem records a lazy event the store carried out itself.
func (s *Store) auditSystem(op, keyID string, version int, msg string) {
	if s.audit == nil {
		return // Open's first state load, before the log is open
	}
	// Best effort: the state change is authoritative, and failing the
	// caller's unrelated request would not undo it.
	_ = s.audit.append(true, &AuditRecord{Time: s.now().UTC(), Principal: systemPrincipal, Operation: op, KeyID: keyID, KeyVersion: version, Result: "ok", Message: msg})
}

// auditData records a data-key operation. A data key is never handed out
// without its audit record: if the record fails, so does the operation.
func (s *Store) auditData(principal, op string, info opInfo, encCtx map[string]string, opErr error) error {
	res, msg := resultOf(opErr)
	rec := &AuditRecord{Time: s.now().UTC(), Principal: principal, Operation: op, KeyID: info.keyID,
		KeyVersion: info.version, Result: res, Message: msg}
	if len(encCtx) > 0 {
		// append encodes rec before it returns, so the caller's map is
		// not retained.
		rec.EncryptionContext = encCtx
	}
	if err := s.audit.append(false, rec); err != nil {
		if opErr != nil {
			return opErr
		}
		return internalErr(op+" refused: audit record could not be written", err)
	}
	return opErr
}
