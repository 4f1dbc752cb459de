package kms

import (
	"slices"
	"strings"
	"testing"
)

// aliceVolumeKey is a store with a key of alice's and the blob of a data
// key wrapped under it with volume vol-1's encryption context.
func aliceVolumeKey(t *testing.T) (*Store, KeyMetadata, map[string]string, []byte) {
	t.Helper()
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, "alice")
	ectx := map[string]string{"encvol:volume-id": "vol-1"}
	_, blob, _, err := s.GenerateDataKey(bg, "alice", md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	return s, md, ectx, blob
}

// TestGroupGrants: a grant to a group admits its members as they are when
// the request arrives; membership changes need no change of the grant.
// Grants to groups are listed with IAM group ARNs, and a group the store
// does not know is refused.
func TestGroupGrants(t *testing.T) {
	s, md, ectx, blob := aliceVolumeKey(t)
	grant := GrantInput{KeyRef: md.KeyID, GranteePrincipal: "group:team", Operations: []string{OpDecrypt, OpDescribeKey},
		Constraints: &GrantConstraints{EncryptionContextEquals: ectx}, Name: "share"}
	_, _, err := s.CreateGrant(bg, "alice", grant)
	wantCode(t, err, CodeNotFound)
	if !strings.Contains(err.Error(), "no groups") {
		t.Fatalf("grant to a group of a store without groups: %v", err)
	}

	s.SetGroups(map[string][]string{"team": {"bob", "carol"}, "ops": {"dave"}})
	_, _, err = s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "group:nobody", Operations: []string{OpDecrypt}})
	wantCode(t, err, CodeNotFound)
	if !strings.Contains(err.Error(), "ops, team") {
		t.Fatalf("unknown group: want the known ones named: %v", err)
	}
	id, _, err := s.CreateGrant(bg, "alice", grant)
	if err != nil {
		t.Fatal(err)
	}
	// The ARN form names the same group: the same grant again.
	grant.GranteePrincipal = "arn:aws:iam::" + DefaultAccount + ":group/team"
	if id2, _, err := s.CreateGrant(bg, "alice", grant); err != nil || id2 != id {
		t.Fatalf("grant by group ARN = %q, %v; want the existing %q", id2, err, id)
	}
	for _, p := range []string{"bob", "carol"} {
		if _, _, via, err := s.DecryptVia(bg, p, blob, ectx, "", nil); err != nil || !slices.Equal(via, []string{"share"}) {
			t.Fatalf("member %s: grants %v, %v; want admitted by grant share", p, via, err)
		}
		if keys, _ := s.ListKeys(bg, p); len(keys) != 1 {
			t.Fatalf("member %s does not see the key: %v", p, keys)
		}
	}
	_, _, err = s.Decrypt(bg, "dave", blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)
	// The grant's constraint binds members too.
	_, blob2, _, err := s.GenerateDataKey(bg, "alice", md.KeyID, 32, map[string]string{"encvol:volume-id": "vol-2"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Decrypt(bg, "bob", blob2, map[string]string{"encvol:volume-id": "vol-2"}, "")
	wantCode(t, err, CodeAccessDenied)

	// Membership changes apply to the next request.
	s.SetGroups(map[string][]string{"team": {"carol", "dave"}})
	_, _, err = s.Decrypt(bg, "bob", blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)
	if _, _, err := s.Decrypt(bg, "dave", blob, ectx, ""); err != nil {
		t.Fatalf("new member: %v", err)
	}

	gs, err := s.ListGrantsFiltered(bg, "alice", md.KeyID, GrantFilter{GranteePrincipal: "group:team"})
	if err != nil || len(gs) != 1 || gs[0].GranteePrincipal != "arn:aws:iam::"+DefaultAccount+":group/team" {
		t.Fatalf("ListGrants by group = %+v, %v", gs, err)
	}
	// Members may use the key, not administer it or pass it on.
	wantCode(t, s.DisableKey(bg, "dave", md.KeyID), CodeAccessDenied)
	_, _, err = s.CreateGrant(bg, "dave", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "eve", Operations: []string{OpDecrypt}})
	wantCode(t, err, CodeAccessDenied)
}

// TestDecryptVia: the owner and principals a key policy admits use the key
// without a grant (nil); a grantee hears every grant that admits the call,
// and an unnamed one as UnnamedGrant.
func TestDecryptVia(t *testing.T) {
	s, md, ectx, blob := aliceVolumeKey(t)
	if _, _, via, err := s.DecryptVia(bg, "alice", blob, ectx, "", nil); err != nil || via != nil {
		t.Fatalf("owner: %v, %v; want no grants", via, err)
	}
	for _, g := range []GrantInput{
		{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpDecrypt}, Name: "encvol-share:vol-1:read-only",
			Constraints: &GrantConstraints{EncryptionContextEquals: ectx}},
		{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpDecrypt}},
		{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpDescribeKey}, Name: "describe-only"},
	} {
		if _, _, err := s.CreateGrant(bg, "alice", g); err != nil {
			t.Fatal(err)
		}
	}
	_, _, via, err := s.DecryptVia(bg, "bob", blob, ectx, "", nil)
	if err != nil || !slices.Equal(via, []string{"encvol-share:vol-1:read-only", UnnamedGrant}) {
		t.Fatalf("grantee: %v, %v", via, err)
	}
}

func TestGrantsHeaderRoundTrip(t *testing.T) {
	in := []string{"encvol-share:vol-1:read-only", UnnamedGrant, "a,b c", "%2A"}
	if got := ParseGrants(FormatGrants(in)); !slices.Equal(got, in) {
		t.Fatalf("ParseGrants(FormatGrants(%q)) = %q", in, got)
	}
	if got := ParseGrants("%zz,"); !slices.Equal(got, []string{UnnamedGrant, UnnamedGrant}) {
		t.Fatalf("malformed elements: %q", got)
	}
}

// TestGrantsNameKnownPrincipals: once the store knows its principals (the
// server's principals file), a grant to a name nobody has is refused.
func TestGrantsNameKnownPrincipals(t *testing.T) {
	s, md, ectx, _ := aliceVolumeKey(t)
	in := GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bbo", Operations: []string{OpDecrypt},
		Constraints: &GrantConstraints{EncryptionContextEquals: ectx}}
	if _, _, err := s.CreateGrant(bg, "alice", in); err != nil {
		t.Fatalf("a store without a principal list accepts any name: %v", err)
	}
	s.SetIdentities([]string{"alice", "bob"}, nil)
	in.Name = "second"
	_, _, err := s.CreateGrant(bg, "alice", in)
	wantCode(t, err, CodeNotFound)
	if !strings.Contains(err.Error(), `no principal "bbo"`) {
		t.Fatalf("grant to an unknown principal: %v", err)
	}
	in.GranteePrincipal = "arn:aws:iam::" + DefaultAccount + ":user/bob"
	if _, _, err := s.CreateGrant(bg, "alice", in); err != nil {
		t.Fatalf("grant to a known principal: %v", err)
	}
}
