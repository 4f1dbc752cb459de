package kms

import (
	"testing"
	"time"
)

// TestForgetSealKey: without the seal key a store unseals nothing, yet
// CheckKeyAccess still sees another process disable the key, and a due
// automatic rotation (which needs the seal key) does not stop it.
// RestoreSealKey brings decryption back.
func TestForgetSealKey(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	s := openTest(t, dir, clk)
	admin := openTest(t, dir, clk)
	md := mustKey(t, s, LocalPrincipal)
	if err := s.EnableKeyRotation(bg, LocalPrincipal, md.KeyID, MinRotationPeriodDays); err != nil {
		t.Fatal(err)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-1"}
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	s.ForgetSealKey()
	if _, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, ""); err == nil {
		t.Fatal("Decrypt works without the seal key")
	}
	if _, _, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx); err == nil {
		t.Fatal("GenerateDataKey works without the seal key")
	}
	chk := &KeyCheck{Mount: "mnt-test"}
	if _, err := s.CheckKeyAccess(bg, LocalPrincipal, blob, ectx, md.KeyID, chk); err != nil {
		t.Fatalf("CheckKeyAccess: %v", err)
	}
	clk.Advance(time.Duration(MinRotationPeriodDays+1) * 24 * time.Hour)
	if _, err := s.CheckKeyAccess(bg, LocalPrincipal, blob, ectx, md.KeyID, chk); err != nil {
		t.Fatalf("CheckKeyAccess with a rotation due: %v", err)
	}
	if err := admin.DisableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	_, err = s.CheckKeyAccess(bg, LocalPrincipal, blob, ectx, md.KeyID, chk)
	wantCode(t, err, CodeDisabled)
	if err := admin.EnableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreSealKey(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, ""); err != nil {
		t.Fatalf("Decrypt after RestoreSealKey: %v", err)
	}
}
