package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/encvol/encvol/kms"
)

// opFunc serves one KMS operation: it decodes body, calls the store as
// principal and returns the response value (encoded by writeResponse). It
// records the key it acted on in rl for the request log.
type opFunc func(ctx context.Context, principal string, body []byte, rl *reqLog) (any, error)

// op adapts a typed handler to an opFunc, decoding the JSON input first.
func op[In any](f func(ctx context.Context, principal string, in *In, rl *reqLog) (any, error)) opFunc {
	return func(ctx context.Context, principal string, body []byte, rl *reqLog) (any, error) {
		in := new(In)
		if err := decodeInput(body, in); err != nil {
			return nil, err
		}
		return f(ctx, principal, in, rl)
	}
}

func decodeInput(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil // an operation without input may send no body at all
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &apiError{Code: "SerializationException", Status: http.StatusBadRequest,
				Message: fmt.Sprintf("field %s: expected %s, got a JSON %s", te.Field, te.Type, te.Value)}
		}
		return &apiError{Code: "SerializationException", Status: http.StatusBadRequest,
			Message: "the request body is not a valid JSON object for this operation: " + err.Error()}
	}
	if dec.More() {
		return &apiError{Code: "SerializationException", Status: http.StatusBadRequest, Message: "trailing data after the JSON request object"}
	}
	return nil
}

// required produces AWS's wording for a missing mandatory member.
func required(member string) *apiError {
	return validationError("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", member)
}

// epoch is a timestamp as the JSON protocol sends it: seconds since the
// Unix epoch as a JSON number (with millisecond fraction).
func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func epochPtr(t *time.Time) *float64 {
	if t == nil || t.IsZero() {
		return nil
	}
	e := epoch(*t)
	return &e
}

func fromEpoch(f float64) (time.Time, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, validationError("timestamp %v is out of range", f)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

func (s *Server) operations() map[string]opFunc {
	return map[string]opFunc{
		"CreateKey":                       op(s.createKey),
		"DescribeKey":                     op(s.describeKey),
		"ListKeys":                        op(s.listKeys),
		"EnableKey":                       keyOp(s.store.EnableKey),
		"DisableKey":                      keyOp(s.store.DisableKey),
		"ScheduleKeyDeletion":             op(s.scheduleKeyDeletion),
		"CancelKeyDeletion":               s.keyOpARN(s.store.CancelKeyDeletion),
		"GenerateDataKey":                 op(s.generateDataKey),
		"GenerateDataKeyWithoutPlaintext": op(s.generateDataKeyWithoutPlaintext),
		"Encrypt":                         op(s.encrypt),
		"Decrypt":                         op(s.decrypt),
		"ReEncrypt":                       op(s.reEncrypt),
		"CreateAlias":                     aliasOp(s.store.CreateAlias),
		"UpdateAlias":                     aliasOp(s.store.UpdateAlias),
		"DeleteAlias":                     op(s.deleteAlias),
		"ListAliases":                     op(s.listAliases),
		"EnableKeyRotation":               op(s.enableKeyRotation),
		"DisableKeyRotation":              keyOp(s.store.DisableKeyRotation),
		"GetKeyRotationStatus":            op(s.getKeyRotationStatus),
		"RotateKeyOnDemand":               s.keyOpARN(s.store.RotateKeyOnDemand),
		"GetParametersForImport":          op(s.getParametersForImport),
		"ImportKeyMaterial":               op(s.importKeyMaterial),
		"CreateGrant":                     op(s.createGrant),
		"ListGrants":                      op(s.listGrants),
		"RevokeGrant":                     op(s.revokeGrant),
		"RetireGrant":                     op(s.retireGrant),
		"GenerateRandom":                  op(s.generateRandom),
		"GetKeyPolicy":                    op(s.getKeyPolicy),
		"PutKeyPolicy":                    op(s.putKeyPolicy),
		"ListKeyPolicies":                 op(s.listKeyPolicies),
		"TagResource":                     op(s.tagResource),
		"UntagResource":                   op(s.untagResource),
		"ListResourceTags":                op(s.listResourceTags),
		"UpdateKeyDescription":            op(s.updateKeyDescription),
		"ListRetirableGrants":             op(s.listRetirableGrants),
		"ListKeyRotations":                op(s.listKeyRotations),
		"DeleteImportedKeyMaterial":       op(s.deleteImportedKeyMaterial),
	}
}

// ---- wire types (field names exactly as in the AWS KMS API) ----

type keyMetadataJSON struct {
	AWSAccountId                string   `json:"AWSAccountId"`
	Arn                         string   `json:"Arn"`
	KeyId                       string   `json:"KeyId"`
	CreationDate                float64  `json:"CreationDate"`
	Enabled                     bool     `json:"Enabled"`
	Description                 string   `json:"Description"`
	KeyUsage                    string   `json:"KeyUsage"`
	KeyState                    string   `json:"KeyState"`
	DeletionDate                *float64 `json:"DeletionDate,omitempty"`
	PendingDeletionWindowInDays int      `json:"PendingDeletionWindowInDays,omitempty"`
	ValidTo                     *float64 `json:"ValidTo,omitempty"`
	Origin                      string   `json:"Origin"`
	ExpirationModel             string   `json:"ExpirationModel,omitempty"`
	KeyManager                  string   `json:"KeyManager"`
	KeySpec                     string   `json:"KeySpec"`
	CustomerMasterKeySpec       string   `json:"CustomerMasterKeySpec"`
	EncryptionAlgorithms        []string `json:"EncryptionAlgorithms"`
	MultiRegion                 bool     `json:"MultiRegion"`
}

// accountFromARN returns the account field of arn:aws:kms:REGION:ACCOUNT:key/ID.
func accountFromARN(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) == 6 {
		return parts[4]
	}
	return ""
}

