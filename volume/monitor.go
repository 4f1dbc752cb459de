package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// Gate is what the monitor needs from the key gate; *fusefs.Gate
// implements it.
type Gate interface {
	Open(k *fusefs.Keys)
	Close(cause string)
	IsOpen() bool
}

var _ Gate = (*fusefs.Gate)(nil)

// MonitorOptions configures a key monitor.
type MonitorOptions struct {
	Backing    string
	Mountpoint string
	KMS        string // configured KMS name, for messages
	Header     *keywrap.Header
	Client     kmsclient.Client
	Gate       Gate
	// Interval between checks (default DefaultKeyCheckInterval).
	Interval time.Duration
	// Grace is how long an unreachable KMS is tolerated after the last
	// successful check before the gate closes.
	Grace time.Duration
	// OnKeyEvent is a shell command run (asynchronously) on every
	// transition, with ENCVOL_* variables describing it.
	OnKeyEvent string
	// ReadOnly says the mount is read-only. A read-write mount whose
	// access turns into read-only shares only (SharedReadOnly) closes its
	// gate: the kernel's mount cannot turn read-only under its users.
	ReadOnly bool
	Log      zerolog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Transition is one change of the key state or of the gate, as logged and
// passed to on_key_event.
type Transition struct {
	Volume     string        `json:"volume"`
	KeyID      string        `json:"key_id"`
	Mountpoint string        `json:"mountpoint"`
	OldState   string        `json:"old_state"`
	NewState   string        `json:"new_state"`
	GateOpen   bool          `json:"gate_open"`
	Cause      string        `json:"cause"`
	Latency    time.Duration `json:"latency"`
	Time       time.Time     `json:"time"`
}

// MonitorStatus is a snapshot of the monitor.
type MonitorStatus struct {
	KeyState    string    `json:"key_state"`
	GateOpen    bool      `json:"gate_open"`
	GateCause   string    `json:"gate_cause,omitempty"`
	LastCheck   time.Time `json:"last_check"`
	LastSuccess time.Time `json:"last_success"`
	LastResult  string    `json:"last_result"`
	LastLatency float64   `json:"last_latency_ms"`
	Checks      uint64    `json:"checks"`
	Transitions uint64    `json:"transitions"`
}

// Monitor re-checks a mounted volume's key every interval by unwrapping the
// wrapped data key again: that one call covers a disabled, deleted or
// pending-deletion key, a revoked grant and denied access alike. On a key
// problem it closes the gate at once and zeroizes the keys; when the KMS
// cannot be reached it keeps serving until Grace has passed since the last
// success. While closed it keeps checking, and reopens the gate with keys
// unwrapped afresh (MAC-verified) once the key is usable again.
type Monitor struct {
	opt MonitorOptions
	// mountID marks this mount's checks to the KMS (kmsclient.KeyCheck),
	// which then audits the ones that repeat a result as periodic summaries.
	mountID string

	// checkMu serialises key checks with Follow, so a check never applies
	// the answer about a key the monitor no longer watches.
	checkMu sync.Mutex

	// mu guards everything below and serialises gate transitions.
	mu sync.Mutex
	// header, client and kms are what the monitor checks: those of the
	// mount until a rekey makes it Follow another key.
	header      *keywrap.Header
	client      kmsclient.Client
	kms         string
	open        bool // the gate holds keys from us
	state       string
	gateCause   string
	lastCheck   time.Time
	lastSuccess time.Time
	lastResult  string
	lastLatency time.Duration
	checks      uint64
	transitions uint64
	stopped     bool
	// gateReported is the gate state as of the last transition.
	gateReported bool

	hooks sync.WaitGroup

	// warnedNoCheck: the log has said once that this volume's header has
	// no key-check blob, so each check carries the data key.
	warnedNoCheck atomic.Bool
}

// NewMonitor opens the gate with the keys of u (taking ownership of u) and
// returns the monitor that will keep them honest.
func NewMonitor(opt MonitorOptions, u *Unlocked) (*Monitor, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultKeyCheckInterval
	}
	if opt.Grace < 0 {
		opt.Grace = 0
	}
	if opt.Header == nil || opt.Client == nil || opt.Gate == nil {
		u.Close()
		return nil, fmt.Errorf("key monitor: header, client and gate are required")
	}
	keys, err := openKeys(u)
	if err != nil {
		return nil, err
	}
	now := opt.Now()
	m := &Monitor{opt: opt, mountID: kmsclient.NewMountID(), open: true, state: "Enabled", gateReported: true,
		lastCheck: now, lastSuccess: now, lastResult: "ok", header: opt.Header, client: opt.Client, kms: opt.KMS}
	opt.Gate.Open(keys)
	opt.Log.Info().Str("volume", opt.Header.VolumeID).Str("key_id", opt.Header.KeyID).Str("mountpoint", opt.Mountpoint).
		Str("key_check_mount", m.mountID).Dur("key_check_interval", opt.Interval).Msg("key monitor started")
	return m, nil
}

