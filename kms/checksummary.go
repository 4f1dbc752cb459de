package kms

import (
	"maps"
	"strconv"
	"sync"
	"time"
)

// Audit records of key checks.
//
// A mounted volume re-checks its key by unwrapping its data key again,
// every 5 s by default: 17,280 Decrypts a day per mount, which one record
// each would bury the rest of the audit log under. Decrypts marked with a
// KeyCheck are recorded per series, a series being one mount ID of one
// principal with one key, key version and encryption context:
//
//   - the first check of a series this store sees: a record ("first");
//   - a check whose result differs from the series' previous one
//     ("changed"): a record at once, so a revocation shows in the log when
//     it bites, and so does the key's return;
//   - the last check (KeyCheck.Last, made as the mount ends): "last";
//   - every other check (the same result as the one before: routine
//     successes, or the same refusal again while a mount waits for its
//     key) is counted in memory and written as a "summary" record with
//     the result, the count, and the time of the first and of the last
//     check it covers: by the first check one summary interval after the
//     series' previous record, before any other record of the series,
//     when the series has made no check for a whole interval, and when the
//     store is closed.
//
// Every check is thus accounted for: the Checks of a series' records add
// up to the checks made. The summarised checks are the only thing a crash
// of the process can lose (at most one interval's worth per series). A
// caller that marks a Decrypt gains nothing: it is authorized and answered
// like any other, its first refusal is a record of its own, and the ones
// that repeat it are counted with their time span.
//
// Series live in the memory of the process whose store recorded the
// check (the mount daemon for the local KMS, `encvol kms serve` for a
// remote one), at most maxCheckSeries of them; beyond that, checks are
// recorded one by one ("check").
type checkSummaries struct {
	interval time.Duration

	mu      sync.Mutex
	series  map[string]*checkSeries // GUARDED_BY(mu)
	sweeper chan struct{}           // closed to stop the sweeper; nil until one runs; GUARDED_BY(mu)
	done    chan struct{}           // closed when the sweeper has stopped
	closed  bool                    // the store is closing: nothing is counted any more; GUARDED_BY(mu)
	// unwritten holds summaries whose write failed, as they were taken:
	// written again first, by the next sweep.
	unwritten []*AuditRecord // GUARDED_BY(mu)
}

const maxCheckSeries = 100_000

// checkSeries is what the store remembers of one mount's checks.
type checkSeries struct {
	principal, mount, keyID string
	version                 int
	encCtx                  map[string]string

	lastResult string    // result code of the previous check
	lastMsg    string    // and its message
	lastCheck  time.Time // when the previous check was made
	written    time.Time // when the series' previous record was written
	pending    int       // routine checks not yet in a record
	from, to   time.Time // first and last of them
}

// checkUndo is what restore needs to put back when the records of one
// check could not be written.
type checkUndo struct {
	key        string
	cs         *checkSeries
	isNew      bool
	prevResult string
	prevMsg    string
	pending    int
	from, to   time.Time
}

func newCheckSummaries(interval time.Duration) *checkSummaries {
	if interval <= 0 {
		interval = DefaultKeyCheckSummaryInterval
	}
	return &checkSummaries{interval: interval, series: map[string]*checkSeries{}}
}

// seriesKey separates series by everything a summary record states
// once for all the checks it counts.
func seriesKey(principal, mount, keyID string, version int, ctxEnc []byte) string {
	return principal + "\x00" + mount + "\x00" + keyID + "\x00" + strconv.Itoa(version) + "\x00" + string(ctxEnc)
}

// note accounts for one check and returns the records to write now (in
// order), with what to undo if they cannot be written. start reports that
// a sweeper should be started.
func (c *checkSummaries) note(principal string, chk KeyCheck, info opInfo, encCtx map[string]string, res, msg string, now time.Time) (recs []*AuditRecord, undo checkUndo, start bool) {
	event := func(ev string) *AuditRecord {
		r := &AuditRecord{Time: now, Principal: principal, Operation: OpDecrypt, KeyID: info.keyID, KeyVersion: info.version,
			Result: res, Message: msg, KeyCheck: &AuditKeyCheck{Mount: chk.Mount, Event: ev, Checks: 1}}
		if len(encCtx) > 0 {
			r.EncryptionContext = encCtx
		}
		return r
	}
	ctxEnc, err := canonicalContext(encCtx)
	if err != nil {
		// Refused for its context: no series can be keyed on it.
		return []*AuditRecord{event(CheckSingle)}, checkUndo{}, false
	}
	key := seriesKey(principal, chk.Mount, info.keyID, info.version, ctxEnc)

	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.series[key]
	if c.closed {
		// A count now would never be written; the record fails to be
		// written too, and so does the call, as any call after Close.
		return []*AuditRecord{event(CheckSingle)}, checkUndo{}, false
	}
	if cs == nil {
		switch {
		case chk.Last:
			return []*AuditRecord{event(CheckLast)}, checkUndo{}, false
		case len(c.series) >= maxCheckSeries:
			return []*AuditRecord{event(CheckSingle)}, checkUndo{}, false
		}
		cs = &checkSeries{principal: principal, mount: chk.Mount, keyID: info.keyID, version: info.version,
			encCtx: maps.Clone(encCtx), lastResult: res, lastMsg: msg, lastCheck: now, written: now}
		c.series[key] = cs
		return []*AuditRecord{event(CheckFirst)}, checkUndo{key: key, cs: cs, isNew: true}, c.sweeper == nil
	}
	// undo.pending > 0 tells restore that a summary was taken.
	undo = checkUndo{key: key, cs: cs, prevResult: cs.lastResult, prevMsg: cs.lastMsg}
	var ev string
	switch {
	case chk.Last:
		ev = CheckLast
		delete(c.series, key)
	case res != cs.lastResult:
		ev = CheckChanged
	default:
		cs.pending++
		if cs.pending == 1 {
			cs.from = now
		}
		cs.to = now
		cs.lastCheck = now
		if now.Sub(cs.written) < c.interval {
			return nil, checkUndo{}, false
		}
		undo.pending, undo.from, undo.to = cs.pending, cs.from, cs.to
		return []*AuditRecord{c.takeSummary(cs, now)}, undo, false
	}
	undo.pending, undo.from, undo.to = cs.pending, cs.from, cs.to
	if cs.pending > 0 {
		recs = append(recs, c.takeSummary(cs, now))
	}
	cs.lastResult, cs.lastMsg, cs.lastCheck, cs.written = res, msg, now, now
	return append(recs, event(ev)), undo, false
}

