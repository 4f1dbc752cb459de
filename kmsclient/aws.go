package kmsclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/encvol/encvol/keywrap"
)

// Tuning of the remote backend. A volume's key monitor calls the KMS every
// few seconds and must learn quickly that it is unreachable, so retries are
// few and short; key-state answers are never retried at all.
const (
	awsMaxAttempts    = 3
	awsMaxBackoff     = 250 * time.Millisecond
	awsDialTimeout    = 5 * time.Second
	awsTLSTimeout     = 5 * time.Second
	awsDefaultTimeout = 30 * time.Second // per call, when ctx has no deadline
	// awsSigningRegion signs requests to an explicit endpoint when the
	// configuration names no region (encvol kms serve accepts any region
	// its principals sign with, AWS itself needs the right one).
	awsSigningRegion = "us-east-1"
)

// awsBackend speaks the AWS KMS JSON protocol through aws-sdk-go-v2.
type awsBackend struct {
	name      string
	endpoint  string
	kms       *awskms.Client
	transport *transportRef
}

var _ Admin = (*awsBackend)(nil)

func newAWS(ctx context.Context, name string, cfg Config) (*awsBackend, error) {
	hc, ref, err := newHTTPClient(cfg.CAFile)
	if err != nil {
		return nil, &Error{Kind: ErrInvalidRequest, Op: "configure", KMS: name, Message: err.Error(), Err: err}
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(hc),
		awsconfig.WithRetryer(newRetryer),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	} else {
		opts = append(opts, awsconfig.WithDefaultRegion(awsSigningRegion))
	}
	if cfg.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.CredentialsFile != "" {
		opts = append(opts, awsconfig.WithSharedCredentialsFiles([]string{cfg.CredentialsFile}))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, &Error{Kind: ErrInvalidRequest, Op: "load AWS configuration", KMS: name, Message: err.Error(), Err: err}
	}
	client := awskms.NewFromConfig(ac, func(o *awskms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.APIOptions = append(o.APIOptions, addKeyCheckHeader, addGrantsHeader)
	})
	return &awsBackend{name: name, endpoint: cfg.Endpoint, kms: client, transport: ref}, nil
}

// newHTTPClient trusts the system roots plus caFile, and bounds dialing
// and TLS handshakes so a dead endpoint is reported quickly. It must be the
// SDK's BuildableClient: the SDK adds AWS_CA_BUNDLE to it (appending to our
// roots) and refuses any other client type when that variable is set.
func newHTTPClient(caFile string) (*awshttp.BuildableClient, *transportRef, error) {
	var pool *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("ca_file: %w", err)
		}
		pool, err = x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("ca_file %s holds no PEM certificate", caFile)
		}
	}
	ref := &transportRef{}
	hc := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = awsDialTimeout }).
		WithTransportOptions(func(tr *http.Transport) {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			if pool != nil {
				tr.TLSClientConfig.RootCAs = pool.Clone()
			}
			tr.TLSHandshakeTimeout = awsTLSTimeout
			tr.MaxIdleConnsPerHost = 16
			ref.set(tr)
		})
	return hc, ref, nil
}

// transportRef remembers the transport the SDK's client was built with, so
// Close can drop its idle connections.
type transportRef struct {
	mu sync.Mutex
	tr []*http.Transport
}

func (r *transportRef) set(tr *http.Transport) {
	r.mu.Lock()
	r.tr = append(r.tr, tr)
	r.mu.Unlock()
}

func (r *transportRef) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, tr := range r.tr {
		tr.CloseIdleConnections()
	}
}

// newRetryer: at most 3 attempts with short backoff, no client-side retry
// quota (a monitor polling a dead KMS must not exhaust it and then fail
// with a quota error instead of the network error), and never a retry for
// an answer that states the key's condition: retrying "disabled" only
// delays revocation.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = awsMaxAttempts
		o.MaxBackoff = awsMaxBackoff
		o.RateLimiter = ratelimit.None
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(noRetryForAnswers)}, o.Retryables...)
	})
}

func noRetryForAnswers(err error) aws.Ternary {
	if ans, ok := classifyAPIError(err); ok && ans.kind != ErrUnreachable {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// classifyAPIError maps an error answer of the KMS to a sentinel; ok is
// false when err is no answer at all (transport failure).
func classifyAPIError(err error) (apiAnswer, bool) {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return apiAnswer{}, false
	}
	code, msg := apiErr.ErrorCode(), apiErr.ErrorMessage()
	kind := kindForCode(code, msg)
	// An unknown code with a 5xx status (a proxy or load balancer in front
	// of the KMS) says nothing about the key.
	var respErr *awshttp.ResponseError
	if kind == ErrInvalidRequest && errors.As(err, &respErr) && respErr.HTTPStatusCode() >= 500 {
		kind = ErrUnreachable
	}
	return apiAnswer{kind: kind, code: code, msg: msg}, true
}

// apiAnswer is a classified error answer of the KMS.
type apiAnswer struct {
	kind      error
	code, msg string
}

// call bounds ctx by the default per-call timeout when it has no deadline.
func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, awsDefaultTimeout)
}

