package kms

import (
	"strings"
	"testing"
)

// TestOwnerOnlyOperations: a principal that may use a key through a grant
// (directly or as a member of a group), or not at all, may not administer
// it: every state change, grant and alias operation is refused with
// AccessDeniedException naming the principal, the operation and the key.
// An administrator the key policy names may.
func TestOwnerOnlyOperations(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	s.SetGroups(map[string][]string{"team": {"carol"}})
	md := mustKey(t, s, "alice")
	other := mustKey(t, s, "alice")
	if err := s.CreateAlias(bg, "alice", "alias/team", md.KeyID); err != nil {
		t.Fatal(err)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-1"}
	for _, grantee := range []string{"bob", "group:team"} {
		if _, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: grantee,
			Operations: []string{OpDecrypt, OpDescribeKey}, Constraints: &GrantConstraints{EncryptionContextEquals: ectx}}); err != nil {
			t.Fatal(err)
		}
	}
	gid, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "dave", Operations: []string{OpDecrypt}})
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]func(p string) error{
		"EnableKey":           func(p string) error { return s.EnableKey(bg, p, md.KeyID) },
		"DisableKey":          func(p string) error { return s.DisableKey(bg, p, md.KeyID) },
		"ScheduleKeyDeletion": func(p string) error { _, err := s.ScheduleKeyDeletion(bg, p, md.KeyID, 7); return err },
		"CancelKeyDeletion":   func(p string) error { return s.CancelKeyDeletion(bg, p, md.KeyID) },
		"RotateKeyOnDemand":   func(p string) error { return s.RotateKeyOnDemand(bg, p, md.KeyID) },
		"EnableKeyRotation":   func(p string) error { return s.EnableKeyRotation(bg, p, md.KeyID, 0) },
		"DisableKeyRotation":  func(p string) error { return s.DisableKeyRotation(bg, p, md.KeyID) },
		"CreateGrant": func(p string) error {
			_, _, err := s.CreateGrant(bg, p, GrantInput{KeyRef: md.KeyID, GranteePrincipal: "eve", Operations: []string{OpDecrypt},
				Constraints: &GrantConstraints{EncryptionContextEquals: ectx}})
			return err
		},
		"RevokeGrant": func(p string) error { return s.RevokeGrant(bg, p, md.KeyID, gid) },
		"CreateAlias": func(p string) error { return s.CreateAlias(bg, p, "alias/"+p+"-on-alice", md.KeyID) },
	}
	// Aliases are per principal: alice's alias/team is not in the others'
	// names, so nobody can move or delete it (which would redirect every
	// volume created under it).
	for _, p := range []string{"bob", "carol", "mallory"} {
		wantCode(t, s.UpdateAlias(bg, p, "alias/team", mustKey(t, s, p).KeyID), CodeNotFound)
		wantCode(t, s.DeleteAlias(bg, p, "alias/team"), CodeNotFound)
	}
	if d, err := s.DescribeKey(bg, "alice", "alias/team"); err != nil || d.KeyID != md.KeyID {
		t.Fatalf("alice's alias/team after the others tried: %+v %v", d, err)
	}
	for op, f := range ops {
		for _, p := range []string{"bob", "carol", "mallory"} {
			err := f(p)
			wantCode(t, err, CodeAccessDenied)
			for _, want := range []string{"user/" + p, "kms:" + op, md.KeyID} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s by %s: %q does not name %s", op, p, err, want)
				}
			}
		}
	}
	// The owner's other key is untouched by all of that, and an admin
	// named by the key policy may do what the owner may.
	if err := s.PutKeyPolicy(bg, "alice", other.KeyID, "default", `{"Statement":[
		{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*","Resource":"*"},
		{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}]}`); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableKey(bg, "bob", other.KeyID); err != nil {
		t.Fatalf("policy admin disabling: %v", err)
	}
	if _, _, err := s.CreateGrant(bg, "bob", GrantInput{KeyRef: other.KeyID, GranteePrincipal: "eve", Operations: []string{OpDecrypt}}); err != nil {
		t.Fatalf("policy admin granting: %v", err)
	}
}

// TestServiceKeyCannotBeShared: no grant on the service key, not even by
// the local principal that administers everything.
func TestServiceKeyCannotBeShared(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	svc, err := s.ServiceKey(bg, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"alice", LocalPrincipal} {
		_, _, err := s.CreateGrant(bg, p, GrantInput{KeyRef: svc.KeyID, GranteePrincipal: "bob", Operations: []string{OpDecrypt}})
		wantCode(t, err, CodeUnsupportedOperation)
		if !strings.Contains(err.Error(), svc.KeyID) || !strings.Contains(err.Error(), "shared") {
			t.Fatalf("CreateGrant on the service key by %s: %v", p, err)
		}
	}
}
