package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/kmsclient"
)

type monitorFixture struct {
	kms   *fakeKMS
	gate  *fusefs.Gate
	clock *fakeClock
	mon   *Monitor
}

func newMonitorFixture(t *testing.T, grace time.Duration, hook string) *monitorFixture {
	t.Helper()
	f, dir, _ := newTestVolume(t)
	u, err := Unlock(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	gate := fusefs.NewGate(OnRevokeEIO, zerolog.Nop())
	mon, err := NewMonitor(MonitorOptions{
		Backing: dir, Mountpoint: "/mnt/test", KMS: "fake", Header: u.Header, Client: f, Gate: gate,
		Interval: time.Second, Grace: grace, OnKeyEvent: hook, Log: zerolog.Nop(), Now: clock.Now,
	}, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Stop("test end") })
	return &monitorFixture{kms: f, gate: gate, clock: clock, mon: mon}
}

func (fx *monitorFixture) expect(t *testing.T, open bool, state string, transitions uint64) {
	t.Helper()
	st := fx.mon.Status()
	if fx.gate.IsOpen() != open || st.GateOpen != open || st.KeyState != state || st.Transitions != transitions {
		t.Fatalf("gate open %v (status %v), state %q, transitions %d; want open %v, state %q, transitions %d (last result %q)",
			fx.gate.IsOpen(), st.GateOpen, st.KeyState, st.Transitions, open, state, transitions, st.LastResult)
	}
	k, release, err := fx.gate.Acquire(context.Background())
	if open {
		if err != nil || k == nil || k.Content == nil || k.Names == nil {
			t.Fatalf("open gate: Acquire = %v, %v", k, err)
		}
		release()
	} else if !errors.Is(err, syscall.EIO) {
		t.Fatalf("closed gate: Acquire err = %v, want EIO", err)
	}
}

func TestMonitorRevocationAndReopen(t *testing.T) {
	fx := newMonitorFixture(t, time.Minute, "")
	ctx := context.Background()
	fx.expect(t, true, "Enabled", 0)

	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 0)

	for i, c := range []struct {
		kind  error
		code  string
		state string
	}{
		{kmsclient.ErrDisabled, "DisabledException", "Disabled"},
		{kmsclient.ErrPendingDeletion, "KMSInvalidStateException", "PendingDeletion"},
		{kmsclient.ErrNotFound, "NotFoundException", "NotFound"},
		{kmsclient.ErrAccessDenied, "AccessDeniedException", "AccessDenied"},
	} {
		fx.kms.setErr(kmsErr(c.kind, c.code))
		fx.mon.Check(ctx)
		fx.expect(t, false, c.state, uint64(2*i+1))
		if cause := fx.mon.Status().GateCause; !strings.Contains(cause, c.state) || !strings.Contains(cause, c.code) {
			t.Errorf("gate cause %q", cause)
		}
		// Still closed on the next check; no new transition.
		fx.mon.Check(ctx)
		fx.expect(t, false, c.state, uint64(2*i+1))

		fx.kms.setErr(nil)
		fx.mon.Check(ctx)
		fx.expect(t, true, "Enabled", uint64(2*i+2))
	}
}

func TestMonitorOfflineGrace(t *testing.T) {
	fx := newMonitorFixture(t, 2*time.Minute, "")
	ctx := context.Background()
	fx.kms.setErr(kmsErr(kmsclient.ErrUnreachable, ""))

	fx.clock.advance(time.Minute)
	fx.mon.Check(ctx)
	fx.expect(t, true, "Unreachable", 1) // within grace: keep serving

	fx.clock.advance(59 * time.Second)
	fx.mon.Check(ctx)
	fx.expect(t, true, "Unreachable", 1)

	fx.clock.advance(2 * time.Second) // 2m1s since the last success
	fx.mon.Check(ctx)
	fx.expect(t, false, "Unreachable", 2)
	if cause := fx.mon.Status().GateCause; !strings.Contains(cause, "offline_grace") {
		t.Errorf("cause %q", cause)
	}

	fx.kms.setErr(nil)
	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 3)

	// A success resets the grace clock.
	fx.clock.advance(10 * time.Minute)
	fx.mon.Check(ctx)
	fx.kms.setErr(kmsErr(kmsclient.ErrUnreachable, ""))
	fx.clock.advance(time.Minute)
	fx.mon.Check(ctx)
	fx.expect(t, true, "Unreachable", 4)

	// A revocation while unreachable closes at once.
	fx.kms.setErr(kmsErr(kmsclient.ErrDisabled, "DisabledException"))
	fx.mon.Check(ctx)
	fx.expect(t, false, "Disabled", 5)
	// Unreachable while closed: stays closed.
	fx.kms.setErr(kmsErr(kmsclient.ErrUnreachable, ""))
	fx.mon.Check(ctx)
	fx.expect(t, false, "Unreachable", 6)
}

func TestMonitorZeroGrace(t *testing.T) {
	fx := newMonitorFixture(t, 0, "")
	fx.kms.setErr(kmsErr(kmsclient.ErrUnreachable, ""))
	fx.mon.Check(context.Background())
	fx.expect(t, false, "Unreachable", 1)
}

func TestMonitorHook(t *testing.T) {
	out := filepath.Join(t.TempDir(), "events")
	hook := `echo "$ENCVOL_VOLUME|$ENCVOL_KEY_ID|$ENCVOL_OLD_STATE|$ENCVOL_NEW_STATE|$ENCVOL_GATE|$ENCVOL_MOUNTPOINT|$ENCVOL_CAUSE" >> ` + out
	fx := newMonitorFixture(t, time.Minute, hook)
	fx.kms.setErr(kmsErr(kmsclient.ErrDisabled, "DisabledException"))
	fx.mon.Check(context.Background())
	fx.mon.hooks.Wait() // hooks run in order only when waited for
	fx.kms.setErr(nil)
	fx.mon.Check(context.Background())
	fx.mon.Stop("test")
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("hook lines:\n%s", data)
	}
	vol := fx.mon.opt.Header.VolumeID
	if !strings.HasPrefix(lines[0], vol+"|"+fakeARN+"|Enabled|Disabled|closed|/mnt/test|key ") {
		t.Errorf("first event %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], vol+"|"+fakeARN+"|Disabled|Enabled|open|/mnt/test|") {
		t.Errorf("second event %q", lines[1])
	}
}

func TestMonitorRunLoop(t *testing.T) {
	f, dir, _ := newTestVolume(t)
	u, err := Unlock(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	gate := fusefs.NewGate(OnRevokeEIO, zerolog.Nop())
	mon, err := NewMonitor(MonitorOptions{Backing: dir, Header: u.Header, Client: f, Gate: gate, Interval: 50 * time.Millisecond, Grace: time.Minute, Log: zerolog.Nop()}, u)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { mon.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; mon.Stop("end") }()

	waitFor := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: not within 5 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitFor("first check", func() bool { return f.decryptCalls() >= 1 })
	f.setErr(kmsErr(kmsclient.ErrDisabled, "DisabledException"))
	closed := waitFor("gate closes", func() bool { return !gate.IsOpen() })
	f.setErr(nil)
	opened := waitFor("gate reopens", func() bool { return gate.IsOpen() })
	t.Logf("interval 50ms: closed after %v, reopened after %v", closed, opened)
	if closed > 50*time.Millisecond+time.Second {
		t.Errorf("closed after %v, want within interval + 1 s", closed)
	}
}
