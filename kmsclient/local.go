package kmsclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
)

// local is the embedded backend: a *kms.Store opened in this process,
// acting as kms.LocalPrincipal (the owner of every key it creates).
type local struct {
	name  string
	store *kms.Store

	sealMu      sync.Mutex // orders DropSealKey and withSeal
	sealDropped bool       // DropSealKey was called (sealdrop.go)
}

var _ Admin = (*local)(nil)

func newLocal(_ context.Context, name string, cfg Config) (*local, error) {
	opt, err := cfg.storeOptions()
	if err != nil {
		return nil, &Error{Kind: ErrInvalidRequest, Op: "configure", KMS: name, Message: err.Error(), Err: err}
	}
	st, err := kms.Open(cfg.Path, opt)
	if err != nil {
		return nil, &Error{Kind: storeKind(err), Op: "open key store", KMS: name, Code: kms.ErrorCode(err),
			Message: fmt.Sprintf("key store %s: %v", cfg.Path, err), Err: err}
	}
	return &local{name: name, store: st}, nil
}

// storeKind classifies an error that did not come from a key operation
// (opening the store, I/O): a store that cannot be read is "unavailable",
// never "revoked", so the key gate treats it like a network outage.
func storeKind(err error) error {
	if code := kms.ErrorCode(err); code != "" {
		return kindForCode(code, err.Error())
	}
	return ErrUnreachable
}

// wrap turns a store error into an *Error naming op and key.
func (l *local) wrap(op, keyRef string, err error) error {
	if err == nil {
		return nil
	}
	var ke *kms.Error
	if errors.As(err, &ke) {
		return &Error{Kind: kindForCode(ke.Code, ke.Message), Op: op, KMS: l.name, KeyID: keyRef,
			Code: ke.Code, Message: ke.Message, Err: err}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Kind: ErrUnreachable, Op: op, KMS: l.name, KeyID: keyRef, Message: "cancelled", Err: err}
	}
	return &Error{Kind: ErrUnreachable, Op: op, KMS: l.name, KeyID: keyRef, Message: err.Error(), Err: err}
}

// GenerateDataKey and Decrypt run under keywrap.Secretly: with
// runtime/secret compiled in, the store's transient copies of key material
// (unsealed CMK version, plaintext DK) are erased, not just dropped.
func (l *local) GenerateDataKey(ctx context.Context, keyRef string, encCtx map[string]string) (dk *keywrap.Key, blob []byte, arn string, err error) {
	keywrap.Secretly(func() { dk, blob, arn, err = l.generateDataKey(ctx, keyRef, encCtx) })
	return dk, blob, arn, err
}

