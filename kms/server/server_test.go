package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kms"
)

const testRegion = "us-east-1"

var (
	admin  = Principal{Name: "admin", AccessKeyID: "AKIDADMIN0000000001", SecretAccessKey: "adminSecretAdminSecret0000000001"}
	reader = Principal{Name: "reader", AccessKeyID: "AKIDREADER000000001", SecretAccessKey: "readerSecretReaderSecret00000001"}
)

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testEnv struct {
	url   string
	store *kms.Store
	logs  *syncBuffer
	srv   *Server
}

// startServer runs a real server on a loopback port until the test ends.
func startServer(t testing.TB, opt Options) *testEnv {
	t.Helper()
	return startServerWith(t, opt, kms.Options{})
}

// startServerWith is startServer over a store opened with storeOpt.
func startServerWith(t testing.TB, opt Options, storeOpt kms.Options) *testEnv {
	t.Helper()
	store, err := kms.Open(t.TempDir(), storeOpt)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	logs := &syncBuffer{}
	srv := New(store, []Principal{admin, reader}, zerolog.New(logs), opt)
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx, "127.0.0.1:0", "", "", func(a net.Addr) { readyc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-readyc:
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ListenAndServe after shutdown: %v", err)
		}
		_ = store.Close()
	})
	return &testEnv{url: "http://" + addr.String(), store: store, logs: logs, srv: srv}
}

