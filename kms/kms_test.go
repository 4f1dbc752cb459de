package kms

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for expiring deletions, rotations and
// imported material without waiting.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openTest(t testing.TB, dir string, clk *fakeClock) *Store {
	t.Helper()
	opt := Options{}
	if clk != nil {
		opt.Now = clk.Now
	}
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if ErrorCode(err) != code {
		t.Fatalf("error = %v (code %q), want code %s", err, ErrorCode(err), code)
	}
}

func mustKey(t *testing.T, s *Store, p string) KeyMetadata {
	t.Helper()
	md, err := s.CreateKey(context.Background(), p, CreateKeyInput{Description: "test key"})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return md
}

var bg = context.Background()

func TestOpenCreatesProtectedFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openTest(t, dir, nil)
	mustKey(t, s, LocalPrincipal)
	for name, want := range map[string]os.FileMode{".": 0o700, rootKeyFile: 0o600, stateFile: 0o600, auditFile: 0o600, lockFileName: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, rootKeyFile)); fi.Size() != 32 {
		t.Errorf("root key is %d bytes", fi.Size())
	}
}

func TestWrongRootKeyIsDetected(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	mustKey(t, s, LocalPrincipal)
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, rootKeyFile), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("Open with wrong root key: %v", err)
	}
	os.Chmod(filepath.Join(dir, rootKeyFile), 0o644)
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Open with world-readable root key: %v", err)
	}
}

func TestPassphraseStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pf := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pf, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{PassphraseFile: pf})
	if err != nil {
		t.Fatal(err)
	}
	md := mustKey(t, s, LocalPrincipal)
	blob, _, err := s.Encrypt(bg, LocalPrincipal, md.KeyID, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, rootKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("passphrase store has a root key file: %v", err)
	}
	s2, err := Open(dir, Options{PassphraseFile: pf})
	if err != nil {
		t.Fatal(err)
	}
	pt, _, err := s2.Decrypt(bg, LocalPrincipal, blob, nil, "")
	if err != nil || string(pt) != "secret" {
		t.Fatalf("Decrypt after reopen: %q %v", pt, err)
	}
	s2.Close()
	if err := os.WriteFile(pf, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{PassphraseFile: pf}); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("open passphrase store without passphrase: %v", err)
	}
}

