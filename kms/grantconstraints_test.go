package kms

import "testing"

// TestGrantConstraintsSpareContextFreeOps: as in AWS, a constrained grant
// may list DescribeKey, and the constraint does not apply to it.
func TestGrantConstraintsSpareContextFreeOps(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, "alice")
	ctx := map[string]string{"vol": "1"}
	_, blob, _, err := s.GenerateDataKey(bg, "alice", md.KeyID, 32, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bob",
		Operations: []string{OpDecrypt, OpDescribeKey}, Constraints: &GrantConstraints{EncryptionContextSubset: ctx}}); err != nil {
		t.Fatalf("constrained grant with DescribeKey: %v", err)
	}
	if _, err := s.DescribeKey(bg, "bob", md.KeyID); err != nil {
		t.Fatalf("DescribeKey under a constrained grant: %v", err)
	}
	_, _, err = s.Decrypt(bg, "bob", blob, map[string]string{"vol": "2"}, "")
	wantCode(t, err, CodeAccessDenied)
}

// TestEmptyConstraintMapIsAbsent: Terraform's provider sends the
// constraint it was not given as an empty map next to the one it was
// given; an empty EncryptionContextEquals must not turn into "the context
// must be empty".
func TestEmptyConstraintMapIsAbsent(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, "alice")
	ctx := map[string]string{"vol": "1", "other": "x"}
	if _, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpGenerateDataKey},
		Constraints: &GrantConstraints{EncryptionContextEquals: map[string]string{}, EncryptionContextSubset: map[string]string{"vol": "1"}}}); err != nil {
		t.Fatal(err)
	}
	for _, reopen := range []bool{false, true} {
		if reopen {
			s = openTest(t, s.dir, nil)
		}
		pt, _, _, err := s.GenerateDataKey(bg, "bob", md.KeyID, 32, ctx)
		if err != nil {
			t.Fatalf("GenerateDataKey under a subset constraint (reopened %v): %v", reopen, err)
		}
		clear(pt)
		_, _, _, err = s.GenerateDataKey(bg, "bob", md.KeyID, 32, map[string]string{"vol": "2"})
		wantCode(t, err, CodeAccessDenied)
	}
	gs, err := s.ListGrants(bg, "alice", md.KeyID)
	if err != nil || len(gs) != 1 || gs[0].Constraints == nil || gs[0].Constraints.EncryptionContextEquals != nil {
		t.Fatalf("ListGrants = %+v, %v; want the subset constraint only", gs, err)
	}
}