func (l *local) Decrypt(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (dk *keywrap.Key, err error) {
	keywrap.Secretly(func() { dk, err = l.decrypt(ctx, keyRef, blob, encCtx) })
	return dk, err
}

func (l *local) generateDataKey(ctx context.Context, keyRef string, encCtx map[string]string) (*keywrap.Key, []byte, string, error) {
	var pt, blob []byte
	var arn string
	err := l.withSeal(func() (err error) {
		pt, blob, arn, err = l.store.GenerateDataKey(ctx, kms.LocalPrincipal, keyRef, DataKeySize, encCtx)
		return err
	})
	if err != nil {
		clear(pt)
		return nil, nil, "", l.wrap("GenerateDataKey", keyRef, err)
	}
	dk, err := lockDataKey(pt)
	if err != nil {
		return nil, nil, "", &Error{Kind: ErrInvalidRequest, Op: "GenerateDataKey", KMS: l.name, KeyID: keyRef, Message: err.Error(), Err: err}
	}
	return dk, blob, arn, nil
}

func (l *local) decrypt(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (*keywrap.Key, error) {
	var chk *KeyCheck
	if c, ok := KeyCheckOf(ctx); ok {
		chk = &c
	}
	var pt []byte
	var grants []string
	err := l.withSeal(func() (err error) {
		pt, _, grants, err = l.store.DecryptVia(ctx, kms.LocalPrincipal, blob, encCtx, keyRef, chk)
		return err
	})
	if err != nil {
		clear(pt)
		return nil, l.wrap("Decrypt", keyRef, err)
	}
	ReportDecryptAccess(ctx, grants)
	dk, err := lockDataKey(pt)
	if err != nil {
		return nil, &Error{Kind: ErrInvalidCiphertext, Op: "Decrypt", KMS: l.name, KeyID: keyRef, Message: err.Error(), Err: err}
	}
	return dk, nil
}

func (l *local) DescribeKey(ctx context.Context, keyRef string) (KeyInfo, error) {
	md, err := l.store.DescribeKey(ctx, kms.LocalPrincipal, keyRef)
	if err != nil {
		return KeyInfo{}, l.wrap("DescribeKey", keyRef, err)
	}
	return keyInfoFromStore(md), nil
}

func (l *local) DefaultKey(ctx context.Context) (string, error) {
	md, err := l.store.ServiceKey(ctx, kms.LocalPrincipal)
	if err != nil {
		return "", l.wrap("create service key", DefaultKeyAlias, err)
	}
	return md.Arn, nil
}

func (l *local) Close() error { return l.store.Close() }

func (l *local) CreateKey(ctx context.Context, in CreateKeyInput) (KeyInfo, error) {
	origin := in.Origin
	if origin == "" {
		origin = OriginGenerated
	}
	req := kms.CreateKeyInput{Description: in.Description, KeyUsage: "ENCRYPT_DECRYPT", KeySpec: "SYMMETRIC_DEFAULT", Origin: origin}
	var md kms.KeyMetadata
	var err error
	if in.Alias != "" {
		// One store transaction: a taken alias creates nothing.
		md, err = l.store.CreateKeyWithAlias(ctx, kms.LocalPrincipal, req, in.Alias)
	} else {
		md, err = l.store.CreateKey(ctx, kms.LocalPrincipal, req)
	}
	if err != nil {
		err = l.wrap("CreateKey", in.Alias, err)
		if errors.Is(err, ErrAlreadyExists) {
			taken := &AliasTakenError{Alias: in.Alias, KMS: l.name, Err: err}
			if md, derr := l.store.DescribeKey(ctx, kms.LocalPrincipal, in.Alias); derr == nil {
				taken.TargetKeyID = md.KeyID
			}
			return KeyInfo{}, taken
		}
		return KeyInfo{}, err
	}
	return keyInfoFromStore(md), nil
}

func (l *local) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	entries, err := l.store.ListKeys(ctx, kms.LocalPrincipal)
	if err != nil {
		return nil, l.wrap("ListKeys", "", err)
	}
	out := make([]KeyInfo, 0, len(entries))
	for _, e := range entries {
		md, err := l.store.DescribeKey(ctx, kms.LocalPrincipal, e.KeyID)
		if err != nil {
			// A key deleted between the two calls is simply gone.
			if kms.ErrorCode(err) == "NotFoundException" {
				continue
			}
			return nil, l.wrap("DescribeKey", e.KeyID, err)
		}
		out = append(out, keyInfoFromStore(md))
	}
	return out, nil
}

func (l *local) EnableKey(ctx context.Context, keyRef string) error {
	return l.wrap("EnableKey", keyRef, l.store.EnableKey(ctx, kms.LocalPrincipal, keyRef))
}

func (l *local) DisableKey(ctx context.Context, keyRef string) error {
	return l.wrap("DisableKey", keyRef, l.store.DisableKey(ctx, kms.LocalPrincipal, keyRef))
}

func (l *local) ScheduleKeyDeletion(ctx context.Context, keyRef string, days int) (time.Time, error) {
	t, err := l.store.ScheduleKeyDeletion(ctx, kms.LocalPrincipal, keyRef, days)
	return t, l.wrap("ScheduleKeyDeletion", keyRef, err)
}

func (l *local) CancelKeyDeletion(ctx context.Context, keyRef string) error {
	return l.wrap("CancelKeyDeletion", keyRef, l.store.CancelKeyDeletion(ctx, kms.LocalPrincipal, keyRef))
}

func (l *local) RotateKey(ctx context.Context, keyRef string) error {
	return l.wrap("RotateKeyOnDemand", keyRef, l.store.RotateKeyOnDemand(ctx, kms.LocalPrincipal, keyRef))
}

func (l *local) CreateAlias(ctx context.Context, alias, keyRef string) error {
	return l.wrap("CreateAlias", keyRef, l.store.CreateAlias(ctx, kms.LocalPrincipal, alias, keyRef))
}

func (l *local) ListAliases(ctx context.Context, keyRef string) ([]AliasInfo, error) {
	entries, err := l.store.ListAliases(ctx, kms.LocalPrincipal, keyRef)
	if err != nil {
		return nil, l.wrap("ListAliases", keyRef, err)
	}
	out := make([]AliasInfo, 0, len(entries))
	for _, e := range entries {
		out = append(out, AliasInfo{Name: e.AliasName, Arn: e.AliasArn, TargetKeyID: e.TargetKeyID})
	}
	return out, nil
}

func (l *local) CreateGrant(ctx context.Context, in GrantInput) (string, error) {
	id, _, err := l.store.CreateGrant(ctx, kms.LocalPrincipal, kms.GrantInput{
		KeyRef: in.KeyRef, GranteePrincipal: in.Grantee, RetiringPrincipal: in.RetiringPrincipal,
		Operations: in.Operations, Name: in.Name, Constraints: in.Constraints,
	})
	return id, l.wrap("CreateGrant", in.KeyRef, err)
}

func (l *local) ListGrants(ctx context.Context, keyRef string) ([]GrantInfo, error) {
	grants, err := l.store.ListGrants(ctx, kms.LocalPrincipal, keyRef)
	if err != nil {
		return nil, l.wrap("ListGrants", keyRef, err)
	}
	out := make([]GrantInfo, 0, len(grants))
	for _, g := range grants {
		out = append(out, GrantInfo{GrantID: g.GrantID, KeyID: g.KeyID, Name: g.Name, Grantee: g.GranteePrincipal,
			RetiringPrincipal: g.RetiringPrincipal, Operations: g.Operations, Constraints: g.Constraints, Created: g.CreationDate})
	}
	return out, nil
}

func (l *local) RevokeGrant(ctx context.Context, keyRef, grantID string) error {
	return l.wrap("RevokeGrant", keyRef, l.store.RevokeGrant(ctx, kms.LocalPrincipal, keyRef, grantID))
}

func (l *local) GetParametersForImport(ctx context.Context, keyRef string) (ImportParams, error) {
	p, err := l.store.GetParametersForImport(ctx, kms.LocalPrincipal, keyRef, ImportWrappingAlgorithm, ImportWrappingKeySpec)
	if err != nil {
		return ImportParams{}, l.wrap("GetParametersForImport", keyRef, err)
	}
	return ImportParams{ImportToken: p.ImportToken, PublicKeyDER: p.PublicKeyDER, ValidTo: p.ValidTo}, nil
}

func (l *local) ImportKeyMaterial(ctx context.Context, keyRef string, importToken, encryptedMaterial []byte) error {
	return l.wrap("ImportKeyMaterial", keyRef,
		l.store.ImportKeyMaterial(ctx, kms.LocalPrincipal, keyRef, importToken, encryptedMaterial, nil))
}

func (l *local) Audit(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	recs, err := l.store.Audit(ctx, kms.AuditFilter{KeyRef: f.KeyRef})
	if err != nil {
		return nil, l.wrap("read audit log", f.KeyRef, err)
	}
	out := make([]AuditRecord, 0, len(recs))
	for _, r := range recs {
		rec := AuditRecord{Time: r.Time, Principal: r.Principal, Operation: r.Operation, KeyID: r.KeyID,
			KeyVersion: r.KeyVersion, EncryptionContext: r.EncryptionContext, Result: r.Result, Message: r.Message,
			KeyCheck: r.KeyCheck}
		out = append(out, rec)
	}
	return out, nil
}

func keyInfoFromStore(md kms.KeyMetadata) KeyInfo {
	return KeyInfo{
		KeyID: md.KeyID, Arn: md.Arn, State: md.KeyState, Origin: md.Origin, KeyManager: md.KeyManager,
		Description: md.Description, Enabled: md.Enabled, KeySpec: md.KeySpec, KeyUsage: md.KeyUsage,
		Owner: md.Owner, Created: md.CreationDate, DeletionDate: md.DeletionDate, Aliases: md.Aliases,
	}
}

// lockDataKey moves a plaintext data key into locked memory; keywrap.NewKey
// zeroes pt, and pt is cleared here too when the size is wrong so no copy
// of a bad key lingers.
func lockDataKey(pt []byte) (*keywrap.Key, error) {
	if len(pt) != DataKeySize {
		n := len(pt)
		clear(pt)
		return nil, fmt.Errorf("KMS returned a %d-byte data key, want %d", n, DataKeySize)
	}
	return keywrap.NewKey(pt)
}