func toKeyMetadata(m kms.KeyMetadata) keyMetadataJSON {
	acct := m.AWSAccountID
	if acct == "" {
		acct = accountFromARN(m.Arn)
	}
	spec := m.KeySpec
	if spec == "" {
		spec = kms.KeySpecSymmetric
	}
	usage := m.KeyUsage
	if usage == "" {
		usage = kms.KeyUsageEncrypt
	}
	return keyMetadataJSON{
		AWSAccountId:                acct,
		Arn:                         m.Arn,
		KeyId:                       m.KeyID,
		CreationDate:                epoch(m.CreationDate),
		Enabled:                     m.Enabled,
		Description:                 m.Description,
		KeyUsage:                    usage,
		KeyState:                    m.KeyState,
		DeletionDate:                epochPtr(m.DeletionDate),
		PendingDeletionWindowInDays: m.PendingDeletionWindowInDays,
		ValidTo:                     epochPtr(m.ValidTo),
		Origin:                      m.Origin,
		ExpirationModel:             m.ExpirationModel,
		KeyManager:                  m.KeyManager,
		KeySpec:                     spec,
		CustomerMasterKeySpec:       spec,
		EncryptionAlgorithms:        []string{kms.EncryptionAlgorithm},
		MultiRegion:                 false,
	}
}

type keyMetadataOutput struct {
	KeyMetadata keyMetadataJSON `json:"KeyMetadata"`
}

type empty struct{}

type keyIDInput struct {
	KeyId       string   `json:"KeyId"`
	GrantTokens []string `json:"GrantTokens"`
}

type keyIDOutput struct {
	KeyId string `json:"KeyId"`
}

// keyOp serves an operation whose input is just KeyId and whose answer is
// empty; do is the store call.
func keyOp(do func(ctx context.Context, principal, keyRef string) error) opFunc {
	return op(func(ctx context.Context, p string, in *keyIDInput, rl *reqLog) (any, error) {
		if in.KeyId == "" {
			return nil, required("keyId")
		}
		rl.keyID = in.KeyId
		return empty{}, do(ctx, p, in.KeyId)
	})
}

// keyOpARN is keyOp for the operations whose answer is the key's ARN.
func (s *Server) keyOpARN(do func(ctx context.Context, principal, keyRef string) error) opFunc {
	return op(func(ctx context.Context, p string, in *keyIDInput, rl *reqLog) (any, error) {
		if in.KeyId == "" {
			return nil, required("keyId")
		}
		rl.keyID = in.KeyId
		if err := do(ctx, p, in.KeyId); err != nil {
			return nil, err
		}
		arn := s.arnOf(ctx, p, in.KeyId)
		rl.keyID = arn
		return keyIDOutput{KeyId: arn}, nil
	})
}

// arnOf returns the ARN of keyRef for responses that carry it, falling back
// to the reference itself when the caller may not describe the key.
func (s *Server) arnOf(ctx context.Context, principal, keyRef string) string {
	m, err := s.store.DescribeKey(ctx, principal, keyRef)
	if err != nil {
		return keyRef
	}
	return m.Arn
}

// ---- keys ----

