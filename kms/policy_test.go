package kms

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const policyAccount = "111122223333"

func userARN(name string) string { return "arn:aws:iam::" + policyAccount + ":user/" + name }

// policyWith builds a document from statements given as JSON objects.
func policyWith(stmts ...string) string {
	return `{"Version":"2012-10-17","Id":"test","Statement":[` + strings.Join(stmts, ",") + `]}`
}

var (
	aliceAdmin = `{"Sid":"Admin","Effect":"Allow","Principal":{"AWS":"` + userARN("alice") + `"},"Action":"kms:*","Resource":"*"}`
	bobDecrypt = `{"Sid":"BobDecrypts","Effect":"Allow","Principal":{"AWS":["` + userARN("bob") + `"]},"Action":"kms:Decrypt","Resource":"*",
		"Condition":{"StringEquals":{"kms:EncryptionContext:vol":"v1"}}}`
)

func policyStore(t *testing.T) *Store {
	t.Helper()
	s := openAs(t, t.TempDir(), "us-east-1", policyAccount)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestKeyPolicyEnforced: a principal a policy names only for kms:Decrypt
// under a context condition decrypts with that context and nothing else;
// a principal named for kms:* administers the key.
func TestKeyPolicyEnforced(t *testing.T) {
	s := policyStore(t)
	doc := policyWith(aliceAdmin, bobDecrypt,
		`{"Effect":"Allow","Principal":{"AWS":"carol"},"Action":["kms:*"],"Resource":"*"}`)
	md, err := s.CreateKey(bg, "alice", CreateKeyInput{Description: "with policy", Policy: doc})
	if err != nil {
		t.Fatalf("CreateKey with a policy: %v", err)
	}
	v1, v2 := map[string]string{"vol": "v1"}, map[string]string{"vol": "v2"}
	_, blob1, _, err := s.GenerateDataKey(bg, "alice", md.KeyID, 32, v1)
	if err != nil {
		t.Fatal(err)
	}
	_, blob2, _, err := s.GenerateDataKey(bg, "alice", md.KeyID, 32, v2)
	if err != nil {
		t.Fatal(err)
	}
	if pt, _, err := s.Decrypt(bg, "bob", blob1, v1, ""); err != nil {
		t.Fatalf("bob's Decrypt under the policy's condition: %v", err)
	} else {
		clear(pt)
	}
	_, _, err = s.Decrypt(bg, "bob", blob2, v2, "")
	wantCode(t, err, CodeAccessDenied)
	_, _, _, err = s.GenerateDataKey(bg, "bob", md.KeyID, 32, v1)
	wantCode(t, err, CodeAccessDenied)
	_, err = s.DescribeKey(bg, "bob", md.KeyID)
	wantCode(t, err, CodeAccessDenied)
	_, err = s.GetKeyPolicy(bg, "bob", md.KeyID, "")
	wantCode(t, err, CodeAccessDenied)

	err = s.DisableKey(bg, "bob", md.KeyID)
	wantCode(t, err, CodeAccessDenied)
	for _, want := range []string{userARN("bob"), "kms:DisableKey", md.Arn} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %s", err, want)
		}
	}
	if keys, _ := s.ListKeys(bg, "bob"); len(keys) != 1 {
		t.Errorf("ListKeys for a principal the policy names = %v", keys)
	}
	if err := s.DisableKey(bg, "carol", md.KeyID); err != nil {
		t.Fatalf("DisableKey by a kms:* principal of the policy: %v", err)
	}
	if err := s.EnableKey(bg, "carol", md.KeyID); err != nil {
		t.Fatal(err)
	}

	got, err := s.GetKeyPolicy(bg, "alice", md.KeyID, PolicyName)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	if got != want.String() {
		t.Fatalf("GetKeyPolicy = %s, want the document as put: %s", got, want.String())
	}
	if _, err := s.GetKeyPolicy(bg, "alice", md.KeyID, "other"); ErrorCode(err) != CodeNotFound {
		t.Fatalf("GetKeyPolicy of policy name other: %v", err)
	}
	if names, err := s.ListKeyPolicies(bg, "alice", md.KeyID); err != nil || len(names) != 1 || names[0] != PolicyName {
		t.Fatalf("ListKeyPolicies = %v, %v", names, err)
	}

	// Putting a policy without carol takes her administration away.
	if err := s.PutKeyPolicy(bg, "carol", md.KeyID, "", policyWith(aliceAdmin)); err != nil {
		t.Fatalf("PutKeyPolicy by carol: %v", err)
	}
	wantCode(t, s.DisableKey(bg, "carol", md.KeyID), CodeAccessDenied)
	_, _, err = s.Decrypt(bg, "bob", blob1, v1, "")
	wantCode(t, err, CodeAccessDenied)
}

