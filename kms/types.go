package kms

import "time"

// ServiceKeyAlias names the encvol service key, the key volumes use when they
// name none. It is created on first use by Store.ServiceKey.
const ServiceKeyAlias = "alias/encvol/default"

// LocalPrincipal is the principal the in-process (local) backend acts as. It
// owns every key it creates.
const LocalPrincipal = "local"

// Key states (KeyMetadata.KeyState).
const (
	StateEnabled         = "Enabled"
	StateDisabled        = "Disabled"
	StatePendingDeletion = "PendingDeletion"
	StatePendingImport   = "PendingImport"
)

// Key origins, specs, usages and managers, spelled as AWS does.
const (
	OriginAWSKMS   = "AWS_KMS"
	OriginExternal = "EXTERNAL"

	KeySpecSymmetric   = "SYMMETRIC_DEFAULT"
	KeyUsageEncrypt    = "ENCRYPT_DECRYPT"
	KeyManagerCustomer = "CUSTOMER"
	KeyManagerAWS      = "AWS"

	// EncryptionAlgorithm is the only algorithm symmetric keys support.
	EncryptionAlgorithm = "SYMMETRIC_DEFAULT"

	ExpirationModelExpires       = "KEY_MATERIAL_EXPIRES"
	ExpirationModelDoesNotExpire = "KEY_MATERIAL_DOES_NOT_EXPIRE"

	// Rotation types (ListKeyRotations' RotationType).
	RotationAutomatic = "AUTOMATIC"
	RotationOnDemand  = "ON_DEMAND"
)

// Grant operations a grant may list. Operation names are AWS's.
const (
	OpDecrypt                         = "Decrypt"
	OpEncrypt                         = "Encrypt"
	OpGenerateDataKey                 = "GenerateDataKey"
	OpGenerateDataKeyWithoutPlaintext = "GenerateDataKeyWithoutPlaintext"
	OpReEncryptFrom                   = "ReEncryptFrom"
	OpReEncryptTo                     = "ReEncryptTo"
	OpDescribeKey                     = "DescribeKey"
	OpCreateGrant                     = "CreateGrant"
	OpRetireGrant                     = "RetireGrant"
)

// Rotation and deletion limits (AWS values).
const (
	MinPendingWindowDays     = 7
	MaxPendingWindowDays     = 30
	DefaultPendingWindowDays = 30
	MinRotationPeriodDays    = 90
	MaxRotationPeriodDays    = 2560
	DefaultRotationDays      = 365
	MaxOnDemandRotations     = 25
	ImportParamsValidity     = 24 * time.Hour
)

// Options configures a Store. The zero value is valid: root key file, real
// clock, region DefaultRegion ("local"), account DefaultAccount
// ("000000000000").
type Options struct {
	// PassphraseFile, when set, seals key material under a key derived with
	// Argon2id from the file's content (trailing newline stripped) instead of
	// the root key file. A store keeps the mode it was created with.
	PassphraseFile string
	// Now replaces time.Now (tests move time forward to expire keys).
	Now func() time.Time
	// Region and Account appear in key and alias ARNs and in principal
	// ARNs (arn:aws:iam::ACCOUNT:user/NAME). ARNs of every identity the
	// store was opened under keep resolving (see identity.go).
	Region  string
	Account string
	// AuditSync makes every audit record durable (fsync) before the call
	// returns. Without it, state changes are still synced immediately, and
	// data-key records are written (visible to other processes, surviving a
	// crash of this process) at once and synced within AuditFlushInterval.
	AuditSync bool
	// AuditFlushInterval bounds how long a data-key audit record may sit in
	// the page cache before fsync when AuditSync is off (default 100 ms).
	AuditFlushInterval time.Duration
	// AuditMaxSize is the size in bytes at which audit.jsonl is rotated to
	// audit.jsonl.1 (default DefaultAuditMaxSize; at least MinAuditMaxSize).
	AuditMaxSize int64
	// AuditKeep is how many rotated files (audit.jsonl.1 ... .N) are kept;
	// older ones are deleted (default DefaultAuditKeep; negative keeps all).
	AuditKeep int
	// KeyCheckSummaryInterval is how often the routine key checks of one
	// mount are written as one summary record (default
	// DefaultKeyCheckSummaryInterval); see KeyCheck.
	KeyCheckSummaryInterval time.Duration
}

// Audit log defaults (Options).
const (
	DefaultAuditMaxSize            = 64 << 20
	MinAuditMaxSize                = 1 << 10
	DefaultAuditKeep               = 10
	DefaultKeyCheckSummaryInterval = time.Hour
)

// Tag is a key tag (TagKey/TagValue in AWS).
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// CreateKeyInput holds the CreateKey request. Empty KeyUsage/KeySpec/Origin
// mean ENCRYPT_DECRYPT / SYMMETRIC_DEFAULT / AWS_KMS. Policy, when set, is
// a key policy document (see policy.go) the key starts with.
type CreateKeyInput struct {
	Description string
	KeyUsage    string
	KeySpec     string
	Origin      string
	Tags        []Tag
	Policy      string
}