// wrap classifies an SDK error into an *Error.
func (b *awsBackend) wrap(op, keyRef string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, KMS: b.name, KeyID: keyRef, Err: err}
	var paramErr smithy.InvalidParamsError
	if ans, ok := classifyAPIError(err); ok {
		e.Kind, e.Code, e.Message = ans.kind, ans.code, ans.msg
		return e
	}
	switch {
	case errors.As(err, &paramErr):
		e.Kind, e.Message = ErrInvalidRequest, paramErr.Error()
	default:
		e.Kind, e.Message = ErrUnreachable, transportMessage(b.endpoint, err)
	}
	return e
}

// transportMessage explains a failure that produced no KMS answer.
func transportMessage(endpoint string, err error) string {
	where := "the KMS"
	if endpoint != "" {
		where = endpoint
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var urlErr *url.Error
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return fmt.Sprintf("TLS certificate of %s is not trusted (set ca_file to the CA that signed it): %v", where, rootCause(err))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf("no answer from %s in time", where)
	case errors.Is(err, context.Canceled):
		return "call cancelled"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s: %v", where, dnsErr)
	case errors.As(err, &opErr):
		return fmt.Sprintf("cannot connect to %s: %v", where, opErr)
	case errors.As(err, &urlErr):
		return fmt.Sprintf("cannot talk to %s: %v", where, urlErr.Err)
	}
	return fmt.Sprintf("no usable answer from %s: %v", where, err)
}

func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// GenerateDataKey and Decrypt run under keywrap.Secretly, so the SDK's
// decoded copies of the plaintext (JSON and base64 buffers made on this
// goroutine) are erased once unreachable. Bytes the HTTP transport read
// on its own goroutine are outside that protection.
func (b *awsBackend) GenerateDataKey(ctx context.Context, keyRef string, encCtx map[string]string) (dk *keywrap.Key, blob []byte, arn string, err error) {
	keywrap.Secretly(func() { dk, blob, arn, err = b.generateDataKey(ctx, keyRef, encCtx) })
	return dk, blob, arn, err
}

func (b *awsBackend) Decrypt(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (dk *keywrap.Key, err error) {
	keywrap.Secretly(func() { dk, err = b.decrypt(ctx, keyRef, blob, encCtx) })
	return dk, err
}

func (b *awsBackend) generateDataKey(ctx context.Context, keyRef string, encCtx map[string]string) (*keywrap.Key, []byte, string, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	out, err := b.kms.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
		KeyId: aws.String(keyRef), NumberOfBytes: aws.Int32(DataKeySize), EncryptionContext: encCtx,
	})
	if err != nil {
		return nil, nil, "", b.wrap("GenerateDataKey", keyRef, err)
	}
	dk, err := lockDataKey(out.Plaintext)
	if err != nil {
		return nil, nil, "", &Error{Kind: ErrInvalidRequest, Op: "GenerateDataKey", KMS: b.name, KeyID: keyRef, Message: err.Error(), Err: err}
	}
	return dk, out.CiphertextBlob, aws.ToString(out.KeyId), nil
}

func (b *awsBackend) decrypt(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (*keywrap.Key, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	in := &awskms.DecryptInput{CiphertextBlob: blob, EncryptionContext: encCtx}
	if keyRef != "" {
		in.KeyId = aws.String(keyRef)
	}
	out, err := b.kms.Decrypt(ctx, in)
	if err != nil {
		return nil, b.wrap("Decrypt", keyRef, err)
	}
	dk, err := lockDataKey(out.Plaintext)
	if err != nil {
		return nil, &Error{Kind: ErrInvalidCiphertext, Op: "Decrypt", KMS: b.name, KeyID: keyRef, Message: err.Error(), Err: err}
	}
	return dk, nil
}

func (b *awsBackend) DescribeKey(ctx context.Context, keyRef string) (KeyInfo, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	out, err := b.kms.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String(keyRef)})
	if err != nil {
		return KeyInfo{}, b.wrap("DescribeKey", keyRef, err)
	}
	if out.KeyMetadata == nil {
		return KeyInfo{}, &Error{Kind: ErrUnreachable, Op: "DescribeKey", KMS: b.name, KeyID: keyRef, Message: "answer has no KeyMetadata"}
	}
	return keyInfoFromAWS(out.KeyMetadata), nil
}