func newClient(url string, p Principal) *awskms.Client {
	return awskms.New(awskms.Options{
		Region:           testRegion,
		Credentials:      credentials.NewStaticCredentialsProvider(p.AccessKeyID, p.SecretAccessKey, ""),
		BaseEndpoint:     aws.String(url),
		RetryMaxAttempts: 1,
	})
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func createKey(t *testing.T, c *awskms.Client, desc string) *types.KeyMetadata {
	t.Helper()
	out, err := c.CreateKey(context.Background(), &awskms.CreateKeyInput{Description: aws.String(desc)})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return out.KeyMetadata
}

func TestDataKeyRoundTrip(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	ctx := context.Background()

	md := createKey(t, c, "round trip")
	if !strings.HasPrefix(aws.ToString(md.Arn), "arn:aws:kms:") || !strings.HasSuffix(aws.ToString(md.Arn), "key/"+aws.ToString(md.KeyId)) {
		t.Errorf("Arn %q does not name key %q", aws.ToString(md.Arn), aws.ToString(md.KeyId))
	}
	if md.KeyState != types.KeyStateEnabled || !md.Enabled || md.KeySpec != types.KeySpecSymmetricDefault ||
		md.KeyUsage != types.KeyUsageTypeEncryptDecrypt || md.KeyManager != types.KeyManagerTypeCustomer ||
		md.Origin != types.OriginTypeAwsKms || aws.ToString(md.AWSAccountId) == "" || aws.ToString(md.Description) != "round trip" {
		t.Errorf("unexpected metadata: %+v", md)
	}
	if len(md.EncryptionAlgorithms) != 1 || md.EncryptionAlgorithms[0] != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Errorf("EncryptionAlgorithms = %v", md.EncryptionAlgorithms)
	}
	if md.CreationDate == nil || time.Since(*md.CreationDate).Abs() > time.Minute {
		t.Errorf("CreationDate = %v, want about now", md.CreationDate)
	}

	encCtx := map[string]string{"encvol:volume-id": "vol-1"}
	gdk, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: md.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: encCtx})
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	if len(gdk.Plaintext) != 32 || len(gdk.CiphertextBlob) == 0 || aws.ToString(gdk.KeyId) != aws.ToString(md.Arn) {
		t.Fatalf("GenerateDataKey: %d-byte plaintext, %d-byte blob, key %q", len(gdk.Plaintext), len(gdk.CiphertextBlob), aws.ToString(gdk.KeyId))
	}
	dec, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx})
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(dec.Plaintext, gdk.Plaintext) || aws.ToString(dec.KeyId) != aws.ToString(md.Arn) || dec.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Fatalf("Decrypt returned different plaintext or key %q", aws.ToString(dec.KeyId))
	}

	// Wrong and missing encryption contexts fail like AWS.
	for _, bad := range []map[string]string{{"encvol:volume-id": "vol-2"}, nil} {
		_, err = c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: bad})
		var ice *types.InvalidCiphertextException
		if !errors.As(err, &ice) {
			t.Errorf("Decrypt with context %v: got %v, want InvalidCiphertextException", bad, err)
		}
	}

	// WithoutPlaintext, Encrypt and ReEncrypt against the same key.
	wp, err := c.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: md.KeyId, NumberOfBytes: aws.Int32(64), EncryptionContext: encCtx})
	if err != nil {
		t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	dec, err = c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: wp.CiphertextBlob, EncryptionContext: encCtx, KeyId: md.KeyId})
	if err != nil || len(dec.Plaintext) != 64 {
		t.Fatalf("Decrypt of GenerateDataKeyWithoutPlaintext blob: %v (len %d)", err, len(dec.Plaintext))
	}
	enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: md.KeyId, Plaintext: []byte("hello kms")})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	md2 := createKey(t, c, "second")
	re, err := c.ReEncrypt(ctx, &awskms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, DestinationKeyId: md2.KeyId,
		DestinationEncryptionContext: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatalf("ReEncrypt: %v", err)
	}
	if aws.ToString(re.SourceKeyId) != aws.ToString(md.Arn) || aws.ToString(re.KeyId) != aws.ToString(md2.Arn) {
		t.Errorf("ReEncrypt keys: source %q dest %q", aws.ToString(re.SourceKeyId), aws.ToString(re.KeyId))
	}
	dec, err = c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"a": "b"}})
	if err != nil || string(dec.Plaintext) != "hello kms" {
		t.Fatalf("Decrypt after ReEncrypt: %v %q", err, dec.Plaintext)
	}
	// A KeyId naming another key than the blob's is IncorrectKeyException.
	_, err = c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: md2.KeyId})
	var ike *types.IncorrectKeyException
	if !errors.As(err, &ike) {
		t.Errorf("Decrypt with the wrong KeyId: got %v, want IncorrectKeyException", err)
	}

	// No key material, plaintext or blob reaches the request log.
	logs := env.logs.String()
	for name, secret := range map[string][]byte{"data key": gdk.Plaintext, "blob": gdk.CiphertextBlob, "encrypt plaintext": []byte("hello kms")} {
		if strings.Contains(logs, base64.StdEncoding.EncodeToString(secret)) || strings.Contains(logs, string(secret)) ||
			strings.Contains(logs, hex.EncodeToString(secret)) {
			t.Errorf("request log contains the %s", name)
		}
	}
	if !strings.Contains(logs, `"op":"Decrypt"`) || !strings.Contains(logs, `"principal":"admin"`) || !strings.Contains(logs, `"key_id":"`+aws.ToString(md.Arn)) {
		t.Errorf("request log lacks op/principal/key_id fields:\n%s", logs)
	}
}