// TestKeyPolicyExactContext: ForAllValues:StringEquals on
// kms:EncryptionContextKeys forbids extra context keys.
func TestKeyPolicyExactContext(t *testing.T) {
	s := policyStore(t)
	md, err := s.CreateKey(bg, "alice", CreateKeyInput{Policy: policyWith(aliceAdmin,
		`{"Effect":"Allow","Principal":{"AWS":"`+userARN("bob")+`"},"Action":["kms:GenerateDataKey*","kms:Decrypt"],"Resource":"*",
		 "Condition":{"StringEquals":{"kms:EncryptionContext:vol":["v1","v2"]},"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["vol"]}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ctx map[string]string
		ok  bool
	}{
		{map[string]string{"vol": "v1"}, true},
		{map[string]string{"vol": "v2"}, true},
		{map[string]string{"vol": "v3"}, false},
		{map[string]string{"vol": "v1", "extra": "x"}, false},
		{nil, false},
	} {
		_, _, err := s.GenerateDataKeyWithoutPlaintext(bg, "bob", md.KeyID, 32, tc.ctx)
		if (err == nil) != tc.ok {
			t.Errorf("GenerateDataKeyWithoutPlaintext with %v: %v, want allowed=%v", tc.ctx, err, tc.ok)
		}
	}
}

// TestKeyPolicyRefusals: every document outside the subset is refused,
// naming the statement and the reason, and leaves the key's policy as it
// was.
func TestKeyPolicyRefusals(t *testing.T) {
	s := policyStore(t)
	md := mustKey(t, s, "alice")
	other := mustKey(t, s, "alice")
	before, err := s.GetKeyPolicy(bg, "alice", md.KeyID, "")
	if err != nil {
		t.Fatal(err)
	}
	stmt := func(body string) string {
		return `{"Sid":"S2","Effect":"Allow","Principal":{"AWS":"` + userARN("bob") + `"},` + body + `}`
	}
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"not JSON", `{"Statement":`, []string{"not valid JSON"}},
		{"deny", policyWith(aliceAdmin, `{"Sid":"S2","Effect":"Deny","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}`), []string{"statement 2", `"S2"`, "Deny"}},
		{"not action", policyWith(aliceAdmin, stmt(`"NotAction":"kms:Decrypt","Resource":"*"`)), []string{"statement 2", "NotAction"}},
		{"outside actions", policyWith(aliceAdmin, stmt(`"Action":["kms:Decrypt","kms:CreateGrant"],"Resource":"*"`)), []string{"statement 2", "kms:CreateGrant"}},
		{"everybody", policyWith(aliceAdmin, `{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`), []string{"statement 2", `"*"`}},
		{"account root", policyWith(aliceAdmin, `{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+policyAccount+`:root"},"Action":"kms:*","Resource":"*"}`), []string{"statement 2", ":root", "IAM"}},
		{"foreign account", policyWith(aliceAdmin, `{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:user/bob"},"Action":"kms:Decrypt","Resource":"*"}`), []string{"statement 2", "999999999999"}},
		{"service principal", policyWith(aliceAdmin, `{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"kms:Decrypt","Resource":"*"}`), []string{"statement 2", "Service"}},
		{"condition operator", policyWith(aliceAdmin, stmt(`"Action":"kms:Decrypt","Resource":"*","Condition":{"StringLike":{"kms:EncryptionContext:vol":"v*"}}`)), []string{"statement 2", "StringLike"}},
		{"condition key", policyWith(aliceAdmin, stmt(`"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"1"}}`)), []string{"statement 2", "kms:CallerAccount"}},
		{"condition on DescribeKey", policyWith(aliceAdmin, stmt(`"Action":["kms:DescribeKey","kms:Decrypt"],"Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:vol":"v1"}}`)), []string{"statement 2", "kms:DescribeKey"}},
		{"condition on admin", policyWith(`{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:vol":"v1"}}}`), []string{"statement 1", "Condition"}},
		{"other key", policyWith(aliceAdmin, stmt(`"Action":"kms:Decrypt","Resource":"`+other.Arn+`"`)), []string{"statement 2", other.Arn}},
		{"no resource", policyWith(aliceAdmin, stmt(`"Action":"kms:Decrypt"`)), []string{"statement 2", "Resource"}},
		{"owner left out", policyWith(`{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}`), []string{userARN("alice"), "owner"}},
		{"grant statement", policyWith(aliceAdmin, `{"Sid":"EncvolGrantabc","Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:Decrypt","Resource":"*"}`), []string{"EncvolGrantabc", "RevokeGrant"}},
		{"unknown element", policyWith(aliceAdmin, stmt(`"Action":"kms:Decrypt","Resource":"*","Extra":1`)), []string{"statement 2", "Extra"}},
		{"old version", `{"Version":"2011-01-01","Statement":[` + aliceAdmin + `]}`, []string{"Version"}},
	} {
		err := s.PutKeyPolicy(bg, "alice", md.KeyID, "", tc.doc)
		if ErrorCode(err) != CodeMalformedPolicy {
			t.Errorf("%s: PutKeyPolicy = %v, want %s", tc.name, err, CodeMalformedPolicy)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: refusal %q does not name %s", tc.name, err, w)
			}
		}
		if _, err := s.CreateKey(bg, "alice", CreateKeyInput{Policy: tc.doc}); ErrorCode(err) != CodeMalformedPolicy {
			t.Errorf("%s: CreateKey with the policy = %v", tc.name, err)
		}
	}
	after, err := s.GetKeyPolicy(bg, "alice", md.KeyID, "")
	if err != nil || after != before {
		t.Fatalf("refused policies changed the key's policy:\n%s\n%s (%v)", before, after, err)
	}
	if keys, _ := s.ListKeys(bg, "alice"); len(keys) != 2 {
		t.Fatalf("refused CreateKey calls left keys behind: %v", keys)
	}
	svc, err := s.ServiceKey(bg, "alice")
	if err != nil {
		t.Fatal(err)
	}
	err = s.PutKeyPolicy(bg, LocalPrincipal, svc.KeyID, "", policyWith(aliceAdmin))
	wantCode(t, err, CodeUnsupportedOperation)
}

type policyJSON struct {
	Statement []struct {
		Sid       string
		Principal map[string]string
		Action    any
		Condition map[string]map[string]any
	}
}

// TestEffectiveAccessDocument: without a put policy, GetKeyPolicy shows
// the owner and every grant, constraints as conditions.
func TestEffectiveAccessDocument(t *testing.T) {
	s := policyStore(t)
	md := mustKey(t, s, "alice")
	id, _, err := s.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bob",
		Operations: []string{OpDecrypt, OpDescribeKey}, Constraints: &GrantConstraints{EncryptionContextSubset: map[string]string{"vol": "v1"}}})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := s.GetKeyPolicy(bg, "alice", md.KeyID, "")
	if err != nil {
		t.Fatal(err)
	}
	var p policyJSON
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatalf("GetKeyPolicy is not JSON: %v\n%s", err, doc)
	}
	if len(p.Statement) != 3 {
		t.Fatalf("want owner, constrained and unconstrained grant statements:\n%s", doc)
	}
	if st := p.Statement[0]; st.Principal["AWS"] != userARN("alice") || st.Action != "kms:*" {
		t.Errorf("owner statement: %+v", st)
	}
	if st := p.Statement[1]; st.Sid != "EncvolGrant"+id || st.Principal["AWS"] != userARN("bob") ||
		st.Condition["StringEquals"]["kms:EncryptionContext:vol"] != "v1" {
		t.Errorf("grant statement: %+v", st)
	}
	if st := p.Statement[2]; st.Condition != nil || !strings.Contains(doc, `"kms:DescribeKey"`) {
		t.Errorf("DescribeKey statement: %+v", st)
	}
	// The owner statement is inside the subset and may be put back.
	if err := s.PutKeyPolicy(bg, "alice", md.KeyID, "", policyWith(aliceAdmin)); err != nil {
		t.Fatal(err)
	}
}
