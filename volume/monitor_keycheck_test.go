package volume

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/encvol/encvol/kmsclient"
)

func (f *fakeKMS) keyChecks() []kmsclient.KeyCheck {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.marks)
}

// TestMonitorMarksKeyChecks: every check of a mount carries the same mount
// ID, and stopping the monitor makes one last check, marked last, so the
// KMS can close the mount's key check records.
func TestMonitorMarksKeyChecks(t *testing.T) {
	fx := newMonitorFixture(t, 0, "")
	before := fx.kms.decryptCalls() // the unlock is no key check
	for range 3 {
		fx.mon.Check(context.Background())
	}
	fx.mon.Stop("unmounted")
	fx.mon.Stop("unmounted again")
	marks := fx.kms.keyChecks()
	if n := fx.kms.decryptCalls() - before; n != 4 || len(marks) != 4 {
		t.Fatalf("%d Decrypts, %d marked, after 3 checks and a stop; want 4 and 4", n, len(marks))
	}
	id := marks[0].Mount
	if !strings.HasPrefix(id, "mnt-") {
		t.Fatalf("mount ID %q", id)
	}
	for i, m := range marks {
		if m.Mount != id || m.Last != (i == 3) {
			t.Fatalf("mark %d = %+v; want mount %s, last only on the final one", i, m, id)
		}
	}
	if st := fx.mon.Status(); st.Checks != 4 {
		t.Fatalf("status counts %d checks, want 4", st.Checks)
	}
}

// TestMonitorStopWithoutChecks: a monitor that never checked the key
// (a mount that failed, or ended within one interval) makes no last check.
func TestMonitorStopWithoutChecks(t *testing.T) {
	fx := newMonitorFixture(t, 0, "")
	before := fx.kms.decryptCalls()
	fx.mon.Stop("mount failed")
	if n := fx.kms.decryptCalls() - before; n != 0 {
		t.Fatalf("stopping an unchecked monitor made %d Decrypts", n)
	}
	if other := newMonitorFixture(t, 0, ""); other.mon.mountID == fx.mon.mountID {
		t.Fatalf("two monitors share the mount ID %s", fx.mon.mountID)
	}
}