func TestKeyStates(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	ctx := context.Background()
	md := createKey(t, c, "states")
	gdk, err := c.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: md.KeyId, KeySpec: types.DataKeySpecAes256})
	if err != nil {
		t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	decrypt := func() error {
		_, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob})
		return err
	}

	if _, err := c.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: md.KeyId}); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	var de *types.DisabledException
	if err := decrypt(); !errors.As(err, &de) {
		t.Fatalf("Decrypt under a disabled key: got %v, want DisabledException", err)
	}
	if _, err := c.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: md.KeyId}); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	if err := decrypt(); err != nil {
		t.Fatalf("Decrypt after EnableKey: %v", err)
	}

	_, err = c.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{KeyId: md.KeyId, PendingWindowInDays: aws.Int32(3)})
	if err == nil || apiCode(err) != "ValidationException" {
		t.Fatalf("3-day deletion window: got %v, want ValidationException", err)
	}
	sd, err := c.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{KeyId: md.KeyId, PendingWindowInDays: aws.Int32(7)})
	if err != nil {
		t.Fatalf("ScheduleKeyDeletion(7): %v", err)
	}
	if sd.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(sd.PendingWindowInDays) != 7 || aws.ToString(sd.KeyId) != aws.ToString(md.Arn) ||
		sd.DeletionDate == nil || time.Until(*sd.DeletionDate) < 6*24*time.Hour || time.Until(*sd.DeletionDate) > 8*24*time.Hour {
		t.Errorf("ScheduleKeyDeletion output: %+v", sd)
	}
	var ise *types.KMSInvalidStateException
	if err := decrypt(); !errors.As(err, &ise) {
		t.Fatalf("Decrypt pending deletion: got %v, want KMSInvalidStateException", err)
	}
	d, err := c.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: md.KeyId})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStatePendingDeletion || d.KeyMetadata.DeletionDate == nil {
		t.Fatalf("DescribeKey pending deletion: %v %+v", err, d)
	}
	if _, err := c.CancelKeyDeletion(ctx, &awskms.CancelKeyDeletionInput{KeyId: md.KeyId}); err != nil {
		t.Fatalf("CancelKeyDeletion: %v", err)
	}
	d, err = c.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: md.KeyId})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStateDisabled || d.KeyMetadata.DeletionDate != nil {
		t.Fatalf("after CancelKeyDeletion: %v, state %v", err, d.KeyMetadata.KeyState)
	}

	var nfe *types.NotFoundException
	if _, err := c.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String("11111111-2222-3333-4444-555555555555")}); !errors.As(err, &nfe) {
		t.Errorf("DescribeKey of an unknown key: got %v, want NotFoundException", err)
	}
}