func TestKeyStatesAndTransitions(t *testing.T) {
	clk := newClock()
	s := openTest(t, t.TempDir(), clk)
	md := mustKey(t, s, LocalPrincipal)
	if md.KeyState != StateEnabled || !md.Enabled || md.KeyManager != KeyManagerCustomer || md.CurrentVersion != 1 {
		t.Fatalf("new key metadata: %+v", md)
	}
	if want := "arn:aws:kms:local:000000000000:key/" + md.KeyID; md.Arn != want {
		t.Fatalf("ARN %s, want %s", md.Arn, want)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-1"}
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.Arn, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func() error {
		_, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, "")
		return err
	}

	if err := s.DisableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	err = decrypt()
	wantCode(t, err, CodeDisabled)
	if want := md.Arn + " is disabled."; err.(*Error).Message != want {
		t.Fatalf("message %q, want %q", err.(*Error).Message, want)
	}
	if err.(*Error).HTTPStatus() != 409 {
		t.Fatalf("status %d", err.(*Error).HTTPStatus())
	}
	_, _, _, err = s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	wantCode(t, err, CodeDisabled)
	if err := s.EnableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	if err := decrypt(); err != nil {
		t.Fatalf("Decrypt after EnableKey: %v", err)
	}

	for _, days := range []int{6, 31, -1} {
		_, err := s.ScheduleKeyDeletion(bg, LocalPrincipal, md.KeyID, days)
		wantCode(t, err, CodeValidation)
	}
	when, err := s.ScheduleKeyDeletion(bg, LocalPrincipal, md.KeyID, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !when.Equal(clk.Now().Add(7 * 24 * time.Hour)) {
		t.Fatalf("deletion date %v", when)
	}
	err = decrypt()
	wantCode(t, err, CodeInvalidState)
	if !strings.HasSuffix(err.Error(), "is pending deletion.") {
		t.Fatalf("message: %v", err)
	}
	wantCode(t, s.EnableKey(bg, LocalPrincipal, md.KeyID), CodeInvalidState)
	got, err := s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	if err != nil || got.KeyState != StatePendingDeletion || got.DeletionDate == nil || got.PendingDeletionWindowInDays != 7 {
		t.Fatalf("DescribeKey while pending deletion: %+v %v", got, err)
	}
	if err := s.CancelKeyDeletion(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CancelKeyDeletion(bg, LocalPrincipal, md.KeyID), CodeInvalidState)
	got, _ = s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	if got.KeyState != StateDisabled || got.DeletionDate != nil {
		t.Fatalf("after CancelKeyDeletion: %+v", got)
	}
	wantCode(t, decrypt(), CodeDisabled)
	if err := s.EnableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}

	// Deletion is carried out lazily once the date passes.
	if err := s.CreateAlias(bg, LocalPrincipal, "alias/doomed", md.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScheduleKeyDeletion(bg, LocalPrincipal, md.KeyID, 0); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30*24*time.Hour - time.Second)
	wantCode(t, decrypt(), CodeInvalidState)
	clk.Advance(time.Second)
	wantCode(t, decrypt(), CodeNotFound)
	_, err = s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	wantCode(t, err, CodeNotFound)
	_, err = s.DescribeKey(bg, LocalPrincipal, "alias/doomed")
	wantCode(t, err, CodeNotFound)
	keys, _ := s.ListKeys(bg, LocalPrincipal)
	if len(keys) != 0 {
		t.Fatalf("deleted key still listed: %v", keys)
	}
	recs, err := s.Audit(bg, AuditFilter{KeyRef: md.KeyID, Operation: "DeleteKey"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("DeleteKey audit: %v %v", recs, err)
	}
}

func TestUnsupportedSpecs(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	for _, in := range []CreateKeyInput{
		{KeySpec: "RSA_2048"}, {KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY"},
		{KeyUsage: "GENERATE_VERIFY_MAC"}, {Origin: "AWS_CLOUDHSM"},
	} {
		_, err := s.CreateKey(bg, LocalPrincipal, in)
		wantCode(t, err, CodeUnsupportedOperation)
		if !strings.Contains(err.Error(), "not supported") {
			t.Fatalf("unclear message: %v", err)
		}
	}
}

func TestKeyRefsAndAliases(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, LocalPrincipal)
	other := mustKey(t, s, LocalPrincipal)
	if err := s.CreateAlias(bg, LocalPrincipal, "alias/app-data", md.KeyID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CreateAlias(bg, LocalPrincipal, "alias/app-data", md.KeyID), CodeAlreadyExists)
	for _, bad := range []string{"app", "alias/aws/ebs", "alias/bad name", "alias/" + strings.Repeat("x", 260), ServiceKeyAlias} {
		wantCode(t, s.CreateAlias(bg, LocalPrincipal, bad, md.KeyID), CodeInvalidAliasName)
	}
	for _, ref := range []string{md.KeyID, md.Arn, "alias/app-data", "arn:aws:kms:local:000000000000:alias/app-data"} {
		got, err := s.DescribeKey(bg, LocalPrincipal, ref)
		if err != nil || got.KeyID != md.KeyID || len(got.Aliases) != 1 || got.Aliases[0] != "alias/app-data" {
			t.Fatalf("DescribeKey(%s) = %+v, %v", ref, got, err)
		}
	}
	for _, ref := range []string{"alias/missing", "nonsense", "arn:aws:kms:us-east-1:000000000000:key/" + md.KeyID} {
		_, err := s.DescribeKey(bg, LocalPrincipal, ref)
		wantCode(t, err, CodeNotFound)
	}
	_, err := s.DescribeKey(bg, LocalPrincipal, "")
	wantCode(t, err, CodeValidation)
	if err := s.UpdateAlias(bg, LocalPrincipal, "alias/app-data", other.KeyID); err != nil {
		t.Fatal(err)
	}
	al, err := s.ListAliases(bg, LocalPrincipal, other.KeyID)
	if err != nil || len(al) != 1 || al[0].TargetKeyID != other.KeyID || al[0].AliasArn != "arn:aws:kms:local:000000000000:alias/app-data" {
		t.Fatalf("ListAliases: %+v %v", al, err)
	}
	if err := s.DeleteAlias(bg, LocalPrincipal, "alias/app-data"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.DeleteAlias(bg, LocalPrincipal, "alias/app-data"), CodeNotFound)
}

func TestEncryptionContextAcrossRotation(t *testing.T) {
	clk := newClock()
	s := openTest(t, t.TempDir(), clk)
	md := mustKey(t, s, LocalPrincipal)
	ectx := map[string]string{"encvol:volume-id": "vol-a", "purpose": "dk"}
	pt0, blob0, arn, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil || arn != md.Arn || len(pt0) != 32 {
		t.Fatalf("GenerateDataKey: %v %s", err, arn)
	}
	if v := blobVersion(t, blob0); v != 1 {
		t.Fatalf("first blob version %d", v)
	}
	check := func(blob, want []byte) {
		t.Helper()
		got, gotARN, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, "")
		if err != nil || !bytes.Equal(got, want) || gotARN != md.Arn {
			t.Fatalf("Decrypt: %v (arn %s)", err, gotARN)
		}
		for _, bad := range []map[string]string{
			nil,
			{"encvol:volume-id": "vol-b", "purpose": "dk"},
			{"encvol:volume-id": "vol-a"},
			{"encvol:volume-id": "vol-a", "purpose": "dk", "extra": ""},
			{"Encvol:volume-id": "vol-a", "purpose": "dk"},
		} {
			_, _, err := s.Decrypt(bg, LocalPrincipal, blob, bad, "")
			wantCode(t, err, CodeInvalidCiphertext)
		}
	}
	check(blob0, pt0)

	// Two rotations: one on demand, one automatic (lazy, when due).
	if err := s.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableKeyRotation(bg, LocalPrincipal, md.KeyID, 90); err != nil {
		t.Fatal(err)
	}
	rs, err := s.GetKeyRotationStatus(bg, LocalPrincipal, md.KeyID)
	if err != nil || !rs.Enabled || rs.PeriodDays != 90 || rs.CurrentVersion != 2 || rs.OnDemandRotations != 1 {
		t.Fatalf("rotation status %+v %v", rs, err)
	}
	clk.Advance(91 * 24 * time.Hour)
	pt2, blob2, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	if v := blobVersion(t, blob2); v != 3 {
		t.Fatalf("blob after two rotations has version %d, want 3", v)
	}
	d, _ := s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	if d.CurrentVersion != 3 {
		t.Fatalf("CurrentVersion %d", d.CurrentVersion)
	}
	check(blob0, pt0)
	check(blob2, pt2)

	// ReEncrypt moves an old blob to the newest version and a new context.
	nctx := map[string]string{"encvol:volume-id": "vol-c"}
	nb, src, dst, err := s.ReEncrypt(bg, LocalPrincipal, blob0, ectx, "", md.KeyID, nctx)
	if err != nil || src != md.Arn || dst != md.Arn || blobVersion(t, nb) != 3 {
		t.Fatalf("ReEncrypt: %v", err)
	}
	got, _, err := s.Decrypt(bg, LocalPrincipal, nb, nctx, md.Arn)
	if err != nil || !bytes.Equal(got, pt0) {
		t.Fatalf("Decrypt re-encrypted: %v", err)
	}
	other := mustKey(t, s, LocalPrincipal)
	_, _, err = s.Decrypt(bg, LocalPrincipal, nb, nctx, other.KeyID)
	wantCode(t, err, CodeIncorrectKey)

	// Tampering with any byte (header or body) fails cleanly.
	for i := 0; i < len(blob0); i += 7 {
		bad := bytes.Clone(blob0)
		bad[i] ^= 0x40
		_, _, err := s.Decrypt(bg, LocalPrincipal, bad, ectx, "")
		if c := ErrorCode(err); c != CodeInvalidCiphertext && c != CodeNotFound {
			t.Fatalf("tampered byte %d: %v", i, err)
		}
	}
	_, _, err = s.Decrypt(bg, LocalPrincipal, []byte("short"), ectx, "")
	wantCode(t, err, CodeInvalidCiphertext)
}

