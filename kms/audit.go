package kms

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"
)

// auditLog appends JSON lines to audit.jsonl. Each record is one write(2)
// on an O_APPEND descriptor, so records of concurrent processes never
// interleave and a record is in the file (surviving a crash of this
// process) before the operation returns. State changes are fsync'd before
// returning; data-key records are fsync'd within the flush interval (or
// before returning with Options.AuditSync), because an fsync per Decrypt
// would cap a mount's key checks at the disk's sync rate.
type auditLog struct {
	mu       sync.Mutex
	f        *os.File
	syncAll  bool
	interval time.Duration
	dirty    bool
	timer    *time.Timer
	closed   bool
	syncing  sync.WaitGroup // background fsyncs in flight
}

func openAuditLog(path string, syncAll bool, interval time.Duration) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kms: open audit log: %w", err)
	}
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	return &auditLog{f: f, syncAll: syncAll, interval: interval}, nil
}

func (a *auditLog) append(rec *AuditRecord, durable bool) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	line = append(line, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("audit log closed")
	}
	if _, err := a.f.Write(line); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	if durable || a.syncAll {
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("sync audit log: %w", err)
		}
		a.dirty = false
		return nil
	}
	if !a.dirty {
		a.dirty = true
		a.timer = time.AfterFunc(a.interval, a.flush)
	}
	return nil
}

func (a *auditLog) flush() {
	a.mu.Lock()
	if !a.dirty || a.closed {
		a.mu.Unlock()
		return
	}
	a.dirty = false
	a.syncing.Add(1)
	a.mu.Unlock()
	// Sync outside mu so appends are not held up by the disk; a failed
	// background sync is retried by the next durable record or Close,
	// which report the error.
	a.f.Sync()
	a.syncing.Done()
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	a.syncing.Wait()
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kms: close audit log: %w", err)
	}
	return nil
}

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
	if err := s.audit.append(rec, true); err != nil && opErr == nil {
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
	_ = s.audit.append(&AuditRecord{Time: s.now().UTC(), Principal: "encvol-kms", Operation: op, KeyID: keyID, KeyVersion: version, Result: "ok", Message: msg}, true)
}

// auditData records a data-key operation. A data key is never handed out
// without its audit record: if the record fails, so does the operation.
func (s *Store) auditData(principal, op string, info opInfo, encCtx map[string]string, opErr error) error {
	res, msg := resultOf(opErr)
	rec := &AuditRecord{Time: s.now().UTC(), Principal: principal, Operation: op, KeyID: info.keyID,
		KeyVersion: info.version, Result: res, Message: msg}
	if len(encCtx) > 0 {
		rec.EncryptionContext = maps.Clone(encCtx)
	}
	if err := s.audit.append(rec, false); err != nil {
		if opErr != nil {
			return opErr
		}
		return internalErr(op+" refused: audit record could not be written", err)
	}
	return opErr
}

// Audit reads the audit log back, oldest first, keeping records that match
// filter. A KeyRef alias is resolved to the key it names now; a key ID or
// key ARN also matches records of keys that no longer exist. Lines that do
// not parse (a torn final line after power loss) are skipped.
func (s *Store) Audit(ctx context.Context, filter AuditFilter) ([]AuditRecord, error) {
	keyID := ""
	if filter.KeyRef != "" {
		id, alias, err := s.parseRef(filter.KeyRef)
		if err != nil {
			return nil, err
		}
		if alias != "" {
			err := s.read(ctx, func(st *state) error {
				k, err := s.resolve(st, alias)
				if err != nil {
					return err
				}
				id = k.ID
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		keyID = id
	}
	f, err := os.Open(s.path(auditFile))
	if err != nil {
		return nil, internalErr("open audit log", err)
	}
	defer f.Close()
	var out []AuditRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if err := ctx.Err(); err != nil {
			return nil, newErr(CodeInternal, "request cancelled: %v", err)
		}
		var r AuditRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if (keyID != "" && r.KeyID != keyID) ||
			(filter.Principal != "" && r.Principal != filter.Principal) ||
			(filter.Operation != "" && r.Operation != filter.Operation) ||
			(!filter.Since.IsZero() && r.Time.Before(filter.Since)) {
			continue
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, internalErr("read audit log", err)
	}
	return out, nil
}
