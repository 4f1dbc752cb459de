package kms

import (
	"strings"
	"testing"
)

// TestLegacyAliasesMigrate: a store written when aliases were global and
// one service key served every principal keeps its aliases (each now its
// key owner's) and hands the old service key to the local principal only.
func TestLegacyAliasesMigrate(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	team := mustKey(t, s, "alice")
	if err := s.CreateAlias(bg, "alice", "alias/team", team.KeyID); err != nil {
		t.Fatal(err)
	}
	svc, err := s.ServiceKey(bg, LocalPrincipal)
	if err != nil {
		t.Fatal(err)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-old"}
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, ServiceKeyAlias, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	// Write the state back in the old layout.
	if err := s.write(bg, func(st *state, _ *storeLock) error {
		for key, a := range st.Aliases {
			_, name, _ := splitAliasKey(key)
			delete(st.Aliases, key)
			st.Aliases[name] = a
		}
		st.Keys[svc.KeyID].ServiceFor = ""
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	old := openTest(t, dir, nil)
	if d, err := old.DescribeKey(bg, "alice", "alias/team"); err != nil || d.KeyID != team.KeyID {
		t.Fatalf("alice's legacy alias: %+v %v", d, err)
	}
	if d, err := old.DescribeKey(bg, LocalPrincipal, ServiceKeyAlias); err != nil || d.KeyID != svc.KeyID {
		t.Fatalf("local's legacy service key alias: %+v %v", d, err)
	}
	if _, _, err := old.Decrypt(bg, LocalPrincipal, blob, ectx, ""); err != nil {
		t.Fatalf("local decrypting under the legacy service key: %v", err)
	}
	_, _, err = old.Decrypt(bg, "bob", blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)
	if bobs, err := old.ServiceKey(bg, "bob"); err != nil || bobs.KeyID == svc.KeyID {
		t.Fatalf("bob's service key after migration: %+v %v", bobs, err)
	}
}

// TestAuditResolvesPrincipalAliases: the store's operator reads the audit
// log of a principal's key by that principal's alias when no other
// principal has one of the same name; an ambiguous name asks for the key.
func TestAuditResolvesPrincipalAliases(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	a, b := mustKey(t, s, "alice"), mustKey(t, s, "bob")
	for p, k := range map[string]KeyMetadata{"alice": a, "bob": b} {
		if err := s.CreateAlias(bg, p, "alias/team", k.KeyID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateAlias(bg, "alice", "alias/only-alice", a.KeyID); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Audit(bg, AuditFilter{KeyRef: "alias/only-alice"})
	if err != nil || len(recs) == 0 {
		t.Fatalf("audit by alice's alias: %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.KeyID != a.KeyID {
			t.Fatalf("audit by alice's alias returned a record of %s", r.KeyID)
		}
	}
	if _, err := s.Audit(bg, AuditFilter{KeyRef: "alias/team"}); err == nil || !strings.Contains(err.Error(), "several principals") {
		t.Fatalf("audit by an alias two principals have: %v", err)
	}
}