// Run checks the key every interval until ctx is done.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTimer(m.opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.Check(ctx)
		t.Reset(m.opt.Interval)
	}
}

// checkTimeout bounds one KMS round trip so a hanging KMS counts as
// unreachable instead of stalling the monitor.
func (m *Monitor) checkTimeout() time.Duration {
	return m.opt.Interval + 2*time.Second
}

// StateSharedReadOnly is the key state a read-write mount reports once its
// principal may only read the volume (its share became read-only).
const StateSharedReadOnly = "SharedReadOnly"

// Check performs one key check and applies its outcome to the gate.
func (m *Monitor) Check(ctx context.Context) {
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	h, client, kmsName := m.watched()
	m.mu.Lock()
	open := m.open
	m.mu.Unlock()
	cctx, cancel := context.WithTimeout(kmsclient.WithKeyCheck(ctx, kmsclient.KeyCheck{Mount: m.mountID}), m.checkTimeout())
	var acc kmsclient.DecryptAccess
	cctx = kmsclient.WithDecryptAccess(cctx, &acc)
	start := time.Now()
	var dk *keywrap.Key
	var err error
	if open && len(h.KeyCheck) > 0 {
		// The gate holds the keys: only access is in question, and the
		// key-check blob answers it without the data key on the wire.
		err = checkKey(cctx, client, h)
	} else {
		// A closed gate needs the data key to reopen (and a version 1
		// header has nothing else to decrypt).
		m.noteNoKeyCheck(h)
		dk, err = client.Decrypt(cctx, h.KeyID, h.WrappedDK, h.EncryptionContext)
	}
	latency := time.Since(start)
	cancel()
	if ctx.Err() != nil {
		// Shutting down: the result says nothing about the key.
		dk.Close()
		return
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		dk.Close()
		return
	}
	now := m.opt.Now()
	m.checks++
	m.lastCheck = now
	m.lastLatency = latency

	if err == nil && dk == nil && !m.open {
		// The gate closed while the check ran (a Follow, a stop): the
		// next check unwraps the data key to reopen it.
		return
	}
	if err == nil && !m.opt.ReadOnly && SharedReadOnly(acc, h.VolumeID) {
		dk.Close()
		m.lastSuccess = now
		m.lastResult = "shared read-only"
		cause := "the volume is now shared with this principal read-only, and this mount is read-write: unmount it and mount it again (it then mounts read-only)"
		m.closeGate(cause)
		m.setState(StateSharedReadOnly, false, cause, latency)
		return
	}
	if err == nil {
		m.lastSuccess = now
		m.lastResult = "ok"
		if m.open {
			dk.Close() // the keys in the gate are still the right ones
			m.setState("Enabled", true, "KMS answers again", latency)
			return
		}
		u, uerr := unlockWithDK(m.opt.Backing, h, dk)
		if uerr == nil {
			keys, kerr := openKeys(u)
			if kerr == nil {
				m.open = true
				m.gateCause = ""
				m.opt.Gate.Open(keys)
				m.setState("Enabled", true, "key usable again", latency)
				return
			}
			uerr = kerr
		}
		// The key unwraps but the header no longer verifies: treat the
		// volume as unusable rather than serve it with the wrong keys.
		m.lastResult = uerr.Error()
		m.setState("Error", false, uerr.Error(), latency)
		return
	}

	m.lastResult = err.Error()
	if errors.Is(err, errKeyCheckMismatch) {
		cause := fmt.Sprintf("KMS %q: %v", kmsName, err)
		m.closeGate(cause)
		m.setState("Error", false, cause, latency)
		return
	}
	st := KeyState(err)
	if isRevocation(err) {
		cause := fmt.Sprintf("key is %s (%s)", st, errSummary(err))
		m.closeGate(cause)
		m.setState(st, false, cause, latency)
		return
	}
	// Unreachable (or an error that says nothing about the key): serve
	// until the grace period since the last success runs out.
	cause := fmt.Sprintf("KMS %q unreachable (%s)", kmsName, errSummary(err))
	if m.open && now.Sub(m.lastSuccess) >= m.opt.Grace {
		cause = fmt.Sprintf("KMS %q unreachable for %s, longer than offline_grace %s (%s)",
			kmsName, now.Sub(m.lastSuccess).Round(time.Millisecond), m.opt.Grace, errSummary(err))
		m.closeGate(cause)
	}
	m.setState("Unreachable", m.open, cause, latency)
}