type tagJSON struct {
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`
}

type createKeyInput struct {
	Description                    string    `json:"Description"`
	KeyUsage                       string    `json:"KeyUsage"`
	KeySpec                        string    `json:"KeySpec"`
	CustomerMasterKeySpec          string    `json:"CustomerMasterKeySpec"`
	Origin                         string    `json:"Origin"`
	Policy                         string    `json:"Policy"`
	Tags                           []tagJSON `json:"Tags"`
	MultiRegion                    bool      `json:"MultiRegion"`
	CustomKeyStoreId               string    `json:"CustomKeyStoreId"`
	XksKeyId                       string    `json:"XksKeyId"`
	BypassPolicyLockoutSafetyCheck bool      `json:"BypassPolicyLockoutSafetyCheck"`
}

func unsupported(format string, args ...any) *apiError {
	return &apiError{Code: kms.CodeUnsupportedOperation, Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

func (s *Server) createKey(ctx context.Context, p string, in *createKeyInput, rl *reqLog) (any, error) {
	switch {
	case in.MultiRegion:
		return nil, unsupported("multi-Region keys are not supported by this server")
	case in.CustomKeyStoreId != "" || in.XksKeyId != "":
		return nil, unsupported("custom key stores are not supported by this server")
	}
	spec := in.KeySpec
	if in.CustomerMasterKeySpec != "" {
		if spec != "" && spec != in.CustomerMasterKeySpec {
			return nil, validationError("KeySpec %s and CustomerMasterKeySpec %s disagree; send only KeySpec", spec, in.CustomerMasterKeySpec)
		}
		spec = in.CustomerMasterKeySpec
	}
	// BypassPolicyLockoutSafetyCheck needs no handling: the rule that a
	// policy keeps the owner's administration is not a safety check that
	// can be bypassed (see kms/policy.go).
	m, err := s.store.CreateKey(ctx, p, kms.CreateKeyInput{
		Description: in.Description, KeyUsage: in.KeyUsage, KeySpec: spec, Origin: in.Origin,
		Tags: fromTagJSON(in.Tags), Policy: in.Policy,
	})
	if err != nil {
		return nil, err
	}
	rl.keyID = m.Arn
	return keyMetadataOutput{KeyMetadata: toKeyMetadata(m)}, nil
}

func (s *Server) describeKey(ctx context.Context, p string, in *keyIDInput, rl *reqLog) (any, error) {
	if in.KeyId == "" {
		return nil, required("keyId")
	}
	rl.keyID = in.KeyId
	m, err := s.store.DescribeKey(ctx, p, in.KeyId)
	if err != nil {
		return nil, err
	}
	rl.keyID = m.Arn
	return keyMetadataOutput{KeyMetadata: toKeyMetadata(m)}, nil
}

type listInput struct {
	KeyId            string `json:"KeyId"`
	Limit            *int   `json:"Limit"`
	Marker           string `json:"Marker"`
	GrantId          string `json:"GrantId"`
	GranteePrincipal string `json:"GranteePrincipal"`
}

// page cuts items into the page that Limit/Marker select. The marker is the
// decimal offset of the next item: lists are sorted by the store, so an
// offset is stable enough between pages of one listing.
func page[T any](items []T, limit *int, marker string, defLimit int) ([]T, string, error) {
	n := defLimit
	if limit != nil {
		if *limit < 1 || *limit > 1000 {
			return nil, "", validationError("Limit must be between 1 and 1000")
		}
		n = *limit
	}
	start := 0
	if marker != "" {
		v, err := strconv.Atoi(marker)
		if err != nil || v < 0 || v > len(items) {
			return nil, "", validationError("Marker %q is not valid for this listing: pass the NextMarker of the previous response", marker)
		}
		start = v
	}
	end := min(start+n, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}

type keyListEntryJSON struct {
	KeyId  string `json:"KeyId"`
	KeyArn string `json:"KeyArn"`
}

type listKeysOutput struct {
	Keys       []keyListEntryJSON `json:"Keys"`
	NextMarker string             `json:"NextMarker,omitempty"`
	Truncated  bool               `json:"Truncated"`
}

func (s *Server) listKeys(ctx context.Context, p string, in *listInput, _ *reqLog) (any, error) {
	keys, err := s.store.ListKeys(ctx, p)
	if err != nil {
		return nil, err
	}
	pg, next, err := page(keys, in.Limit, in.Marker, 100)
	if err != nil {
		return nil, err
	}
	out := listKeysOutput{Keys: make([]keyListEntryJSON, 0, len(pg)), NextMarker: next, Truncated: next != ""}
	for _, k := range pg {
		out.Keys = append(out.Keys, keyListEntryJSON{KeyId: k.KeyID, KeyArn: k.KeyArn})
	}
	return out, nil
}

type scheduleDeletionInput struct {
	KeyId               string `json:"KeyId"`
	PendingWindowInDays *int   `json:"PendingWindowInDays"`
}

type scheduleDeletionOutput struct {
	KeyId               string  `json:"KeyId"`
	DeletionDate        float64 `json:"DeletionDate"`
	KeyState            string  `json:"KeyState"`
	PendingWindowInDays int     `json:"PendingWindowInDays"`
}

func (s *Server) scheduleKeyDeletion(ctx context.Context, p string, in *scheduleDeletionInput, rl *reqLog) (any, error) {
	if in.KeyId == "" {
		return nil, required("keyId")
	}
	rl.keyID = in.KeyId
	days := kms.DefaultPendingWindowDays
	if in.PendingWindowInDays != nil {
		days = *in.PendingWindowInDays
	}
	when, err := s.store.ScheduleKeyDeletion(ctx, p, in.KeyId, days)
	if err != nil {
		return nil, err
	}
	arn := s.arnOf(ctx, p, in.KeyId)
	rl.keyID = arn
	return scheduleDeletionOutput{KeyId: arn, DeletionDate: epoch(when), KeyState: kms.StatePendingDeletion, PendingWindowInDays: days}, nil
}

// ---- cryptographic operations ----

type generateDataKeyInput struct {
	KeyId             string            `json:"KeyId"`
	KeySpec           string            `json:"KeySpec"`
	NumberOfBytes     *int              `json:"NumberOfBytes"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	GrantTokens       []string          `json:"GrantTokens"`
	DryRun            bool              `json:"DryRun"`
	Recipient         json.RawMessage   `json:"Recipient"`
}

