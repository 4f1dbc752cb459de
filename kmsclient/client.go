package kmsclient

import (
	"context"
	"fmt"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
)

// DataKeySize is the size of every data key this package generates.
const DataKeySize = 32

// DefaultKeyAlias names the service key used when a volume names no key.
const DefaultKeyAlias = "alias/encvol/default"

// Client is what a volume needs from a KMS. Every error wraps one of the
// sentinel errors (errors.Is) and is an *Error (errors.As).
type Client interface {
	// GenerateDataKey returns a fresh 32-byte data key in locked memory,
	// the KMS blob that wraps it under keyRef bound to encCtx, and the ARN
	// of the key that wrapped it.
	GenerateDataKey(ctx context.Context, keyRef string, encCtx map[string]string) (dk *keywrap.Key, blob []byte, keyARN string, err error)
	// Decrypt unwraps blob; encCtx must equal the context used at wrap
	// time exactly. keyRef may be "" (the blob names its key); when given
	// and different from the blob's key the call fails with
	// ErrInvalidCiphertext.
	Decrypt(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (*keywrap.Key, error)
	// DescribeKey reports the key's identity and state; it works in every
	// state, so it is how callers tell "disabled" from "deleted".
	DescribeKey(ctx context.Context, keyRef string) (KeyInfo, error)
	// DefaultKey returns the ARN of the service key (alias/encvol/default).
	// The local backend creates it on first use; a remote KMS must already
	// have the alias, otherwise the error says how to create it.
	DefaultKey(ctx context.Context) (string, error)
	// Close releases the backend (store lock, idle connections).
	Close() error
}

// KeyInfo describes a CMK. State is one of "Enabled", "Disabled",
// "PendingDeletion", "PendingImport" (or another AWS KeyState).
type KeyInfo struct {
	KeyID        string     `json:"key_id"`
	Arn          string     `json:"arn"`
	State        string     `json:"state"`
	Origin       string     `json:"origin"`      // "AWS_KMS" or "EXTERNAL"
	KeyManager   string     `json:"key_manager"` // "CUSTOMER" or "AWS" (service key)
	Description  string     `json:"description"`
	Enabled      bool       `json:"enabled"`
	KeySpec      string     `json:"key_spec,omitempty"`
	KeyUsage     string     `json:"key_usage,omitempty"`
	Owner        string     `json:"owner,omitempty"` // local store only
	Created      time.Time  `json:"created"`
	DeletionDate *time.Time `json:"deletion_date,omitempty"`
	Aliases      []string   `json:"aliases,omitempty"`
}

// ManagedByKMS reports whether the KMS itself manages the key, so that it
// refuses to disable, delete or share it.
func (k KeyInfo) ManagedByKMS() bool { return k.KeyManager == kms.KeyManagerAWS }

// CreateKeyInput is what `encvol kms create-key` can choose.
type CreateKeyInput struct {
	Description string
	// Origin is "AWS_KMS" (generated material, default) or "EXTERNAL"
	// (bring your own material; the key starts in PendingImport).
	Origin string
	// Alias, when set, is created for the new key (alias/NAME). An alias
	// that is already taken fails with ErrAlreadyExists before any key is
	// created, and no key is left behind when the alias cannot be made.
	Alias string
}

// Origins accepted by CreateKeyInput.
const (
	OriginGenerated = "AWS_KMS"
	OriginExternal  = "EXTERNAL"
)

// AliasInfo is one alias and the key it points to.
type AliasInfo struct {
	Name        string `json:"alias"`
	Arn         string `json:"arn,omitempty"`
	TargetKeyID string `json:"target_key_id,omitempty"`
}

// GrantInput describes a grant to create.
type GrantInput struct {
	KeyRef            string
	Grantee           string   // principal (or group:NAME on encvol kms serve) that receives the permissions
	RetiringPrincipal string   // optional principal allowed to retire the grant
	Operations        []string // e.g. "Decrypt", "DescribeKey", "GenerateDataKey"
	Name              string   // optional
	// Constraints, when set, bind the grant's cryptographic operations to
	// requests with an encryption context that equals (or contains) the
	// given one.
	Constraints *GrantConstraints
}

// GrantConstraints restrict a grant's cryptographic operations by
// encryption context, as in AWS (EncryptionContextEquals or
// EncryptionContextSubset).
type GrantConstraints = kms.GrantConstraints

// GrantInfo is one grant on a key.
type GrantInfo struct {
	GrantID           string            `json:"grant_id"`
	KeyID             string            `json:"key_id"`
	Name              string            `json:"name,omitempty"`
	Grantee           string            `json:"grantee"`
	RetiringPrincipal string            `json:"retiring_principal,omitempty"`
	Operations        []string          `json:"operations"`
	Constraints       *GrantConstraints `json:"constraints,omitempty"`
	Created           time.Time         `json:"created"`
}

// ImportParams are the wrapping parameters for ImportKeyMaterial.
type ImportParams struct {
	ImportToken  []byte
	PublicKeyDER []byte // PKIX RSA public key; material is wrapped with RSAES_OAEP_SHA_256
	ValidTo      time.Time
}

// AuditFilter selects audit records; an empty KeyRef means all keys.
type AuditFilter struct {
	KeyRef string
}

// AuditRecord is one line of the KMS audit log.
type AuditRecord struct {
	Time              time.Time         `json:"time"`
	Principal         string            `json:"principal"`
	Operation         string            `json:"operation"`
	KeyID             string            `json:"key_id"`
	KeyVersion        int               `json:"key_version,omitempty"`
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	Result            string            `json:"result"` // "ok" or the error code
	Message           string            `json:"message,omitempty"`
	// KeyCheck is set on records of Decrypts marked as key checks (see
	// KeyCheck); a summary record stands for KeyCheck.Checks checks.
	KeyCheck *AuditKeyCheck `json:"key_check,omitempty"`
}

// AuditKeyCheck describes a record of key checks: Event is "first",
// "changed", "last", "check" (one check each) or "summary" (Checks checks
// that repeated the previous result, made from From to the record's Time).
type AuditKeyCheck = kms.AuditKeyCheck

// Count is how many calls r stands for: the checks of a summary, else 1.
func (r AuditRecord) Count() int {
	if r.KeyCheck != nil && r.KeyCheck.Checks > 1 {
		return r.KeyCheck.Checks
	}
	return 1
}

// Admin is everything `encvol kms <verb>` needs; both backends implement
// it. It embeds Client so one connection serves both kinds of calls.
type Admin interface {
	Client
	CreateKey(ctx context.Context, in CreateKeyInput) (KeyInfo, error)
	// ListKeys returns every key visible to the caller, described.
	ListKeys(ctx context.Context) ([]KeyInfo, error)
	EnableKey(ctx context.Context, keyRef string) error
	DisableKey(ctx context.Context, keyRef string) error
	// ScheduleKeyDeletion accepts a window of 7 to 30 days and returns the
	// deletion date.
	ScheduleKeyDeletion(ctx context.Context, keyRef string, days int) (time.Time, error)
	// CancelKeyDeletion leaves the key Disabled, as AWS does.
	CancelKeyDeletion(ctx context.Context, keyRef string) error
	// RotateKey adds a new key version now (RotateKeyOnDemand); existing
	// blobs stay decryptable.
	RotateKey(ctx context.Context, keyRef string) error
	CreateAlias(ctx context.Context, alias, keyRef string) error
	// ListAliases lists aliases, only those of keyRef when it is not "".
	ListAliases(ctx context.Context, keyRef string) ([]AliasInfo, error)
	CreateGrant(ctx context.Context, in GrantInput) (grantID string, err error)
	ListGrants(ctx context.Context, keyRef string) ([]GrantInfo, error)
	RevokeGrant(ctx context.Context, keyRef, grantID string) error
	// GetParametersForImport returns an RSA public key and import token
	// (wrapping algorithm RSAES_OAEP_SHA_256, RSA 2048).
	GetParametersForImport(ctx context.Context, keyRef string) (ImportParams, error)
	// ImportKeyMaterial installs wrapped material that does not expire.
	ImportKeyMaterial(ctx context.Context, keyRef string, importToken, encryptedMaterial []byte) error
	// Audit reads the audit log. Only the local backend can: a remote KMS
	// keeps its log on its own host, and the call fails with ErrUnsupported.
	Audit(ctx context.Context, f AuditFilter) ([]AuditRecord, error)
}

// Wrapping parameters used for BYOK imports.
const (
	ImportWrappingAlgorithm = "RSAES_OAEP_SHA_256"
	ImportWrappingKeySpec   = "RSA_2048"
)

// New opens the KMS configured as [kms.name] for data-key use.
func New(ctx context.Context, name string, cfg Config) (Client, error) {
	return NewAdmin(ctx, name, cfg)
}

// NewAdmin opens the KMS configured as [kms.name] for administration (and
// data-key use).
func NewAdmin(ctx context.Context, name string, cfg Config) (Admin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kms %q: %w", name, err)
	}
	switch cfg.Type {
	case TypeLocal:
		return newLocal(ctx, name, cfg)
	case TypeAWS:
		return newAWS(ctx, name, cfg)
	}
	return nil, fmt.Errorf("kms %q: type = %q is unknown", name, cfg.Type)
}