// closeGate closes the gate and zeroizes the keys; caller holds mu.
func (m *Monitor) closeGate(cause string) {
	if !m.open {
		return
	}
	// The gate closes the cipher and codec after the last in-flight call
	// and then zeroizes the content subkey (Keys.Release).
	m.opt.Gate.Close(cause)
	m.open = false
	m.gateCause = cause
}

// setState records a transition when the state or gate changed; caller
// holds mu.
func (m *Monitor) setState(state string, gateOpen bool, cause string, latency time.Duration) {
	old := m.state
	// A change of the gate alone (grace running out while the KMS stays
	// unreachable) is a transition too.
	if state == old && gateOpen == m.gateReported {
		return
	}
	m.state = state
	m.gateReported = gateOpen
	m.transitions++
	tr := Transition{
		Volume: m.header.VolumeID, KeyID: m.header.KeyID, Mountpoint: m.opt.Mountpoint,
		OldState: old, NewState: state, GateOpen: gateOpen, Cause: cause, Latency: latency, Time: m.opt.Now(),
	}
	ev := m.opt.Log.Info()
	if !gateOpen {
		ev = m.opt.Log.Warn()
	}
	ev.Str("event", "key_transition").Str("volume", tr.Volume).Str("key_id", tr.KeyID).
		Str("mountpoint", tr.Mountpoint).Str("old_state", old).Str("new_state", state).
		Str("gate", gateName(gateOpen)).Str("cause", cause).Float64("latency_ms", float64(latency.Microseconds())/1000).
		Uint64("transitions", m.transitions).Msg("key state changed")
	if m.opt.OnKeyEvent != "" {
		m.runHook(tr)
	}
}

// gateName is how logs, on_key_event and status name the gate's state.
func gateName(open bool) string {
	if open {
		return "open"
	}
	return "closed"
}

// runHook runs on_key_event without holding up the gate.
func (m *Monitor) runHook(tr Transition) {
	m.hooks.Add(1)
	go func() {
		defer m.hooks.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", m.opt.OnKeyEvent)
		cmd.Env = append(os.Environ(),
			"ENCVOL_VOLUME="+tr.Volume,
			"ENCVOL_KEY_ID="+tr.KeyID,
			"ENCVOL_OLD_STATE="+tr.OldState,
			"ENCVOL_NEW_STATE="+tr.NewState,
			"ENCVOL_GATE="+gateName(tr.GateOpen),
			"ENCVOL_CAUSE="+tr.Cause,
			"ENCVOL_MOUNTPOINT="+tr.Mountpoint,
			"ENCVOL_BACKING="+m.opt.Backing,
			"ENCVOL_TIME="+tr.Time.UTC().Format(time.RFC3339Nano),
		)
		out, err := cmd.CombinedOutput()
		if err != nil {
			m.opt.Log.Error().Err(err).Str("volume", tr.Volume).Str("key_id", tr.KeyID).
				Str("output", string(truncate(out, 512))).Msg("on_key_event command failed")
		}
	}()
}