func (b *awsBackend) DefaultKey(ctx context.Context) (string, error) {
	info, err := b.DescribeKey(ctx, DefaultKeyAlias)
	if errors.Is(err, ErrNotFound) {
		return "", &Error{Kind: ErrNotFound, Op: "find the default key", KMS: b.name, KeyID: DefaultKeyAlias,
			Message: fmt.Sprintf("this KMS has no %s; pass --key KEY, or create it with `encvol kms create-key --kms %s --alias %s`",
				DefaultKeyAlias, b.name, DefaultKeyAlias), Err: err}
	}
	if err != nil {
		return "", err
	}
	return info.Arn, nil
}

func (b *awsBackend) Close() error {
	b.transport.closeIdle()
	return nil
}

func (b *awsBackend) CreateKey(ctx context.Context, in CreateKeyInput) (KeyInfo, error) {
	if in.Alias != "" {
		return b.createKeyWithAlias(ctx, in)
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	origin := types.OriginTypeAwsKms
	if in.Origin == OriginExternal {
		origin = types.OriginTypeExternal
	} else if in.Origin != "" && in.Origin != OriginGenerated {
		return KeyInfo{}, &Error{Kind: ErrInvalidRequest, Op: "CreateKey", KMS: b.name,
			Message: fmt.Sprintf("origin %q is not %s or %s", in.Origin, OriginGenerated, OriginExternal)}
	}
	req := &awskms.CreateKeyInput{
		KeyUsage: types.KeyUsageTypeEncryptDecrypt, KeySpec: types.KeySpecSymmetricDefault, Origin: origin,
	}
	if in.Description != "" {
		req.Description = aws.String(in.Description)
	}
	out, err := b.kms.CreateKey(ctx, req)
	if err != nil {
		return KeyInfo{}, b.wrap("CreateKey", "", err)
	}
	if out.KeyMetadata == nil {
		return KeyInfo{}, &Error{Kind: ErrUnreachable, Op: "CreateKey", KMS: b.name, Message: "answer has no KeyMetadata"}
	}
	return keyInfoFromAWS(out.KeyMetadata), nil
}

func (b *awsBackend) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	var out []KeyInfo
	p := awskms.NewListKeysPaginator(b.kms, &awskms.ListKeysInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, b.wrap("ListKeys", "", err)
		}
		for _, k := range page.Keys {
			id := aws.ToString(k.KeyId)
			info, err := b.DescribeKey(ctx, id)
			switch {
			case errors.Is(err, ErrNotFound):
				continue
			case errors.Is(err, ErrAccessDenied):
				// Listed but not ours to describe: show what we know.
				out = append(out, KeyInfo{KeyID: id, Arn: aws.ToString(k.KeyArn)})
				continue
			case err != nil:
				return nil, err
			}
			out = append(out, info)
		}
	}
	return out, nil
}

func (b *awsBackend) EnableKey(ctx context.Context, keyRef string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: aws.String(keyRef)})
	return b.wrap("EnableKey", keyRef, err)
}

func (b *awsBackend) DisableKey(ctx context.Context, keyRef string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: aws.String(keyRef)})
	return b.wrap("DisableKey", keyRef, err)
}

func (b *awsBackend) ScheduleKeyDeletion(ctx context.Context, keyRef string, days int) (time.Time, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	if days < 7 || days > 30 {
		return time.Time{}, &Error{Kind: ErrInvalidRequest, Op: "ScheduleKeyDeletion", KMS: b.name, KeyID: keyRef,
			Message: fmt.Sprintf("pending window %d days is outside 7..30", days)}
	}
	out, err := b.kms.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{
		KeyId: aws.String(keyRef), PendingWindowInDays: aws.Int32(int32(days)),
	})
	if err != nil {
		return time.Time{}, b.wrap("ScheduleKeyDeletion", keyRef, err)
	}
	return aws.ToTime(out.DeletionDate), nil
}

func (b *awsBackend) CancelKeyDeletion(ctx context.Context, keyRef string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.CancelKeyDeletion(ctx, &awskms.CancelKeyDeletionInput{KeyId: aws.String(keyRef)})
	return b.wrap("CancelKeyDeletion", keyRef, err)
}

func (b *awsBackend) RotateKey(ctx context.Context, keyRef string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: aws.String(keyRef)})
	return b.wrap("RotateKeyOnDemand", keyRef, err)
}

func (b *awsBackend) CreateAlias(ctx context.Context, alias, keyRef string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.CreateAlias(ctx, &awskms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyRef)})
	return b.wrap("CreateAlias", keyRef, err)
}

func (b *awsBackend) ListAliases(ctx context.Context, keyRef string) ([]AliasInfo, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	in := &awskms.ListAliasesInput{}
	if keyRef != "" {
		in.KeyId = aws.String(keyRef)
	}
	var out []AliasInfo
	p := awskms.NewListAliasesPaginator(b.kms, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, b.wrap("ListAliases", keyRef, err)
		}
		for _, a := range page.Aliases {
			out = append(out, AliasInfo{Name: aws.ToString(a.AliasName), Arn: aws.ToString(a.AliasArn), TargetKeyID: aws.ToString(a.TargetKeyId)})
		}
	}
	return out, nil
}