func TestAliasesRotationAndListing(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	ctx := context.Background()
	md := createKey(t, c, "aliased")
	for i := 0; i < 2; i++ {
		createKey(t, c, "filler")
	}
	if _, err := c.CreateAlias(ctx, &awskms.CreateAliasInput{AliasName: aws.String("alias/app-data"), TargetKeyId: md.KeyId}); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	var aee *types.AlreadyExistsException
	if _, err := c.CreateAlias(ctx, &awskms.CreateAliasInput{AliasName: aws.String("alias/app-data"), TargetKeyId: md.KeyId}); !errors.As(err, &aee) {
		t.Errorf("CreateAlias twice: got %v, want AlreadyExistsException", err)
	}
	d, err := c.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String("alias/app-data")})
	if err != nil || aws.ToString(d.KeyMetadata.KeyId) != aws.ToString(md.KeyId) {
		t.Fatalf("DescribeKey via alias: %v", err)
	}
	la, err := c.ListAliases(ctx, &awskms.ListAliasesInput{KeyId: md.KeyId})
	if err != nil || len(la.Aliases) != 1 || aws.ToString(la.Aliases[0].AliasName) != "alias/app-data" || aws.ToString(la.Aliases[0].TargetKeyId) != aws.ToString(md.KeyId) {
		t.Fatalf("ListAliases: %v %+v", err, la)
	}

	// Pagination with Limit 1 walks every key exactly once.
	seen := map[string]bool{}
	pg := awskms.NewListKeysPaginator(c, &awskms.ListKeysInput{Limit: aws.Int32(1)})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatalf("ListKeys page: %v", err)
		}
		if len(out.Keys) > 1 {
			t.Fatalf("ListKeys returned %d keys with Limit 1", len(out.Keys))
		}
		for _, k := range out.Keys {
			if seen[aws.ToString(k.KeyId)] {
				t.Fatalf("ListKeys repeated %s", aws.ToString(k.KeyId))
			}
			seen[aws.ToString(k.KeyId)] = true
		}
	}
	if len(seen) != 3 || !seen[aws.ToString(md.KeyId)] {
		t.Errorf("ListKeys saw %d keys, want 3 including %s", len(seen), aws.ToString(md.KeyId))
	}

	// Rotation: a blob wrapped before rotation still decrypts after it.
	before, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String("alias/app-data"), Plaintext: []byte("v1")})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if _, err := c.EnableKeyRotation(ctx, &awskms.EnableKeyRotationInput{KeyId: md.KeyId, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatalf("EnableKeyRotation: %v", err)
	}
	st, err := c.GetKeyRotationStatus(ctx, &awskms.GetKeyRotationStatusInput{KeyId: md.KeyId})
	if err != nil || !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 || st.NextRotationDate == nil {
		t.Fatalf("GetKeyRotationStatus: %v %+v", err, st)
	}
	if _, err := c.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: md.KeyId}); err != nil {
		t.Fatalf("RotateKeyOnDemand: %v", err)
	}
	dec, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: before.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "v1" {
		t.Fatalf("Decrypt of a pre-rotation blob: %v", err)
	}
	if _, err := c.DisableKeyRotation(ctx, &awskms.DisableKeyRotationInput{KeyId: md.KeyId}); err != nil {
		t.Fatalf("DisableKeyRotation: %v", err)
	}
	st, err = c.GetKeyRotationStatus(ctx, &awskms.GetKeyRotationStatusInput{KeyId: md.KeyId})
	if err != nil || st.KeyRotationEnabled {
		t.Fatalf("GetKeyRotationStatus after disable: %v %+v", err, st)
	}
	if _, err := c.DeleteAlias(ctx, &awskms.DeleteAliasInput{AliasName: aws.String("alias/app-data")}); err != nil {
		t.Fatalf("DeleteAlias: %v", err)
	}
	var nfe *types.NotFoundException
	if _, err := c.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String("alias/app-data")}); !errors.As(err, &nfe) {
		t.Errorf("DescribeKey via a deleted alias: got %v, want NotFoundException", err)
	}
}

func TestGrants(t *testing.T) {
	env := startServer(t, Options{})
	ctx := context.Background()
	owner, other := newClient(env.url, admin), newClient(env.url, reader)
	md := createKey(t, owner, "shared")
	encCtx := map[string]string{"vol": "v1"}
	gdk, err := owner.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: md.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: encCtx})
	if err != nil {
		t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	decrypt := func() error {
		_, err := other.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx})
		return err
	}
	if err := decrypt(); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("second principal without a grant: got %v, want AccessDeniedException", err)
	}
	if _, err := other.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: md.KeyId}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("second principal disabling the owner's key: got %v, want AccessDeniedException", err)
	}
	g, err := owner.CreateGrant(ctx, &awskms.CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: aws.String(reader.Name),
		Operations: []types.GrantOperation{types.GrantOperationDecrypt, types.GrantOperationDescribeKey}})
	if err != nil {
		t.Fatalf("CreateGrant: %v", err)
	}
	if aws.ToString(g.GrantId) == "" || aws.ToString(g.GrantToken) == "" {
		t.Fatalf("CreateGrant returned an empty id or token: %+v", g)
	}
	if err := decrypt(); err != nil {
		t.Fatalf("Decrypt with a grant: %v", err)
	}
	lg, err := owner.ListGrants(ctx, &awskms.ListGrantsInput{KeyId: md.KeyId})
	if err != nil || len(lg.Grants) != 1 || aws.ToString(lg.Grants[0].GrantId) != aws.ToString(g.GrantId) ||
		aws.ToString(lg.Grants[0].GranteePrincipal) != "arn:aws:iam::000000000000:user/"+reader.Name || len(lg.Grants[0].Operations) != 2 {
		t.Fatalf("ListGrants: %v %+v", err, lg)
	}
	if _, err := owner.RevokeGrant(ctx, &awskms.RevokeGrantInput{KeyId: md.KeyId, GrantId: g.GrantId}); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	if err := decrypt(); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("Decrypt after RevokeGrant: got %v, want AccessDeniedException", err)
	}
}

