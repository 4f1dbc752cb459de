package volume

import (
	"bytes"
	"context"
	"maps"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// TestMonitorFollow: after Follow the monitor checks the new key through
// the new client only: the old key's state no longer touches the gate, the
// new key's does; a stopped monitor refuses to follow.
func TestMonitorFollow(t *testing.T) {
	fx := newMonitorFixture(t, time.Minute, "")
	ctx := context.Background()
	h, _, _ := fx.mon.watched()
	nh := *h
	nh.KMS = "next" // the fake knows one key ARN: the client tells the two apart
	fx.kms.mu.Lock()
	next := &fakeKMS{dk: bytes.Clone(fx.kms.dk), blob: bytes.Clone(fx.kms.blob), encCtx: maps.Clone(fx.kms.encCtx)}
	fx.kms.mu.Unlock()
	// Sign nh as a rekey does, so that a reopening gate verifies it.
	dk, err := keywrap.NewKey(bytes.Clone(next.dk))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := keywrap.DeriveSubkeys(dk)
	dk.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = nh.Encode(sub.HeaderMAC)
	sub.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.mon.Follow(&nh, next, "next"); err != nil {
		t.Fatal(err)
	}
	if got, c, k := fx.mon.watched(); got.KMS != "next" || c != next || k != "next" {
		t.Fatalf("watched after Follow: %s %v %s", got.KMS, c, k)
	}

	old := fx.kms.decryptCalls()
	fx.kms.setErr(kmsErr(kmsclient.ErrDisabled, "DisabledException"))
	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 0)
	if fx.kms.decryptCalls() != old || next.decryptCalls() != 1 {
		t.Fatalf("checks went to the old client (%d calls) instead of the new one (%d)", fx.kms.decryptCalls()-old, next.decryptCalls())
	}

	next.setErr(kmsErr(kmsclient.ErrDisabled, "DisabledException"))
	fx.mon.Check(ctx)
	fx.expect(t, false, "Disabled", 1)
	next.setErr(nil)
	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 2)

	fx.mon.Stop("test")
	if err := fx.mon.Follow(h, fx.kms, "fake"); err == nil {
		t.Fatal("a stopped monitor followed a rekey")
	}
}