func blobVersion(t *testing.T, blob []byte) uint32 {
	t.Helper()
	h, err := parseBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	return h.version
}

func TestRotationLimitsAndChecks(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, LocalPrincipal)
	for _, d := range []int{89, 2561} {
		wantCode(t, s.EnableKeyRotation(bg, LocalPrincipal, md.KeyID, d), CodeValidation)
	}
	for i := 0; i < MaxOnDemandRotations; i++ {
		if err := s.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	wantCode(t, s.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID), CodeLimitExceeded)
	if err := s.DisableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	ext, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{Origin: OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	err = s.RotateKeyOnDemand(bg, LocalPrincipal, ext.KeyID)
	wantCode(t, err, CodeUnsupportedOperation)
	if !strings.Contains(err.Error(), "origin is EXTERNAL which is not valid for this operation.") {
		t.Fatalf("message: %v", err)
	}
	wantCode(t, s.EnableKeyRotation(bg, LocalPrincipal, ext.KeyID, 365), CodeUnsupportedOperation)
}

func TestGrants(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	const alice, bob = "alice", "bob"
	md := mustKey(t, s, alice)
	ectx := map[string]string{"encvol:volume-id": "vol-shared"}
	_, blob, _, err := s.GenerateDataKey(bg, alice, md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Decrypt(bg, bob, blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)
	if err.(*Error).HTTPStatus() != 400 {
		t.Fatalf("AccessDenied status %d", err.(*Error).HTTPStatus())
	}
	_, err = s.DescribeKey(bg, bob, md.KeyID)
	wantCode(t, err, CodeAccessDenied)
	wantCode(t, s.DisableKey(bg, bob, md.KeyID), CodeAccessDenied)
	_, _, err = s.CreateGrant(bg, bob, GrantInput{KeyRef: md.KeyID, GranteePrincipal: bob, Operations: []string{OpDecrypt}})
	wantCode(t, err, CodeAccessDenied)

	_, _, err = s.CreateGrant(bg, alice, GrantInput{KeyRef: md.KeyID, GranteePrincipal: bob, Operations: []string{"Sign"}})
	wantCode(t, err, CodeValidation)

	id, tok, err := s.CreateGrant(bg, alice, GrantInput{KeyRef: md.KeyID, GranteePrincipal: bob, Operations: []string{OpDecrypt}, Name: "vol-shared"})
	if err != nil || id == "" || tok == "" {
		t.Fatalf("CreateGrant: %q %q %v", id, tok, err)
	}
	id2, _, err := s.CreateGrant(bg, alice, GrantInput{KeyRef: md.KeyID, GranteePrincipal: bob, Operations: []string{OpDecrypt}, Name: "vol-shared"})
	if err != nil || id2 != id {
		t.Fatalf("repeated named CreateGrant gave %q, want %q (%v)", id2, id, err)
	}
	if _, _, err := s.Decrypt(bg, bob, blob, ectx, ""); err != nil {
		t.Fatalf("Decrypt with grant: %v", err)
	}
	_, _, _, err = s.GenerateDataKey(bg, bob, md.KeyID, 32, ectx)
	wantCode(t, err, CodeAccessDenied)
	keys, _ := s.ListKeys(bg, bob)
	if len(keys) != 1 || keys[0].KeyID != md.KeyID {
		t.Fatalf("ListKeys for grantee: %v", keys)
	}
	gs, err := s.ListGrants(bg, alice, md.KeyID)
	if err != nil || len(gs) != 1 || gs[0].GrantID != id || gs[0].GranteePrincipal != s.PrincipalARN(bob) || gs[0].Operations[0] != OpDecrypt {
		t.Fatalf("ListGrants: %+v %v", gs, err)
	}
	_, err = s.ListGrants(bg, bob, md.KeyID)
	wantCode(t, err, CodeAccessDenied)
	wantCode(t, s.RevokeGrant(bg, bob, md.KeyID, id), CodeAccessDenied)
	if err := s.RevokeGrant(bg, alice, md.KeyID, id); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Decrypt(bg, bob, blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)
	wantCode(t, s.RevokeGrant(bg, alice, md.KeyID, id), CodeInvalidGrantID)

	// Constraints: a grant bound to one volume's context works for that
	// volume only.
	cid, _, err := s.CreateGrant(bg, alice, GrantInput{KeyRef: md.KeyID, GranteePrincipal: bob, RetiringPrincipal: "carol",
		Operations: []string{OpDecrypt, OpGenerateDataKey}, Constraints: &GrantConstraints{EncryptionContextSubset: ectx}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Decrypt(bg, bob, blob, ectx, ""); err != nil {
		t.Fatalf("Decrypt under constrained grant: %v", err)
	}
	_, _, _, err = s.GenerateDataKey(bg, bob, md.KeyID, 32, map[string]string{"encvol:volume-id": "vol-other"})
	wantCode(t, err, CodeAccessDenied)
	wantCode(t, s.RetireGrant(bg, bob, md.KeyID, cid), CodeAccessDenied)
	if err := s.RetireGrant(bg, "carol", md.KeyID, cid); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Decrypt(bg, bob, blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)

	// A grantee with CreateGrant may delegate only what it holds.
	if _, _, err := s.CreateGrant(bg, alice, GrantInput{KeyRef: md.KeyID, GranteePrincipal: bob, Operations: []string{OpDecrypt, OpCreateGrant}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGrant(bg, bob, GrantInput{KeyRef: md.KeyID, GranteePrincipal: "dave", Operations: []string{OpDecrypt}}); err != nil {
		t.Fatalf("delegated grant: %v", err)
	}
	_, _, err = s.CreateGrant(bg, bob, GrantInput{KeyRef: md.KeyID, GranteePrincipal: "dave", Operations: []string{OpEncrypt}})
	wantCode(t, err, CodeAccessDenied)
	if _, _, err := s.Decrypt(bg, "dave", blob, ectx, ""); err != nil {
		t.Fatalf("Decrypt by delegated grantee: %v", err)
	}

	recs, err := s.Audit(bg, AuditFilter{KeyRef: md.Arn, Principal: bob, Operation: OpDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	var ok, denied int
	for _, r := range recs {
		switch r.Result {
		case "ok":
			ok++
		case CodeAccessDenied:
			denied++
		}
		if r.EncryptionContext["encvol:volume-id"] != "vol-shared" || r.KeyVersion != 1 {
			t.Fatalf("audit record %+v", r)
		}
	}
	if ok != 2 || denied != 3 {
		t.Fatalf("bob's Decrypt audit: %d ok, %d denied (%+v)", ok, denied, recs)
	}
}

func TestServiceKey(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md, err := s.ServiceKey(bg, LocalPrincipal)
	if err != nil {
		t.Fatal(err)
	}
	if md.KeyManager != KeyManagerAWS || len(md.Aliases) != 1 || md.Aliases[0] != ServiceKeyAlias {
		t.Fatalf("service key: %+v", md)
	}
	// Each principal has its own service key: bob's keyless volumes are
	// his, and he cannot unwrap data keys made under local's.
	bobs, err := s.ServiceKey(bg, "bob")
	if err != nil || bobs.KeyID == md.KeyID || len(bobs.Aliases) != 1 || bobs.Aliases[0] != ServiceKeyAlias {
		t.Fatalf("bob's ServiceKey: %+v %v (local's is %s)", bobs, err, md.KeyID)
	}
	if again, err := s.ServiceKey(bg, "bob"); err != nil || again.KeyID != bobs.KeyID {
		t.Fatalf("second ServiceKey: %+v %v", again, err)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-x"}
	_, blob, _, err := s.GenerateDataKey(bg, "bob", ServiceKeyAlias, 32, ectx)
	if err != nil {
		t.Fatalf("service key use by its principal: %v", err)
	}
	if _, _, err := s.Decrypt(bg, "bob", blob, ectx, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"carol", "alice"} {
		_, _, err := s.Decrypt(bg, p, blob, ectx, "")
		wantCode(t, err, CodeAccessDenied)
		if !strings.Contains(err.Error(), "service key of another principal") {
			t.Fatalf("%s decrypting under bob's service key: unclear message: %v", p, err)
		}
		if _, _, _, err := s.GenerateDataKey(bg, p, bobs.KeyID, 32, ectx); err == nil {
			t.Fatalf("%s made a data key under bob's service key", p)
		}
	}
	if keys, _ := s.ListKeys(bg, "carol"); len(keys) != 0 {
		t.Fatalf("carol sees others' service keys: %v", keys)
	}
	for name, err := range map[string]error{
		"disable":  s.DisableKey(bg, LocalPrincipal, ServiceKeyAlias),
		"schedule": func() error { _, err := s.ScheduleKeyDeletion(bg, LocalPrincipal, md.KeyID, 7); return err }(),
		"grant": func() error {
			_, _, err := s.CreateGrant(bg, LocalPrincipal, GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpDecrypt}})
			return err
		}(),
		"rotate":       s.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID),
		"delete-alias": s.DeleteAlias(bg, LocalPrincipal, ServiceKeyAlias),
	} {
		wantCode(t, err, CodeUnsupportedOperation)
		if !strings.Contains(err.Error(), "encvol service key") || !strings.Contains(err.Error(), "customer key") {
			t.Fatalf("%s: unclear message: %v", name, err)
		}
	}
	d, _ := s.DescribeKey(bg, LocalPrincipal, ServiceKeyAlias)
	if d.KeyState != StateEnabled {
		t.Fatalf("service key state %s", d.KeyState)
	}
}

func TestCrossStoreVisibility(t *testing.T) {
	dir := t.TempDir()
	a := openTest(t, dir, nil)
	b := openTest(t, dir, nil)
	md := mustKey(t, a, LocalPrincipal)
	ectx := map[string]string{"encvol:volume-id": "vol-1"}
	_, blob, _, err := a.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Decrypt(bg, LocalPrincipal, blob, ectx, ""); err != nil {
		t.Fatalf("B decrypts A's blob: %v", err)
	}
	if err := a.DisableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	_, _, err = b.Decrypt(bg, LocalPrincipal, blob, ectx, "")
	wantCode(t, err, CodeDisabled)
	if err := b.EnableKey(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Decrypt(bg, LocalPrincipal, blob, ectx, ""); err != nil {
		t.Fatalf("A after B enabled: %v", err)
	}
	if err := a.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	_, nb, _, err := b.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil || blobVersion(t, nb) != 2 {
		t.Fatalf("B does not see A's rotation: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	a := openTest(t, dir, nil)
	b := openTest(t, dir, nil)
	md := mustKey(t, a, LocalPrincipal)
	ectx := map[string]string{"encvol:volume-id": "vol-c"}
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if w%2 == 1 {
				s = b
			}
			for i := range 40 {
				pt, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
				if err != nil {
					errc <- err
					return
				}
				got, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, "")
				if err != nil || !bytes.Equal(got, pt) {
					errc <- errors.Join(errors.New("round trip"), err)
					return
				}
				if w == 0 && i%10 == 0 {
					if err := s.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID); err != nil {
						errc <- err
						return
					}
				}
				if w == 1 && i%5 == 0 {
					if _, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{}); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	keys, _ := b.ListKeys(bg, LocalPrincipal)
	if len(keys) != 1+8 {
		t.Fatalf("%d keys after concurrent creates, want 9", len(keys))
	}
}

func TestAuditLog(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, LocalPrincipal)
	if err := s.CreateAlias(bg, LocalPrincipal, "alias/vols", md.KeyID); err != nil {
		t.Fatal(err)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-audit"}
	pt, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, "alias/vols", 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	s.Decrypt(bg, LocalPrincipal, blob, nil, "")
	s.DisableKey(bg, LocalPrincipal, md.KeyID)
	recs, err := s.Audit(bg, AuditFilter{KeyRef: "alias/vols"})
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, r := range recs {
		ops = append(ops, r.Operation+"="+r.Result)
	}
	want := "CreateKey=ok CreateAlias=ok GenerateDataKey=ok Decrypt=InvalidCiphertextException DisableKey=ok"
	if strings.Join(ops, " ") != want {
		t.Fatalf("audit ops %q, want %q", strings.Join(ops, " "), want)
	}
	if recs[2].EncryptionContext["encvol:volume-id"] != "vol-audit" || recs[2].Principal != LocalPrincipal || recs[2].KeyVersion != 1 {
		t.Fatalf("GenerateDataKey record %+v", recs[2])
	}
	s.Close()
	raw, _ := os.ReadFile(filepath.Join(filepath.Dir(s.path(auditFile)), auditFile))
	if bytes.Contains(raw, pt) || bytes.Contains(raw, blob) {
		t.Fatal("audit log contains key material")
	}
}

func TestErrorStatus(t *testing.T) {
	for code, want := range map[string]int{
		CodeDisabled: 409, CodeInvalidState: 409, CodeNotFound: 404, CodeInvalidCiphertext: 400,
		CodeAccessDenied: 400, CodeValidation: 400, CodeAlreadyExists: 409, CodeLimitExceeded: 400,
		CodeInternal: 500, CodeUnsupportedOperation: 400,
	} {
		if got := (&Error{Code: code}).HTTPStatus(); got != want {
			t.Errorf("%s: status %d, want %d", code, got, want)
		}
	}
	if ErrorCode(errors.New("x")) != "" || ErrorCode(fmtWrap(&Error{Code: CodeDisabled})) != CodeDisabled {
		t.Fatal("ErrorCode does not unwrap")
	}
}

func fmtWrap(err error) error { return errors.Join(errors.New("context"), err) }

func TestGrantRevocationSeenByOtherStore(t *testing.T) {
	dir := t.TempDir()
	a := openTest(t, dir, nil)
	b := openTest(t, dir, nil)
	md := mustKey(t, a, "alice")
	ectx := map[string]string{"encvol:volume-id": "vol-g"}
	_, blob, _, err := a.GenerateDataKey(bg, "alice", md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := a.CreateGrant(bg, "alice", GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpDecrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Decrypt(bg, "bob", blob, ectx, ""); err != nil {
		t.Fatalf("grantee via other store: %v", err)
	}
	if err := a.RevokeGrant(bg, "alice", md.KeyID, id); err != nil {
		t.Fatal(err)
	}
	_, _, err = b.Decrypt(bg, "bob", blob, ectx, "")
	wantCode(t, err, CodeAccessDenied)
}

func TestLazyRotationAuditedAndReEncryptAudit(t *testing.T) {
	clk := newClock()
	s := openTest(t, t.TempDir(), clk)
	src := mustKey(t, s, LocalPrincipal)
	dst := mustKey(t, s, LocalPrincipal)
	if err := s.EnableKeyRotation(bg, LocalPrincipal, dst.KeyID, 0); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.GetKeyRotationStatus(bg, LocalPrincipal, dst.KeyID)
	if rs.PeriodDays != DefaultRotationDays || rs.NextRotationDate == nil || !rs.NextRotationDate.Equal(clk.Now().Add(365*24*time.Hour)) {
		t.Fatalf("rotation status %+v", rs)
	}
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, src.KeyID, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(366 * 24 * time.Hour)
	nb, _, _, err := s.ReEncrypt(bg, LocalPrincipal, blob, nil, src.KeyID, dst.KeyID, nil)
	if err != nil || blobVersion(t, nb) != 2 {
		t.Fatalf("ReEncrypt after due rotation: %v", err)
	}
	rot, err := s.Audit(bg, AuditFilter{KeyRef: dst.Arn, Operation: "RotateKey"})
	if err != nil || len(rot) != 1 || rot[0].KeyVersion != 2 {
		t.Fatalf("automatic rotation audit: %+v %v", rot, err)
	}
	for _, k := range []KeyMetadata{src, dst} {
		recs, _ := s.Audit(bg, AuditFilter{KeyRef: k.KeyID, Since: clk.Now(), Principal: LocalPrincipal})
		if len(recs) != 1 || recs[0].Result != "ok" || !strings.HasPrefix(recs[0].Operation, "ReEncrypt") {
			t.Fatalf("ReEncrypt audit for %s: %+v", k.KeyID, recs)
		}
	}
	if err := s.DisableKeyRotation(bg, LocalPrincipal, dst.KeyID); err != nil {
		t.Fatal(err)
	}
	clk.Advance(400 * 24 * time.Hour)
	d, _ := s.DescribeKey(bg, LocalPrincipal, dst.KeyID)
	if d.CurrentVersion != 2 {
		t.Fatalf("rotated after DisableKeyRotation: version %d", d.CurrentVersion)
	}
}

func TestBadInputsAreClearErrors(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md := mustKey(t, s, LocalPrincipal)
	_, _, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 0, nil)
	wantCode(t, err, CodeValidation)
	_, _, _, err = s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 1025, nil)
	wantCode(t, err, CodeValidation)
	_, _, err = s.Encrypt(bg, LocalPrincipal, md.KeyID, make([]byte, 4097), nil)
	wantCode(t, err, CodeValidation)
	_, _, err = s.Encrypt(bg, LocalPrincipal, md.KeyID, []byte("x"), map[string]string{"k": strings.Repeat("v", 9000)})
	wantCode(t, err, CodeValidation)
	_, err = s.CreateKey(bg, "", CreateKeyInput{})
	wantCode(t, err, CodeAccessDenied)
	_, _, err = s.Decrypt(bg, LocalPrincipal, nil, nil, "")
	wantCode(t, err, CodeInvalidCiphertext)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err = s.DescribeKey(ctx, LocalPrincipal, md.KeyID)
	if err == nil {
		t.Fatal("cancelled context accepted")
	}
}