func TestAuthenticationFailures(t *testing.T) {
	env := startServer(t, Options{})
	ctx := context.Background()
	badSecret := admin
	badSecret.SecretAccessKey = "not-the-right-secret-at-all-000"
	if _, err := newClient(env.url, badSecret).ListKeys(ctx, &awskms.ListKeysInput{}); apiCode(err) != "InvalidSignatureException" {
		t.Errorf("bad secret: got %v, want InvalidSignatureException", err)
	}
	unknown := Principal{Name: "x", AccessKeyID: "AKIDNOBODY000000001", SecretAccessKey: admin.SecretAccessKey}
	if _, err := newClient(env.url, unknown).ListKeys(ctx, &awskms.ListKeysInput{}); apiCode(err) != "UnrecognizedClientException" {
		t.Errorf("unknown access key: got %v, want UnrecognizedClientException", err)
	}
	if _, err := newClient(env.url, admin).Sign(ctx, &awskms.SignInput{KeyId: aws.String("k"), Message: []byte("m"), SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}); apiCode(err) != "UnknownOperationException" {
		t.Errorf("unsupported operation: got %v, want UnknownOperationException", err)
	}
}

// rawCall sends a hand-built, hand-signed request so tests can break the
// signature in ways an SDK never would.
type rawCall struct {
	target, body    string
	p               Principal
	region, service string
	at              time.Time
	unsigned        bool
	prepare         func(*http.Request) // applied before signing
	mutate          func(*http.Request) // applied after signing
	client          *http.Client        // http.DefaultClient if nil
}

func (rc rawCall) do(t *testing.T, url string) (int, string, string) {
	t.Helper()
	if rc.target == "" {
		rc.target = "TrentService.ListKeys"
	}
	if rc.body == "" {
		rc.body = "{}"
	}
	if rc.region == "" {
		rc.region = testRegion
	}
	if rc.service == "" {
		rc.service = "kms"
	}
	if rc.at.IsZero() {
		rc.at = time.Now()
	}
	signer := rc.p
	if signer.AccessKeyID == "" {
		signer = admin
	}
	req, err := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(rc.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Target", rc.target)
	if rc.prepare != nil {
		rc.prepare(req)
	}
	if !rc.unsigned {
		sign(t, req, rc.body, signer, rc.service, rc.region, rc.at)
	}
	if rc.mutate != nil {
		rc.mutate(req)
	}
	client := rc.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb errorBody
	_ = json.Unmarshal(raw, &eb)
	if resp.Header.Get("x-amzn-RequestId") == "" {
		t.Errorf("response has no x-amzn-RequestId header")
	}
	return resp.StatusCode, eb.Type, string(raw)
}

// sign signs req, whose body is body, as p would with the SDK's signer.
func sign(tb testing.TB, req *http.Request, body string, p Principal, service, region string, at time.Time) {
	tb.Helper()
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, region, at); err != nil {
		tb.Fatal(err)
	}
}