// KeyMetadata describes a CMK as DescribeKey returns it.
type KeyMetadata struct {
	KeyID                       string
	Arn                         string
	AWSAccountID                string
	Description                 string
	KeyState                    string
	Origin                      string
	KeyManager                  string // "CUSTOMER", or "AWS" for the service key
	Owner                       string // principal that created the key
	Enabled                     bool
	CreationDate                time.Time
	DeletionDate                *time.Time
	PendingDeletionWindowInDays int
	ValidTo                     *time.Time // imported material that expires
	ExpirationModel             string     // only for EXTERNAL keys
	Aliases                     []string
	KeySpec                     string
	KeyUsage                    string
	CurrentVersion              int // newest key material version (0 before import)
}

// KeyListEntry is one ListKeys row.
type KeyListEntry struct {
	KeyID  string
	KeyArn string
}

// AliasEntry is one ListAliases row.
type AliasEntry struct {
	AliasName       string
	AliasArn        string
	TargetKeyID     string
	CreationDate    time.Time
	LastUpdatedDate time.Time
}

// RotationStatus is what GetKeyRotationStatus reports.
type RotationStatus struct {
	KeyID                     string
	Enabled                   bool
	PeriodDays                int        // 0 when rotation is disabled
	NextRotationDate          *time.Time // nil when rotation is disabled
	OnDemandRotationStartDate *time.Time // last on-demand rotation, if any
	OnDemandRotations         int
	CurrentVersion            int
}

// KeyRotation is one ListKeyRotations row: a key material version and how
// and when it was made. Type is empty for a key's initial material.
type KeyRotation struct {
	KeyID   string
	Version int
	Date    time.Time
	Type    string // RotationAutomatic, RotationOnDemand or ""
	Current bool   // the version that wraps new data
}

// ImportParams is what GetParametersForImport returns: an opaque token and a
// DER (PKIX) RSA public key to wrap the 32-byte key material with, valid until
// ValidTo (24 h).
type ImportParams struct {
	KeyID        string
	ImportToken  []byte
	PublicKeyDER []byte
	ValidTo      time.Time
}

// GrantConstraints restrict a grant's cryptographic operations to requests
// whose encryption context equals (or contains) the given pairs.
type GrantConstraints struct {
	EncryptionContextEquals map[string]string `json:"encryption_context_equals,omitempty"`
	EncryptionContextSubset map[string]string `json:"encryption_context_subset,omitempty"`
}

// GrantInput holds the CreateGrant request. Principals are names or IAM
// user ARNs (arn:aws:iam::ACCOUNT:user/NAME).
type GrantInput struct {
	KeyRef            string
	GranteePrincipal  string
	RetiringPrincipal string
	Operations        []string
	Name              string
	Constraints       *GrantConstraints
}

// Grant is one ListGrants row. Principals are IAM user ARNs, as AWS
// returns them.
type Grant struct {
	KeyID             string
	GrantID           string
	Name              string
	GranteePrincipal  string
	RetiringPrincipal string
	IssuingPrincipal  string
	Operations        []string
	Constraints       *GrantConstraints
	CreationDate      time.Time
}

// AuditFilter selects audit records. Empty fields match everything. KeyRef
// may be any key reference; aliases are resolved to the key they name now.
type AuditFilter struct {
	KeyRef    string
	Principal string
	Operation string
	Since     time.Time
}

// AuditRecord is one line of the audit log. It never contains key material or
// plaintext.
type AuditRecord struct {
	Time              time.Time         `json:"time"`
	Principal         string            `json:"principal"`
	Operation         string            `json:"operation"`
	KeyID             string            `json:"key_id,omitempty"`
	KeyVersion        int               `json:"key_version,omitempty"`
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	Result            string            `json:"result"` // "ok" or an error code
	Message           string            `json:"message,omitempty"`
	// KeyCheck is set on the records of Decrypts marked as key checks.
	KeyCheck *AuditKeyCheck `json:"key_check,omitempty"`
}

// Events of key check records (AuditKeyCheck.Event).
const (
	CheckFirst   = "first"   // the first check of a mount this store saw
	CheckChanged = "changed" // the result differs from the mount's previous check
	CheckLast    = "last"    // the mount's final check
	CheckSummary = "summary" // checks with the result of the one before, counted
	CheckSingle  = "check"   // a check recorded on its own (too many mounts to track)
)

// AuditKeyCheck describes a record of key checks. A summary record stands
// for Checks checks of one mount that repeated the previous result, each with the same principal,
// key, key version, encryption context and result as the record, made from
// From to the record's Time; every other key check record stands for one
// check (Checks = 1).
type AuditKeyCheck struct {
	Mount  string    `json:"mount"`
	Event  string    `json:"event"`
	Checks int       `json:"checks"`
	From   time.Time `json:"from,omitzero"`
}
