package kms

import (
	"strings"
	"testing"
)

func openAs(t *testing.T, dir, region, account string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Region: region, Account: account})
	if err != nil {
		t.Fatalf("Open(%s, %s/%s): %v", dir, region, account, err)
	}
	return s
}

// TestIdentityInARNs: the configured region and account appear in key,
// alias and principal ARNs and in the error messages that name them.
func TestIdentityInARNs(t *testing.T) {
	s := openAs(t, t.TempDir(), "eu-west-1", "111122223333")
	defer s.Close()
	md := mustKey(t, s, "alice")
	if want := "arn:aws:kms:eu-west-1:111122223333:key/" + md.KeyID; md.Arn != want || md.AWSAccountID != "111122223333" {
		t.Fatalf("ARN %s, account %s; want %s", md.Arn, md.AWSAccountID, want)
	}
	if err := s.CreateAlias(bg, "alice", "alias/ident", md.KeyID); err != nil {
		t.Fatal(err)
	}
	as, err := s.ListAliases(bg, "alice", md.KeyID)
	if err != nil || len(as) != 1 || as[0].AliasArn != "arn:aws:kms:eu-west-1:111122223333:alias/ident" {
		t.Fatalf("ListAliases = %+v, %v", as, err)
	}
	err = s.DisableKey(bg, "bob", md.Arn)
	wantCode(t, err, CodeAccessDenied)
	for _, want := range []string{"arn:aws:iam::111122223333:user/bob", "kms:DisableKey", md.Arn} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("AccessDenied %q does not name %s", err, want)
		}
	}
	if err := s.DisableKey(bg, "alice", md.Arn); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = s.GenerateDataKey(bg, "alice", "alias/ident", 32, nil)
	wantCode(t, err, CodeDisabled)
	if !strings.Contains(err.Error(), md.Arn) {
		t.Errorf("DisabledException %q does not name %s", err, md.Arn)
	}
	_, err = s.DescribeKey(bg, "alice", "arn:aws:kms:us-east-1:111122223333:key/"+md.KeyID)
	wantCode(t, err, CodeNotFound)
}

// TestARNsOfEarlierIdentitiesResolve: a volume header keeps the key ARN it
// was created with; reopening the store under another region or account
// must not strand it, in either direction.
func TestARNsOfEarlierIdentitiesResolve(t *testing.T) {
	dir := t.TempDir()
	local := openAs(t, dir, "", "")
	old := mustKey(t, local, LocalPrincipal)
	_, blob, oldARN, err := local.GenerateDataKey(bg, LocalPrincipal, old.KeyID, 32, map[string]string{"vol": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(oldARN, "arn:aws:kms:local:000000000000:key/") {
		t.Fatalf("default identity ARN %s", oldARN)
	}
	local.Close()

	served := openAs(t, dir, "us-east-1", "111122223333")
	pt, arn, err := served.Decrypt(bg, LocalPrincipal, blob, map[string]string{"vol": "1"}, oldARN)
	if err != nil {
		t.Fatalf("Decrypt naming the ARN of the default identity: %v", err)
	}
	clear(pt)
	if arn != "arn:aws:kms:us-east-1:111122223333:key/"+old.KeyID {
		t.Fatalf("Decrypt answers ARN %s, want the current identity's", arn)
	}
	newKey := mustKey(t, served, LocalPrincipal)
	_, err = served.DescribeKey(bg, LocalPrincipal, "arn:aws:kms:eu-north-1:111122223333:key/"+old.KeyID)
	wantCode(t, err, CodeNotFound)
	served.Close()

	for _, id := range [][2]string{{"", ""}, {"ap-south-1", "444455556666"}} {
		s := openAs(t, dir, id[0], id[1])
		if _, err := s.DescribeKey(bg, LocalPrincipal, newKey.Arn); err != nil {
			t.Errorf("opened as %v: ARN %s of an earlier identity: %v", id, newKey.Arn, err)
		}
		s.Close()
	}
}

func TestOpenRefusesBadIdentity(t *testing.T) {
	for _, opt := range []Options{{Region: "US East"}, {Region: "a:b"}, {Account: "1234"}, {Account: "11112222333x"}} {
		if s, err := Open(t.TempDir(), opt); err == nil {
			s.Close()
			t.Errorf("Open with %+v succeeded", opt)
		}
	}
}

// TestPrincipalARNs: grants take a principal as a name or an IAM user ARN
// and return it as an ARN; ARNs that name no principal of this KMS are
// refused with InvalidArnException.
func TestPrincipalARNs(t *testing.T) {
	s := openAs(t, t.TempDir(), "us-east-1", "111122223333")
	defer s.Close()
	md := mustKey(t, s, "alice")
	ctx := map[string]string{"vol": "1"}
	_, blob, _, err := s.GenerateDataKey(bg, "alice", md.KeyID, 32, ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "arn:aws:iam::111122223333:user/bob",
		RetiringPrincipal: "carol", Operations: []string{OpDecrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if pt, _, err := s.Decrypt(bg, "bob", blob, ctx, ""); err != nil {
		t.Fatalf("grantee named by ARN cannot decrypt: %v", err)
	} else {
		clear(pt)
	}
	for _, f := range []string{"bob", "arn:aws:iam::111122223333:user/bob"} {
		gs, err := s.ListGrantsFiltered(bg, "alice", md.KeyID, GrantFilter{GranteePrincipal: f})
		if err != nil || len(gs) != 1 || gs[0].GrantID != id || gs[0].GranteePrincipal != "arn:aws:iam::111122223333:user/bob" ||
			gs[0].RetiringPrincipal != "arn:aws:iam::111122223333:user/carol" || gs[0].IssuingPrincipal != "arn:aws:iam::111122223333:user/alice" {
			t.Fatalf("ListGrants for %s = %+v, %v", f, gs, err)
		}
	}
	if gs, err := s.ListGrantsFiltered(bg, "alice", md.KeyID, GrantFilter{GranteePrincipal: "carol"}); err != nil || len(gs) != 0 {
		t.Fatalf("ListGrants for carol = %+v, %v", gs, err)
	}
	for _, bad := range []string{
		"arn:aws:iam::999999999999:user/bob", "arn:aws:iam::111122223333:role/admin",
		"arn:aws:iam::111122223333:root", "arn:aws:s3:::bucket",
	} {
		_, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: bad, Operations: []string{OpDecrypt}})
		wantCode(t, err, CodeInvalidArn)
		if !strings.Contains(err.Error(), bad) {
			t.Errorf("refusal of %s does not name it: %v", bad, err)
		}
	}
}