func TestSignatureVerification(t *testing.T) {
	env := startServer(t, Options{Region: testRegion})
	cases := []struct {
		name     string
		call     rawCall
		wantCode string
	}{
		{"valid", rawCall{}, ""},
		{"skew within 5 minutes", rawCall{at: time.Now().Add(-3 * time.Minute)}, ""},
		{"signed 10 minutes ago", rawCall{at: time.Now().Add(-10 * time.Minute)}, "InvalidSignatureException"},
		{"signed 10 minutes ahead", rawCall{at: time.Now().Add(10 * time.Minute)}, "InvalidSignatureException"},
		{"wrong service", rawCall{service: "s3"}, "InvalidSignatureException"},
		{"wrong region", rawCall{region: "eu-west-1"}, "InvalidSignatureException"},
		{"unknown access key", rawCall{p: Principal{AccessKeyID: "AKIDUNKNOWN00000001", SecretAccessKey: "x"}}, "UnrecognizedClientException"},
		{"no Authorization header", rawCall{unsigned: true}, "MissingAuthenticationTokenException"},
		{"garbage Authorization header", rawCall{mutate: func(r *http.Request) { r.Header.Set("Authorization", "Basic YWRtaW46YWRtaW4=") }}, "IncompleteSignatureException"},
		{"body changed after signing", rawCall{body: `{"Limit":5}`, mutate: func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(`{"Limit":6}`))
		}}, "InvalidSignatureException"},
		{"signed header changed", rawCall{mutate: func(r *http.Request) { r.Header.Set("X-Amz-Target", "TrentService.ListAliases") }}, "InvalidSignatureException"},
		{"signed header removed", rawCall{mutate: func(r *http.Request) { r.Header.Del("Content-Type") }}, "InvalidSignatureException"},
		{"date header changed", rawCall{mutate: func(r *http.Request) {
			r.Header.Set("X-Amz-Date", time.Now().Add(time.Second*2).UTC().Format(amzDateFormat))
		}}, "InvalidSignatureException"},
		{"session token", rawCall{mutate: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "tok") }}, "UnrecognizedClientException"},
		{"unknown operation", rawCall{target: "TrentService.NoSuchThing"}, "UnknownOperationException"},
		{"not a KMS target", rawCall{target: "DynamoDB_20120810.ListTables"}, "UnknownOperationException"},
		{"malformed JSON", rawCall{body: `{"Limit":`}, "SerializationException"},
		{"wrong JSON type", rawCall{target: "TrentService.DescribeKey", body: `{"KeyId":5}`}, "SerializationException"},
		{"missing required member", rawCall{target: "TrentService.DescribeKey"}, "ValidationException"},
		{"bad limit", rawCall{body: `{"Limit":0}`}, "ValidationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, code, body := tc.call.do(t, env.url)
			if tc.wantCode == "" {
				if status != http.StatusOK {
					t.Fatalf("status %d, body %s; want 200", status, body)
				}
				return
			}
			if status != http.StatusBadRequest || code != tc.wantCode {
				t.Fatalf("status %d, __type %q (body %s); want 400 %s", status, code, body, tc.wantCode)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	env := startServer(t, Options{MaxBody: 4096})
	big := `{"KeyId":"` + strings.Repeat("a", 8192) + `"}`
	status, code, body := rawCall{target: "TrentService.DescribeKey", body: big}.do(t, env.url)
	if status != http.StatusRequestEntityTooLarge || code != "ValidationException" {
		t.Fatalf("oversize body: status %d __type %q (%s); want 413 ValidationException", status, code, body)
	}
	// Without Content-Length (chunked) the limit still holds.
	status, code, _ = rawCall{target: "TrentService.DescribeKey", body: big, prepare: func(r *http.Request) {
		r.ContentLength = -1
		r.Body = io.NopCloser(strings.NewReader(big))
	}}.do(t, env.url)
	if status != http.StatusRequestEntityTooLarge || code != "ValidationException" {
		t.Fatalf("chunked oversize body: status %d __type %q; want 413 ValidationException", status, code)
	}

	env = startServer(t, Options{})
	huge := `{"KeyId":"` + strings.Repeat("a", 2<<20) + `"}`
	if status, code, _ := (rawCall{target: "TrentService.DescribeKey", body: huge}).do(t, env.url); status != http.StatusRequestEntityTooLarge || code != "ValidationException" {
		t.Fatalf("2 MiB body with the default limit: status %d __type %q", status, code)
	}
}

func TestMethodAndPath(t *testing.T) {
	env := startServer(t, Options{})
	resp, err := http.Get(env.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /: status %d, want 405", resp.StatusCode)
	}
}