// dataKeySize turns KeySpec/NumberOfBytes into a length, as AWS does:
// exactly one of them is required.
func (in *generateDataKeyInput) dataKeySize() (int, error) {
	switch {
	case in.KeySpec != "" && in.NumberOfBytes != nil:
		return 0, validationError("specify either KeySpec or NumberOfBytes, not both")
	case in.NumberOfBytes != nil:
		if n := *in.NumberOfBytes; n < 1 || n > 1024 {
			return 0, validationError("NumberOfBytes must be between 1 and 1024")
		}
		return *in.NumberOfBytes, nil
	case in.KeySpec == "AES_256":
		return 32, nil
	case in.KeySpec == "AES_128":
		return 16, nil
	case in.KeySpec == "":
		return 0, validationError("specify either KeySpec or NumberOfBytes")
	default:
		return 0, validationError("KeySpec %q is not valid: use AES_256 or AES_128", in.KeySpec)
	}
}

func (in *generateDataKeyInput) check() (int, error) {
	if in.KeyId == "" {
		return 0, required("keyId")
	}
	if in.DryRun {
		return 0, unsupported("DryRun is not supported by this server")
	}
	if len(in.Recipient) > 0 && string(in.Recipient) != "null" {
		return 0, unsupported("Recipient (Nitro Enclaves attestation) is not supported by this server")
	}
	return in.dataKeySize()
}

type dataKeyOutput struct {
	CiphertextBlob []byte `json:"CiphertextBlob"`
	KeyId          string `json:"KeyId"`
}