// errSummary is the KMS's own code and message, without the key ARN the
// log line carries anyway.
func errSummary(err error) string {
	var ke *kmsclient.Error
	if errors.As(err, &ke) {
		switch {
		case ke.Code != "" && ke.Message != "":
			return ke.Code + ": " + ke.Message
		case ke.Code != "":
			return ke.Code
		case ke.Message != "":
			return ke.Message
		}
	}
	return err.Error()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// Status returns a snapshot.
func (m *Monitor) Status() MonitorStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MonitorStatus{
		KeyState: m.state, GateOpen: m.open, GateCause: m.gateCause,
		LastCheck: m.lastCheck, LastSuccess: m.lastSuccess, LastResult: m.lastResult,
		LastLatency: float64(m.lastLatency.Microseconds()) / 1000,
		Checks:      m.checks, Transitions: m.transitions,
	}
}

// lastCheckTimeout bounds the final check, which delays the end of an
// unmount when the KMS does not answer.
const lastCheckTimeout = 2 * time.Second

// Stop closes the gate for good and zeroizes the keys; later checks do
// nothing. A monitor that has checked the key makes one last check,
// marked so, which closes the mount's key check records in the KMS audit
// log (its result is only logged). It waits for running on_key_event
// commands.
func (m *Monitor) Stop(cause string) {
	m.mu.Lock()
	first := !m.stopped
	if first {
		m.stopped = true
		m.closeGate(cause)
	}
	checked := m.checks > 0
	m.mu.Unlock()
	if first && checked {
		m.finalCheck(cause)
	}
	m.hooks.Wait()
}

// finalCheck makes the last, marked key check of a stopped monitor.
func (m *Monitor) finalCheck(cause string) {
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	h, client, _ := m.watched()
	ctx, cancel := context.WithTimeout(context.Background(), lastCheckTimeout)
	defer cancel()
	ctx = kmsclient.WithKeyCheck(ctx, kmsclient.KeyCheck{Mount: m.mountID, Last: true})
	var err error
	if len(h.KeyCheck) > 0 {
		err = checkKey(ctx, client, h)
	} else {
		var dk *keywrap.Key
		dk, err = client.Decrypt(ctx, h.KeyID, h.WrappedDK, h.EncryptionContext)
		dk.Close() // the mount is over: the key is not needed
	}
	m.mu.Lock()
	m.checks++
	checks := m.checks
	m.mu.Unlock()
	ev := m.opt.Log.Info().Str("result", "ok")
	if err != nil {
		ev = m.opt.Log.Warn().Str("result", errSummary(err))
	}
	ev.Str("volume", h.VolumeID).Str("key_id", h.KeyID).Str("mountpoint", m.opt.Mountpoint).
		Str("key_check_mount", m.mountID).Uint64("checks", checks).Str("cause", cause).Msg("key monitor stopped")
}

// noteNoKeyCheck logs once that h, a version 1 header, makes every key
// check carry the data key, and what adds a key-check blob.
func (m *Monitor) noteNoKeyCheck(h *keywrap.Header) {
	if len(h.KeyCheck) > 0 || m.warnedNoCheck.Swap(true) {
		return
	}
	m.opt.Log.Warn().Str("volume", h.VolumeID).
		Msg("the volume header has no key-check blob (format version 1): every key check has the KMS send the data key; `encvol rekey VOLUME --key KEY` with the same key adds one")
}