func (b *awsBackend) CreateGrant(ctx context.Context, in GrantInput) (string, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	req := &awskms.CreateGrantInput{KeyId: aws.String(in.KeyRef), GranteePrincipal: aws.String(in.Grantee)}
	for _, op := range in.Operations {
		req.Operations = append(req.Operations, types.GrantOperation(op))
	}
	if in.RetiringPrincipal != "" {
		req.RetiringPrincipal = aws.String(in.RetiringPrincipal)
	}
	if in.Name != "" {
		req.Name = aws.String(in.Name)
	}
	if c := in.Constraints; c != nil {
		req.Constraints = &types.GrantConstraints{EncryptionContextEquals: c.EncryptionContextEquals, EncryptionContextSubset: c.EncryptionContextSubset}
	}
	out, err := b.kms.CreateGrant(ctx, req)
	if err != nil {
		return "", b.wrap("CreateGrant", in.KeyRef, err)
	}
	return aws.ToString(out.GrantId), nil
}

func (b *awsBackend) ListGrants(ctx context.Context, keyRef string) ([]GrantInfo, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	var out []GrantInfo
	p := awskms.NewListGrantsPaginator(b.kms, &awskms.ListGrantsInput{KeyId: aws.String(keyRef)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, b.wrap("ListGrants", keyRef, err)
		}
		for _, g := range page.Grants {
			gi := GrantInfo{GrantID: aws.ToString(g.GrantId), KeyID: aws.ToString(g.KeyId), Name: aws.ToString(g.Name),
				Grantee: aws.ToString(g.GranteePrincipal), RetiringPrincipal: aws.ToString(g.RetiringPrincipal),
				Created: aws.ToTime(g.CreationDate)}
			for _, op := range g.Operations {
				gi.Operations = append(gi.Operations, string(op))
			}
			if c := g.Constraints; c != nil && (len(c.EncryptionContextEquals) > 0 || len(c.EncryptionContextSubset) > 0) {
				gi.Constraints = &GrantConstraints{EncryptionContextEquals: c.EncryptionContextEquals, EncryptionContextSubset: c.EncryptionContextSubset}
			}
			out = append(out, gi)
		}
	}
	return out, nil
}

func (b *awsBackend) RevokeGrant(ctx context.Context, keyRef, grantID string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.RevokeGrant(ctx, &awskms.RevokeGrantInput{KeyId: aws.String(keyRef), GrantId: aws.String(grantID)})
	return b.wrap("RevokeGrant", keyRef, err)
}

func (b *awsBackend) GetParametersForImport(ctx context.Context, keyRef string) (ImportParams, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	out, err := b.kms.GetParametersForImport(ctx, &awskms.GetParametersForImportInput{
		KeyId: aws.String(keyRef), WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha256, WrappingKeySpec: types.WrappingKeySpecRsa2048,
	})
	if err != nil {
		return ImportParams{}, b.wrap("GetParametersForImport", keyRef, err)
	}
	return ImportParams{ImportToken: out.ImportToken, PublicKeyDER: out.PublicKey, ValidTo: aws.ToTime(out.ParametersValidTo)}, nil
}

func (b *awsBackend) ImportKeyMaterial(ctx context.Context, keyRef string, importToken, encryptedMaterial []byte) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := b.kms.ImportKeyMaterial(ctx, &awskms.ImportKeyMaterialInput{
		KeyId: aws.String(keyRef), ImportToken: importToken, EncryptedKeyMaterial: encryptedMaterial,
		ExpirationModel: types.ExpirationModelTypeKeyMaterialDoesNotExpire,
	})
	return b.wrap("ImportKeyMaterial", keyRef, err)
}

func (b *awsBackend) Audit(context.Context, AuditFilter) ([]AuditRecord, error) {
	return nil, &Error{Kind: ErrUnsupported, Op: "read audit log", KMS: b.name,
		Message: "a remote KMS keeps its audit log on its own host: on the KMS server host run 'encvol kms audit --kms NAME', where NAME is a local KMS whose path is the directory given to 'encvol kms serve --store'"}
}

func keyInfoFromAWS(md *types.KeyMetadata) KeyInfo {
	return KeyInfo{
		KeyID: aws.ToString(md.KeyId), Arn: aws.ToString(md.Arn), State: string(md.KeyState), Origin: string(md.Origin),
		KeyManager: string(md.KeyManager), Description: aws.ToString(md.Description), Enabled: md.Enabled,
		KeySpec: string(md.KeySpec), KeyUsage: string(md.KeyUsage), Created: aws.ToTime(md.CreationDate),
		DeletionDate: md.DeletionDate,
	}
}