func (s *Server) generateDataKey(ctx context.Context, p string, in *generateDataKeyInput, rl *reqLog) (any, error) {
	n, err := in.check()
	if err != nil {
		return nil, err
	}
	rl.keyID = in.KeyId
	pt, blob, arn, err := s.store.GenerateDataKey(ctx, p, in.KeyId, n, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	rl.keyID = arn
	return &secretResponse{plaintext: pt, rest: dataKeyOutput{CiphertextBlob: blob, KeyId: arn}}, nil
}

func (s *Server) generateDataKeyWithoutPlaintext(ctx context.Context, p string, in *generateDataKeyInput, rl *reqLog) (any, error) {
	n, err := in.check()
	if err != nil {
		return nil, err
	}
	rl.keyID = in.KeyId
	blob, arn, err := s.store.GenerateDataKeyWithoutPlaintext(ctx, p, in.KeyId, n, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	rl.keyID = arn
	return dataKeyOutput{CiphertextBlob: blob, KeyId: arn}, nil
}

func checkAlgorithm(alg string) error {
	if alg != "" && alg != kms.EncryptionAlgorithm {
		return &apiError{Code: kms.CodeInvalidKeyUsage, Status: http.StatusBadRequest,
			Message: fmt.Sprintf("encryption algorithm %s is not valid for symmetric keys: use %s", alg, kms.EncryptionAlgorithm)}
	}
	return nil
}

type encryptInput struct {
	KeyId               string            `json:"KeyId"`
	Plaintext           []byte            `json:"Plaintext"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	GrantTokens         []string          `json:"GrantTokens"`
	DryRun              bool              `json:"DryRun"`
}

type encryptOutput struct {
	CiphertextBlob      []byte `json:"CiphertextBlob"`
	KeyId               string `json:"KeyId"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

func (s *Server) encrypt(ctx context.Context, p string, in *encryptInput, rl *reqLog) (any, error) {
	defer clear(in.Plaintext)
	switch {
	case in.KeyId == "":
		return nil, required("keyId")
	case in.Plaintext == nil:
		return nil, required("plaintext")
	case len(in.Plaintext) < 1 || len(in.Plaintext) > 4096:
		return nil, validationError("Plaintext must be 1 to 4096 bytes")
	case in.DryRun:
		return nil, unsupported("DryRun is not supported by this server")
	}
	if err := checkAlgorithm(in.EncryptionAlgorithm); err != nil {
		return nil, err
	}
	rl.keyID = in.KeyId
	blob, arn, err := s.store.Encrypt(ctx, p, in.KeyId, in.Plaintext, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	rl.keyID = arn
	return encryptOutput{CiphertextBlob: blob, KeyId: arn, EncryptionAlgorithm: kms.EncryptionAlgorithm}, nil
}

type decryptInput struct {
	CiphertextBlob      []byte            `json:"CiphertextBlob"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	KeyId               string            `json:"KeyId"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	GrantTokens         []string          `json:"GrantTokens"`
	DryRun              bool              `json:"DryRun"`
	Recipient           json.RawMessage   `json:"Recipient"`
}

type decryptOutput struct {
	KeyId               string `json:"KeyId"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

func (s *Server) decrypt(ctx context.Context, p string, in *decryptInput, rl *reqLog) (any, error) {
	switch {
	case len(in.CiphertextBlob) == 0:
		return nil, required("ciphertextBlob")
	case in.DryRun:
		return nil, unsupported("DryRun is not supported by this server")
	case len(in.Recipient) > 0 && string(in.Recipient) != "null":
		return nil, unsupported("Recipient (Nitro Enclaves attestation) is not supported by this server")
	}
	if err := checkAlgorithm(in.EncryptionAlgorithm); err != nil {
		return nil, err
	}
	rl.keyID = in.KeyId
	pt, arn, err := s.store.DecryptKeyCheck(ctx, p, in.CiphertextBlob, in.EncryptionContext, in.KeyId, rl.keyCheck)
	if err != nil {
		return nil, err
	}
	rl.keyID = arn
	return &secretResponse{plaintext: pt, rest: decryptOutput{KeyId: arn, EncryptionAlgorithm: kms.EncryptionAlgorithm}}, nil
}

type reEncryptInput struct {
	CiphertextBlob                 []byte            `json:"CiphertextBlob"`
	SourceEncryptionContext        map[string]string `json:"SourceEncryptionContext"`
	SourceKeyId                    string            `json:"SourceKeyId"`
	DestinationKeyId               string            `json:"DestinationKeyId"`
	DestinationEncryptionContext   map[string]string `json:"DestinationEncryptionContext"`
	SourceEncryptionAlgorithm      string            `json:"SourceEncryptionAlgorithm"`
	DestinationEncryptionAlgorithm string            `json:"DestinationEncryptionAlgorithm"`
	GrantTokens                    []string          `json:"GrantTokens"`
	DryRun                         bool              `json:"DryRun"`
}

type reEncryptOutput struct {
	CiphertextBlob                 []byte `json:"CiphertextBlob"`
	SourceKeyId                    string `json:"SourceKeyId"`
	KeyId                          string `json:"KeyId"`
	SourceEncryptionAlgorithm      string `json:"SourceEncryptionAlgorithm"`
	DestinationEncryptionAlgorithm string `json:"DestinationEncryptionAlgorithm"`
}

func (s *Server) reEncrypt(ctx context.Context, p string, in *reEncryptInput, rl *reqLog) (any, error) {
	switch {
	case len(in.CiphertextBlob) == 0:
		return nil, required("ciphertextBlob")
	case in.DestinationKeyId == "":
		return nil, required("destinationKeyId")
	case in.DryRun:
		return nil, unsupported("DryRun is not supported by this server")
	}
	if err := checkAlgorithm(in.SourceEncryptionAlgorithm); err != nil {
		return nil, err
	}
	if err := checkAlgorithm(in.DestinationEncryptionAlgorithm); err != nil {
		return nil, err
	}
	rl.keyID = in.DestinationKeyId
	blob, src, dst, err := s.store.ReEncrypt(ctx, p, in.CiphertextBlob, in.SourceEncryptionContext, in.SourceKeyId, in.DestinationKeyId, in.DestinationEncryptionContext)
	if err != nil {
		return nil, err
	}
	rl.keyID = dst
	return reEncryptOutput{CiphertextBlob: blob, SourceKeyId: src, KeyId: dst,
		SourceEncryptionAlgorithm: kms.EncryptionAlgorithm, DestinationEncryptionAlgorithm: kms.EncryptionAlgorithm}, nil
}

type generateRandomInput struct {
	NumberOfBytes    *int   `json:"NumberOfBytes"`
	CustomKeyStoreId string `json:"CustomKeyStoreId"`
}

func (s *Server) generateRandom(_ context.Context, _ string, in *generateRandomInput, _ *reqLog) (any, error) {
	if in.NumberOfBytes == nil {
		return nil, required("numberOfBytes")
	}
	if n := *in.NumberOfBytes; n < 1 || n > 1024 {
		return nil, validationError("NumberOfBytes must be between 1 and 1024")
	}
	if in.CustomKeyStoreId != "" {
		return nil, unsupported("custom key stores are not supported by this server")
	}
	b := make([]byte, *in.NumberOfBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate random bytes: %w", err)
	}
	return &secretResponse{plaintext: b, rest: empty{}}, nil
}

// ---- aliases ----

type aliasInput struct {
	AliasName   string `json:"AliasName"`
	TargetKeyId string `json:"TargetKeyId"`
}

// aliasOp serves CreateAlias and UpdateAlias, which differ only in the
// store call do.
func aliasOp(do func(ctx context.Context, principal, alias, targetKeyRef string) error) opFunc {
	return op(func(ctx context.Context, p string, in *aliasInput, rl *reqLog) (any, error) {
		switch {
		case in.AliasName == "":
			return nil, required("aliasName")
		case in.TargetKeyId == "":
			return nil, required("targetKeyId")
		}
		rl.keyID = in.TargetKeyId
		return empty{}, do(ctx, p, in.AliasName, in.TargetKeyId)
	})
}

func (s *Server) deleteAlias(ctx context.Context, p string, in *aliasInput, rl *reqLog) (any, error) {
	if in.AliasName == "" {
		return nil, required("aliasName")
	}
	rl.keyID = in.AliasName
	return empty{}, s.store.DeleteAlias(ctx, p, in.AliasName)
}

type aliasJSON struct {
	AliasName       string   `json:"AliasName"`
	AliasArn        string   `json:"AliasArn"`
	TargetKeyId     string   `json:"TargetKeyId,omitempty"`
	CreationDate    *float64 `json:"CreationDate,omitempty"`
	LastUpdatedDate *float64 `json:"LastUpdatedDate,omitempty"`
}

type listAliasesOutput struct {
	Aliases    []aliasJSON `json:"Aliases"`
	NextMarker string      `json:"NextMarker,omitempty"`
	Truncated  bool        `json:"Truncated"`
}

func (s *Server) listAliases(ctx context.Context, p string, in *listInput, rl *reqLog) (any, error) {
	rl.keyID = in.KeyId
	aliases, err := s.store.ListAliases(ctx, p, in.KeyId)
	if err != nil {
		return nil, err
	}
	pg, next, err := page(aliases, in.Limit, in.Marker, 100)
	if err != nil {
		return nil, err
	}
	out := listAliasesOutput{Aliases: make([]aliasJSON, 0, len(pg)), NextMarker: next, Truncated: next != ""}
	for _, a := range pg {
		out.Aliases = append(out.Aliases, aliasJSON{
			AliasName: a.AliasName, AliasArn: a.AliasArn, TargetKeyId: a.TargetKeyID,
			CreationDate: epochPtr(&a.CreationDate), LastUpdatedDate: epochPtr(&a.LastUpdatedDate),
		})
	}
	return out, nil
}

// ---- rotation ----

type enableRotationInput struct {
	KeyId                string `json:"KeyId"`
	RotationPeriodInDays *int   `json:"RotationPeriodInDays"`
}

func (s *Server) enableKeyRotation(ctx context.Context, p string, in *enableRotationInput, rl *reqLog) (any, error) {
	if in.KeyId == "" {
		return nil, required("keyId")
	}
	rl.keyID = in.KeyId
	days := kms.DefaultRotationDays
	if in.RotationPeriodInDays != nil {
		days = *in.RotationPeriodInDays
	}
	return empty{}, s.store.EnableKeyRotation(ctx, p, in.KeyId, days)
}

type rotationStatusOutput struct {
	KeyRotationEnabled        bool     `json:"KeyRotationEnabled"`
	KeyId                     string   `json:"KeyId"`
	RotationPeriodInDays      *int     `json:"RotationPeriodInDays,omitempty"`
	NextRotationDate          *float64 `json:"NextRotationDate,omitempty"`
	OnDemandRotationStartDate *float64 `json:"OnDemandRotationStartDate,omitempty"`
}

func (s *Server) getKeyRotationStatus(ctx context.Context, p string, in *keyIDInput, rl *reqLog) (any, error) {
	if in.KeyId == "" {
		return nil, required("keyId")
	}
	rl.keyID = in.KeyId
	st, err := s.store.GetKeyRotationStatus(ctx, p, in.KeyId)
	if err != nil {
		return nil, err
	}
	out := rotationStatusOutput{
		KeyRotationEnabled:        st.Enabled,
		KeyId:                     s.arnOf(ctx, p, in.KeyId),
		NextRotationDate:          epochPtr(st.NextRotationDate),
		OnDemandRotationStartDate: epochPtr(st.OnDemandRotationStartDate),
	}
	if st.Enabled && st.PeriodDays > 0 {
		out.RotationPeriodInDays = &st.PeriodDays
	}
	rl.keyID = out.KeyId
	return out, nil
}

// ---- import (BYOK) ----

type getParametersInput struct {
	KeyId             string `json:"KeyId"`
	WrappingAlgorithm string `json:"WrappingAlgorithm"`
	WrappingKeySpec   string `json:"WrappingKeySpec"`
}

type getParametersOutput struct {
	KeyId             string  `json:"KeyId"`
	ImportToken       []byte  `json:"ImportToken"`
	PublicKey         []byte  `json:"PublicKey"`
	ParametersValidTo float64 `json:"ParametersValidTo"`
}

func (s *Server) getParametersForImport(ctx context.Context, p string, in *getParametersInput, rl *reqLog) (any, error) {
	switch {
	case in.KeyId == "":
		return nil, required("keyId")
	case in.WrappingAlgorithm == "":
		return nil, required("wrappingAlgorithm")
	case in.WrappingKeySpec == "":
		return nil, required("wrappingKeySpec")
	}
	rl.keyID = in.KeyId
	ip, err := s.store.GetParametersForImport(ctx, p, in.KeyId, in.WrappingAlgorithm, in.WrappingKeySpec)
	if err != nil {
		return nil, err
	}
	arn := s.arnOf(ctx, p, in.KeyId)
	rl.keyID = arn
	return getParametersOutput{KeyId: arn, ImportToken: ip.ImportToken, PublicKey: ip.PublicKeyDER, ParametersValidTo: epoch(ip.ValidTo)}, nil
}

type importKeyMaterialInput struct {
	KeyId                string   `json:"KeyId"`
	ImportToken          []byte   `json:"ImportToken"`
	EncryptedKeyMaterial []byte   `json:"EncryptedKeyMaterial"`
	ExpirationModel      string   `json:"ExpirationModel"`
	ValidTo              *float64 `json:"ValidTo"`
	ImportType           string   `json:"ImportType"`
}

func (s *Server) importKeyMaterial(ctx context.Context, p string, in *importKeyMaterialInput, rl *reqLog) (any, error) {
	defer clear(in.EncryptedKeyMaterial)
	switch {
	case in.KeyId == "":
		return nil, required("keyId")
	case len(in.ImportToken) == 0:
		return nil, required("importToken")
	case len(in.EncryptedKeyMaterial) == 0:
		return nil, required("encryptedKeyMaterial")
	}
	var validTo *time.Time
	switch in.ExpirationModel {
	case "", kms.ExpirationModelExpires, kms.ExpirationModelDoesNotExpire:
	default:
		return nil, validationError("ExpirationModel %q is not valid: use %s or %s", in.ExpirationModel, kms.ExpirationModelExpires, kms.ExpirationModelDoesNotExpire)
	}
	if in.ExpirationModel == kms.ExpirationModelExpires && in.ValidTo == nil {
		return nil, validationError("ValidTo is required when ExpirationModel is %s", kms.ExpirationModelExpires)
	}
	if in.ExpirationModel == kms.ExpirationModelDoesNotExpire && in.ValidTo != nil {
		return nil, validationError("ValidTo must not be set when ExpirationModel is %s", kms.ExpirationModelDoesNotExpire)
	}
	if in.ValidTo != nil {
		t, err := fromEpoch(*in.ValidTo)
		if err != nil {
			return nil, err
		}
		validTo = &t
	}
	rl.keyID = in.KeyId
	if err := s.store.ImportKeyMaterial(ctx, p, in.KeyId, in.ImportToken, in.EncryptedKeyMaterial, validTo); err != nil {
		return nil, err
	}
	return empty{}, nil
}

// ---- grants ----

type constraintsJSON struct {
	EncryptionContextEquals map[string]string `json:"EncryptionContextEquals,omitempty"`
	EncryptionContextSubset map[string]string `json:"EncryptionContextSubset,omitempty"`
}

type createGrantInput struct {
	KeyId             string           `json:"KeyId"`
	GranteePrincipal  string           `json:"GranteePrincipal"`
	RetiringPrincipal string           `json:"RetiringPrincipal"`
	Operations        []string         `json:"Operations"`
	Constraints       *constraintsJSON `json:"Constraints"`
	GrantTokens       []string         `json:"GrantTokens"`
	Name              string           `json:"Name"`
	DryRun            bool             `json:"DryRun"`
}

type createGrantOutput struct {
	GrantId    string `json:"GrantId"`
	GrantToken string `json:"GrantToken"`
}

func (s *Server) createGrant(ctx context.Context, p string, in *createGrantInput, rl *reqLog) (any, error) {
	switch {
	case in.KeyId == "":
		return nil, required("keyId")
	case in.GranteePrincipal == "":
		return nil, required("granteePrincipal")
	case len(in.Operations) == 0:
		return nil, required("operations")
	case in.DryRun:
		return nil, unsupported("DryRun is not supported by this server")
	}
	rl.keyID = in.KeyId
	var c *kms.GrantConstraints
	if in.Constraints != nil {
		c = &kms.GrantConstraints{
			EncryptionContextEquals: in.Constraints.EncryptionContextEquals,
			EncryptionContextSubset: in.Constraints.EncryptionContextSubset,
		}
	}
	id, token, err := s.store.CreateGrant(ctx, p, kms.GrantInput{
		KeyRef: in.KeyId, GranteePrincipal: in.GranteePrincipal, RetiringPrincipal: in.RetiringPrincipal,
		Operations: in.Operations, Name: in.Name, Constraints: c,
	})
	if err != nil {
		return nil, err
	}
	return createGrantOutput{GrantId: id, GrantToken: token}, nil
}

type grantJSON struct {
	KeyId             string           `json:"KeyId"`
	GrantId           string           `json:"GrantId"`
	Name              string           `json:"Name,omitempty"`
	CreationDate      float64          `json:"CreationDate"`
	GranteePrincipal  string           `json:"GranteePrincipal"`
	RetiringPrincipal string           `json:"RetiringPrincipal,omitempty"`
	IssuingAccount    string           `json:"IssuingAccount,omitempty"`
	Operations        []string         `json:"Operations"`
	Constraints       *constraintsJSON `json:"Constraints,omitempty"`
}

type listGrantsOutput struct {
	Grants     []grantJSON `json:"Grants"`
	NextMarker string      `json:"NextMarker,omitempty"`
	Truncated  bool        `json:"Truncated"`
}

func (s *Server) listGrants(ctx context.Context, p string, in *listInput, rl *reqLog) (any, error) {
	if in.KeyId == "" {
		return nil, required("keyId")
	}
	rl.keyID = in.KeyId
	grants, err := s.store.ListGrantsFiltered(ctx, p, in.KeyId, kms.GrantFilter{GrantID: in.GrantId, GranteePrincipal: in.GranteePrincipal})
	if err != nil {
		return nil, err
	}
	return s.grantList(grants, in.Limit, in.Marker)
}

// grantList is the page of grants Limit and Marker select, in AWS's shape.
func (s *Server) grantList(grants []kms.Grant, limit *int, marker string) (any, error) {
	pg, next, err := page(grants, limit, marker, 50)
	if err != nil {
		return nil, err
	}
	out := listGrantsOutput{Grants: make([]grantJSON, 0, len(pg)), NextMarker: next, Truncated: next != ""}
	for _, g := range pg {
		gj := grantJSON{
			KeyId: g.KeyID, GrantId: g.GrantID, Name: g.Name, CreationDate: epoch(g.CreationDate),
			GranteePrincipal: g.GranteePrincipal, RetiringPrincipal: g.RetiringPrincipal,
			IssuingAccount: s.store.AccountRootARN(),
			Operations:     g.Operations,
		}
		if g.Constraints != nil {
			gj.Constraints = &constraintsJSON{
				EncryptionContextEquals: g.Constraints.EncryptionContextEquals,
				EncryptionContextSubset: g.Constraints.EncryptionContextSubset,
			}
		}
		out.Grants = append(out.Grants, gj)
	}
	return out, nil
}

type grantIDInput struct {
	KeyId      string `json:"KeyId"`
	GrantId    string `json:"GrantId"`
	GrantToken string `json:"GrantToken"`
	DryRun     bool   `json:"DryRun"`
}

func (s *Server) revokeGrant(ctx context.Context, p string, in *grantIDInput, rl *reqLog) (any, error) {
	switch {
	case in.KeyId == "":
		return nil, required("keyId")
	case in.GrantId == "":
		return nil, required("grantId")
	case in.DryRun:
		return nil, unsupported("DryRun is not supported by this server")
	}
	rl.keyID = in.KeyId
	return empty{}, s.store.RevokeGrant(ctx, p, in.KeyId, in.GrantId)
}

func (s *Server) retireGrant(ctx context.Context, p string, in *grantIDInput, rl *reqLog) (any, error) {
	switch {
	case in.KeyId == "" || in.GrantId == "":
		return nil, validationError("RetireGrant needs KeyId and GrantId on this server (retiring by GrantToken alone is not supported)")
	case in.DryRun:
		return nil, unsupported("DryRun is not supported by this server")
	}
	rl.keyID = in.KeyId
	return empty{}, s.store.RetireGrant(ctx, p, in.KeyId, in.GrantId)
}