// takeSummary returns the summary record of cs's pending checks and
// clears them; the caller holds mu.
func (c *checkSummaries) takeSummary(cs *checkSeries, now time.Time) *AuditRecord {
	r := &AuditRecord{Time: cs.to, Principal: cs.principal, Operation: OpDecrypt, KeyID: cs.keyID, KeyVersion: cs.version,
		EncryptionContext: cs.encCtx, Result: cs.lastResult, Message: cs.lastMsg,
		KeyCheck: &AuditKeyCheck{Mount: cs.mount, Event: CheckSummary, Checks: cs.pending, From: cs.from}}
	cs.pending, cs.from, cs.to = 0, time.Time{}, time.Time{}
	cs.written = now
	return r
}

// restore puts back what note changed when its records were not written:
// the series' previous result, and the checks a lost summary counted.
func (c *checkSummaries) restore(u checkUndo) {
	if u.cs == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.series[u.key]
	if u.isNew {
		if cur == u.cs && cur.pending == 0 {
			delete(c.series, u.key)
		}
		return
	}
	if cur == nil {
		cur = u.cs
		c.series[u.key] = cur
	}
	cur.lastResult, cur.lastMsg = u.prevResult, u.prevMsg
	if u.pending > 0 {
		// A summary was taken: its checks are pending again.
		cur.pending += u.pending
		if cur.from.IsZero() || u.from.Before(cur.from) {
			cur.from = u.from
		}
		if u.to.After(cur.to) {
			cur.to = u.to
		}
	}
}

// due returns the summaries that failed to be written before, and those
// of series that made no check for a whole interval (all pending
// summaries with all set), and forgets those series; put gives back the
// ones that could not be written.
func (c *checkSummaries) due(now time.Time, all bool) []*AuditRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	recs := c.unwritten
	c.unwritten = nil
	for key, cs := range c.series {
		idle := now.Sub(cs.lastCheck) >= c.interval
		if !idle && !all {
			continue
		}
		if cs.pending > 0 {
			recs = append(recs, c.takeSummary(cs, now))
		}
		if idle {
			delete(c.series, key)
		}
	}
	return recs
}

// put keeps summaries that could not be written, as they are, for the
// next flush: folded back into their series they could take another
// result's name.
func (c *checkSummaries) put(recs []*AuditRecord) {
	c.mu.Lock()
	c.unwritten = append(c.unwritten, recs...)
	c.mu.Unlock()
}

// auditCheck records a Decrypt marked as a key check; like auditData, it
// fails the operation when a record it had to write could not be.
func (s *Store) auditCheck(principal string, chk KeyCheck, info opInfo, encCtx map[string]string, opErr error) error {
	res, msg := resultOf(opErr)
	recs, undo, start := s.checks.note(principal, chk, info, encCtx, res, msg, s.now().UTC())
	if start {
		s.startSweeper()
	}
	if len(recs) == 0 {
		return opErr
	}
	if err := s.audit.append(false, recs...); err != nil {
		s.checks.restore(undo)
		if opErr != nil {
			return opErr
		}
		return internalErr(OpDecrypt+" refused: audit record could not be written", err)
	}
	return opErr
}

// flushChecks writes the summaries due now (all pending ones with all).
func (s *Store) flushChecks(all bool) error {
	recs := s.checks.due(s.now().UTC(), all)
	if len(recs) == 0 {
		return nil
	}
	if err := s.audit.append(false, recs...); err != nil {
		s.checks.put(recs)
		return err
	}
	return nil
}

// startSweeper starts the goroutine that writes the summaries of series
// that went quiet without a last check (a mount daemon that was killed,
// or whose KMS connection broke); it runs until the store is closed.
func (s *Store) startSweeper() {
	c := s.checks
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sweeper != nil || c.closed {
		return
	}
	c.sweeper, c.done = make(chan struct{}), make(chan struct{})
	period := min(max(c.interval/2, time.Second), time.Minute)
	go func(stop, done chan struct{}) {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = s.flushChecks(false) // retried at the next tick
			}
		}
	}(c.sweeper, c.done)
}

// closeChecks stops the sweeper and writes every pending summary.
func (s *Store) closeChecks() error {
	c := s.checks
	c.mu.Lock()
	stop, done := c.sweeper, c.done
	c.sweeper, c.closed = nil, true
	c.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	if err := s.flushChecks(true); err != nil {
		return internalErr("write key check summaries", err)
	}
	return nil
}
