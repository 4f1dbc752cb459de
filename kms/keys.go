package kms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// keyRec is one CMK in keys.json.
type keyRec struct {
	ID           string     `json:"id"`
	Owner        string     `json:"owner"`
	Description  string     `json:"description,omitempty"`
	Origin       string     `json:"origin"`
	Manager      string     `json:"manager"`
	State        string     `json:"state"`
	Created      time.Time  `json:"created"`
	DeletionDate *time.Time `json:"deletion_date,omitempty"`
	PendingDays  int        `json:"pending_days,omitempty"`
	Tags         []Tag      `json:"tags,omitempty"`
	Policy       *policyRec `json:"policy,omitempty"` // nil: no policy was put

	// Versions[i] is key material version i+1; the last one wraps new data.
	Versions []*versionRec `json:"versions,omitempty"`

	RotationEnabled bool       `json:"rotation_enabled,omitempty"`
	RotationDays    int        `json:"rotation_days,omitempty"`
	NextRotation    *time.Time `json:"next_rotation,omitempty"`
	OnDemand        int        `json:"on_demand_rotations,omitempty"`
	LastOnDemand    *time.Time `json:"last_on_demand,omitempty"`

	// Imported (EXTERNAL) material.
	ValidTo         *time.Time `json:"valid_to,omitempty"`
	ExpirationModel string     `json:"expiration_model,omitempty"`
	Fingerprint     []byte     `json:"fingerprint,omitempty"` // HMAC of the material, kept after expiry to recognise a re-import
	Import          *importRec `json:"import,omitempty"`

	Grants []*grantRec `json:"grants,omitempty"`

	// ServiceFor is the principal a service key (Manager AWS) serves: the
	// only one besides LocalPrincipal that may use it.
	ServiceFor string `json:"service_for,omitempty"`
}

// versionRec is one version of key material, sealed under the store's seal
// key. Sealed is nil once imported material expired.
type versionRec struct {
	Version uint32    `json:"version"`
	Sealed  []byte    `json:"sealed,omitempty"`
	Created time.Time `json:"created"`
	// Rotation is how a version after the first came to be (RotationAutomatic
	// or RotationOnDemand); empty in stores written before it was recorded.
	Rotation string `json:"rotation,omitempty"`
}

type aliasRec struct {
	Target  string    `json:"target"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	aliasRE = regexp.MustCompile(`^alias/[A-Za-z0-9/_-]+$`)
)

func newKeyID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuidString(b[:]), nil
}

func uuidString(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func uuidBytes(id string) ([]byte, bool) {
	if !uuidRE.MatchString(id) {
		return nil, false
	}
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	return b, err == nil
}

func (s *Store) keyARN(id string) string {
	return fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", s.region, s.account, id)
}

func (s *Store) aliasARN(name string) string {
	return fmt.Sprintf("arn:aws:kms:%s:%s:%s", s.region, s.account, name)
}

// parseRef splits a key reference into a key ID or an alias name. ARNs
// must carry an identity the store has served under (st may be nil: then
// only the current and the default identity count).
func (s *Store) parseRef(st *state, ref string) (keyID, alias string, err error) {
	if ref == "" {
		return "", "", validationErr("KeyId is required")
	}
	if strings.HasPrefix(ref, "arn:") {
		parts := strings.SplitN(ref, ":", 6)
		if len(parts) != 6 || parts[1] != "aws" || parts[2] != "kms" {
			return "", "", newErr(CodeNotFound, "Invalid arn %s", ref)
		}
		if !s.knows(st, parts[3], parts[4]) {
			return "", "", newErr(CodeNotFound, "%s does not exist in region %s, account %s", ref, s.region, s.account)
		}
		switch res := parts[5]; {
		case strings.HasPrefix(res, "key/"):
			return strings.TrimPrefix(res, "key/"), "", nil
		case strings.HasPrefix(res, "alias/"):
			return "", res, nil
		default:
			return "", "", newErr(CodeNotFound, "Invalid arn %s", ref)
		}
	}
	if strings.HasPrefix(ref, "alias/") {
		return "", ref, nil
	}
	return ref, "", nil
}

// resolve finds the key a reference names; aliases are principal's own.
// Keys whose deletion date passed are gone even before the lazy cleanup
// removed them.
func (s *Store) resolve(st *state, principal, ref string) (*keyRec, error) {
	id, alias, err := s.parseRef(st, ref)
	if err != nil {
		return nil, err
	}
	if alias != "" {
		a, ok := st.Aliases[aliasKey(principal, alias)]
		if !ok {
			return nil, newErr(CodeNotFound, "Alias %s is not found.", s.aliasARN(alias))
		}
		id = a.Target
	}
	k, ok := st.Keys[id]
	if !ok || (k.State == StatePendingDeletion && k.DeletionDate != nil && !s.now().Before(*k.DeletionDate)) {
		if !uuidRE.MatchString(id) {
			return nil, newErr(CodeNotFound, "Invalid keyId '%s'", ref)
		}
		return nil, newErr(CodeNotFound, "Key '%s' does not exist", s.keyARN(id))
	}
	return k, nil
}

// stateErr returns the AWS error for using k cryptographically in its
// current state, or nil when k is Enabled.
func (s *Store) stateErr(k *keyRec) error {
	arn := s.keyARN(k.ID)
	switch k.State {
	case StateEnabled:
		return nil
	case StateDisabled:
		return newErr(CodeDisabled, "%s is disabled.", arn)
	case StatePendingDeletion:
		return newErr(CodeInvalidState, "%s is pending deletion.", arn)
	case StatePendingImport:
		return newErr(CodeInvalidState, "%s is pending import.", arn)
	default:
		return newErr(CodeInvalidState, "%s is in state %s.", arn, k.State)
	}
}

func (s *Store) serviceKeyRefusal(k *keyRec, what string) error {
	return newErr(CodeUnsupportedOperation,
		"%s is the encvol service key (%s); it cannot %s. Create a customer key (encvol kms create-key) for keys you need to disable, delete, rotate on demand or share.",
		s.keyARN(k.ID), ServiceKeyAlias, what)
}

// isAdmin reports whether principal administers k: its owner, a principal
// its key policy allows "kms:*", or the local principal, which holds the
// store's root secret anyway.
func isAdmin(k *keyRec, principal string) bool {
	return principal == k.Owner || principal == LocalPrincipal || k.Policy.isAdmin(principal)
}

// accessDenied is AWS's refusal of op on k to principal.
func (s *Store) accessDenied(principal, op string, k *keyRec) error {
	return newErr(CodeAccessDenied, "User: %s is not authorized to perform: kms:%s on resource: %s because no key policy statement or grant allows the kms:%s action",
		s.PrincipalARN(principal), op, s.keyARN(k.ID), op)
}

func checkPrincipal(principal string) error {
	if principal == "" {
		return newErr(CodeAccessDenied, "request has no authenticated principal")
	}
	return nil
}

// requireAdmin admits only the key's administrators to administrative
// operations.
func (s *Store) requireAdmin(k *keyRec, principal, op string) error {
	if err := checkPrincipal(principal); err != nil {
		return err
	}
	if isAdmin(k, principal) {
		return nil
	}
	return newErr(CodeAccessDenied, "User: %s is not authorized to perform: kms:%s on resource: %s because only the key's owner and the principals its key policy allows \"kms:*\" may",
		s.PrincipalARN(principal), op, s.keyARN(k.ID))
}

// authorize admits principal to a grantable operation: administrators
// always, anyone for the service key's cryptographic use and DescribeKey,
// others through a key policy statement or a grant whose conditions the
// encryption context satisfies.
func (s *Store) authorize(k *keyRec, principal, op string, encCtx map[string]string) error {
	_, err := s.authorizeVia(k, principal, op, encCtx)
	return err
}

// authorizeVia is authorize that also tells how the call was admitted:
// nil when the principal may use the key without a grant (administrator,
// service key, key policy), else the grants that admit it, each as its
// name or UnnamedGrant.
func (s *Store) authorizeVia(k *keyRec, principal, op string, encCtx map[string]string) ([]string, error) {
	if err := checkPrincipal(principal); err != nil {
		return nil, err
	}
	if isAdmin(k, principal) {
		return nil, nil
	}
	if k.Manager == KeyManagerAWS {
		if k.ServiceFor == principal && op != OpCreateGrant && op != OpRetireGrant {
			return nil, nil
		}
		if k.ServiceFor != principal {
			return nil, s.foreignServiceKey(principal, op, k)
		}
	}
	if k.Policy.allows(principal, op, encCtx) {
		return nil, nil
	}
	var via []string
	for _, g := range k.Grants {
		if s.isGrantee(g.Grantee, principal) && g.admits(op, encCtx) {
			name := g.Name
			if name == "" {
				name = UnnamedGrant
			}
			via = append(via, name)
		}
	}
	if via != nil {
		return via, nil
	}
	return nil, s.accessDenied(principal, op, k)
}

// foreignServiceKey refuses a principal the service key of another: each
// principal's keyless volumes are its own.
func (s *Store) foreignServiceKey(principal, op string, k *keyRec) error {
	return newErr(CodeAccessDenied, "User: %s is not authorized to perform: kms:%s on resource: %s because it is the encvol service key of another principal; a volume created without a key can be used only by the principal that created it (share a volume under a customer key instead)",
		s.PrincipalARN(principal), op, s.keyARN(k.ID))
}

// UnnamedGrant stands for a grant without a name in the list of grants
// that admitted a call (DecryptVia). Grant names cannot be empty on AWS;
// this one is no valid name there either.
const UnnamedGrant = "*"

// canSee reports whether principal may learn that k exists (ListKeys).
func (s *Store) canSee(k *keyRec, principal string) bool {
	if isAdmin(k, principal) || (k.Manager == KeyManagerAWS && k.ServiceFor == principal) || k.Policy.names(principal) {
		return true
	}
	for _, g := range k.Grants {
		if s.isGrantee(g.Grantee, principal) {
			return true
		}
	}
	return false
}

func (s *Store) metadata(st *state, k *keyRec) KeyMetadata {
	m := KeyMetadata{
		KeyID:                       k.ID,
		Arn:                         s.keyARN(k.ID),
		AWSAccountID:                s.account,
		Description:                 k.Description,
		KeyState:                    k.State,
		Origin:                      k.Origin,
		KeyManager:                  k.Manager,
		Owner:                       k.Owner,
		Enabled:                     k.State == StateEnabled,
		CreationDate:                k.Created,
		PendingDeletionWindowInDays: k.PendingDays,
		KeySpec:                     KeySpecSymmetric,
		KeyUsage:                    KeyUsageEncrypt,
		CurrentVersion:              len(k.Versions),
		ExpirationModel:             k.ExpirationModel,
	}
	if k.DeletionDate != nil {
		d := *k.DeletionDate
		m.DeletionDate = &d
	}
	if k.ValidTo != nil {
		v := *k.ValidTo
		m.ValidTo = &v
	}
	for key, a := range st.Aliases {
		if _, name, _ := splitAliasKey(key); a.Target == k.ID && !slices.Contains(m.Aliases, name) {
			m.Aliases = append(m.Aliases, name)
		}
	}
	sort.Strings(m.Aliases)
	return m
}

// newMaterial creates a fresh 32-byte key material version for k; rotation
// says why (empty for a key's first material).
func (s *Store) newMaterial(k *keyRec, now time.Time, rotation string) error {
	m := make([]byte, 32)
	if _, err := rand.Read(m); err != nil {
		return internalErr("generate key material", err)
	}
	v := uint32(len(k.Versions) + 1)
	sealed, err := s.sealMaterial(m, materialAAD(k.ID, v))
	clear(m)
	if err != nil {
		return err
	}
	k.Versions = append(k.Versions, &versionRec{Version: v, Sealed: sealed, Created: now, Rotation: rotation})
	return nil
}

func materialAAD(id string, v uint32) string {
	return fmt.Sprintf("encvol kms material v1\x00%s\x00%d", id, v)
}

// CreateKey creates a symmetric CMK owned by principal. Origin EXTERNAL
// creates a key without material in state PendingImport.
func (s *Store) CreateKey(ctx context.Context, principal string, in CreateKeyInput) (KeyMetadata, error) {
	var md KeyMetadata
	if err := checkPrincipal(principal); err != nil {
		return md, err
	}
	if err := validateCreate(&in); err != nil {
		s.auditOp(principal, "CreateKey", "", err)
		return md, err
	}
	err := s.write(ctx, func(st *state, _ *storeLock) error {
		k, err := s.createKeyLocked(st, principal, in, KeyManagerCustomer)
		if err != nil {
			return err
		}
		md = s.metadata(st, k)
		return nil
	})
	return md, s.auditOp(principal, "CreateKey", md.KeyID, err)
}

func validateCreate(in *CreateKeyInput) error {
	if in.KeyUsage == "" {
		in.KeyUsage = KeyUsageEncrypt
	}
	if in.KeySpec == "" {
		in.KeySpec = KeySpecSymmetric
	}
	if in.Origin == "" {
		in.Origin = OriginAWSKMS
	}
	if in.KeySpec != KeySpecSymmetric {
		return newErr(CodeUnsupportedOperation, "KeySpec %s is not supported: this KMS stores symmetric keys only (SYMMETRIC_DEFAULT), the only kind that can protect volumes", in.KeySpec)
	}
	if in.KeyUsage != KeyUsageEncrypt {
		return newErr(CodeUnsupportedOperation, "KeyUsage %s is not supported: symmetric keys support ENCRYPT_DECRYPT only", in.KeyUsage)
	}
	if in.Origin != OriginAWSKMS && in.Origin != OriginExternal {
		return newErr(CodeUnsupportedOperation, "Origin %s is not supported: use AWS_KMS (generated material) or EXTERNAL (imported material)", in.Origin)
	}
	if len(in.Description) > 8192 {
		return validationErr("Description is %d characters; at most 8192 allowed", len(in.Description))
	}
	return checkTags(in.Tags)
}

func (s *Store) createKeyLocked(st *state, owner string, in CreateKeyInput, manager string) (*keyRec, error) {
	id, err := newKeyID()
	if err != nil {
		return nil, internalErr("generate key id", err)
	}
	now := s.now().UTC()
	k := &keyRec{
		ID: id, Owner: owner, Description: in.Description, Origin: in.Origin, Manager: manager,
		Created: now, Tags: mergeTags(nil, in.Tags),
	}
	if in.Policy != "" {
		if k.Policy, err = s.parsePolicy(st, k, in.Policy); err != nil {
			return nil, err
		}
	}
	if in.Origin == OriginExternal {
		k.State = StatePendingImport
	} else {
		k.State = StateEnabled
		if err := s.newMaterial(k, now, ""); err != nil {
			return nil, err
		}
	}
	st.Keys[id] = k
	return k, nil
}

// describable resolves keyRef for a read that needs DescribeKey permission.
func (s *Store) describable(st *state, principal, keyRef string) (*keyRec, error) {
	k, err := s.resolve(st, principal, keyRef)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(k, principal, OpDescribeKey, nil); err != nil {
		return nil, err
	}
	return k, nil
}

// DescribeKey returns the key's metadata; it works in every key state.
func (s *Store) DescribeKey(ctx context.Context, principal, keyRef string) (KeyMetadata, error) {
	var md KeyMetadata
	err := s.read(ctx, func(st *state) error {
		k, err := s.describable(st, principal, keyRef)
		if err != nil {
			return err
		}
		md = s.metadata(st, k)
		return nil
	})
	return md, err
}

// ListKeys lists the keys principal owns or holds a grant on, plus the
// service key, sorted by key ID.
func (s *Store) ListKeys(ctx context.Context, principal string) ([]KeyListEntry, error) {
	if err := checkPrincipal(principal); err != nil {
		return nil, err
	}
	var out []KeyListEntry
	err := s.read(ctx, func(st *state) error {
		for _, k := range st.Keys {
			if s.canSee(k, principal) && !s.expired(k) {
				out = append(out, KeyListEntry{KeyID: k.ID, KeyArn: s.keyARN(k.ID)})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, err
}

func (s *Store) expired(k *keyRec) bool {
	return k.State == StatePendingDeletion && k.DeletionDate != nil && !s.now().Before(*k.DeletionDate)
}

// keyWrite runs a state change on the key keyRef names and writes its
// audit record; f decides who may make it.
func (s *Store) keyWrite(ctx context.Context, principal, op, keyRef string, f func(st *state, k *keyRec) error) error {
	var keyID string
	err := s.write(ctx, func(st *state, _ *storeLock) error {
		k, err := s.resolve(st, principal, keyRef)
		if err != nil {
			return err
		}
		keyID = k.ID
		return f(st, k)
	})
	return s.auditOp(principal, op, keyID, err)
}

// adminWrite runs an owner-only state change on the key keyRef names and
// writes its audit record.
func (s *Store) adminWrite(ctx context.Context, principal, op, keyRef string, f func(st *state, k *keyRec) error) error {
	return s.keyWrite(ctx, principal, op, keyRef, func(st *state, k *keyRec) error {
		if err := s.requireAdmin(k, principal, op); err != nil {
			return err
		}
		return f(st, k)
	})
}

// EnableKey moves a Disabled key to Enabled (no-op when already Enabled).
func (s *Store) EnableKey(ctx context.Context, principal, keyRef string) error {
	return s.adminWrite(ctx, principal, "EnableKey", keyRef, func(_ *state, k *keyRec) error {
		switch k.State {
		case StateEnabled:
			return errNoChange
		case StateDisabled:
			k.State = StateEnabled
			return nil
		default:
			return s.stateErr(k)
		}
	})
}

// DisableKey moves an Enabled key to Disabled: from the next call on, in
// every process using the store, it neither wraps nor unwraps data keys.
func (s *Store) DisableKey(ctx context.Context, principal, keyRef string) error {
	return s.adminWrite(ctx, principal, "DisableKey", keyRef, func(_ *state, k *keyRec) error {
		if k.Manager == KeyManagerAWS {
			return s.serviceKeyRefusal(k, "be disabled")
		}
		switch k.State {
		case StateDisabled:
			return errNoChange
		case StateEnabled:
			k.State = StateDisabled
			return nil
		default:
			return s.stateErr(k)
		}
	})
}

// ScheduleKeyDeletion puts the key in PendingDeletion for days (7..30; 0
// means 30). When the date passes the key, its aliases and grants are gone.
func (s *Store) ScheduleKeyDeletion(ctx context.Context, principal, keyRef string, days int) (time.Time, error) {
	if days == 0 {
		days = DefaultPendingWindowDays
	}
	var when time.Time
	err := s.adminWrite(ctx, principal, "ScheduleKeyDeletion", keyRef, func(_ *state, k *keyRec) error {
		if k.Manager == KeyManagerAWS {
			return s.serviceKeyRefusal(k, "be scheduled for deletion")
		}
		if days < MinPendingWindowDays || days > MaxPendingWindowDays {
			return validationErr("PendingWindowInDays must be between %d and %d, got %d", MinPendingWindowDays, MaxPendingWindowDays, days)
		}
		if k.State == StatePendingDeletion {
			return s.stateErr(k)
		}
		when = s.now().UTC().Add(time.Duration(days) * 24 * time.Hour)
		k.State, k.DeletionDate, k.PendingDays = StatePendingDeletion, &when, days
		return nil
	})
	return when, err
}

// CancelKeyDeletion takes a key out of PendingDeletion. Like AWS it leaves
// the key Disabled (or PendingImport when it has no material).
func (s *Store) CancelKeyDeletion(ctx context.Context, principal, keyRef string) error {
	return s.adminWrite(ctx, principal, "CancelKeyDeletion", keyRef, func(_ *state, k *keyRec) error {
		if k.State != StatePendingDeletion {
			return newErr(CodeInvalidState, "%s is not pending deletion (it is %s).", s.keyARN(k.ID), k.State)
		}
		k.State = StateDisabled
		if !k.hasMaterial() {
			k.State = StatePendingImport
		}
		k.DeletionDate, k.PendingDays = nil, 0
		return nil
	})
}

func (k *keyRec) hasMaterial() bool {
	return len(k.Versions) > 0 && k.Versions[len(k.Versions)-1].Sealed != nil
}

func checkAliasName(alias string) error {
	if !strings.HasPrefix(alias, "alias/") {
		return newErr(CodeInvalidAliasName, "Alias must start with the prefix \"alias/\": %q", alias)
	}
	if len(alias) > 256 || !aliasRE.MatchString(alias) {
		return newErr(CodeInvalidAliasName, "Alias %q must be 1-256 characters of A-Z a-z 0-9 / _ - after \"alias/\"", alias)
	}
	if strings.HasPrefix(alias, "alias/aws/") {
		return newErr(CodeInvalidAliasName, "Alias %q: the prefix alias/aws/ is reserved for AWS managed keys", alias)
	}
	return nil
}

// checkNewAlias refuses an alias name a user may not create.
func checkNewAlias(alias string) error {
	if err := checkAliasName(alias); err != nil {
		return err
	}
	if alias == ServiceKeyAlias {
		return newErr(CodeInvalidAliasName, "%s is reserved for the encvol service key", alias)
	}
	return nil
}

// aliasTaken is the refusal of an alias that exists.
func (s *Store) aliasTaken(alias string) error {
	return newErr(CodeAlreadyExists, "An alias with the name %s already exists", s.aliasARN(alias))
}

// CreateAlias points a new alias at a key principal owns.
func (s *Store) CreateAlias(ctx context.Context, principal, alias, targetKeyRef string) error {
	if err := checkNewAlias(alias); err != nil {
		return s.auditOp(principal, "CreateAlias", "", err)
	}
	return s.adminWrite(ctx, principal, "CreateAlias", targetKeyRef, func(st *state, k *keyRec) error {
		if strings.HasPrefix(targetKeyRef, "alias/") || strings.Contains(targetKeyRef, ":alias/") {
			return validationErr("TargetKeyId must be a key ID or key ARN, not an alias (%s)", targetKeyRef)
		}
		if _, ok := st.Aliases[aliasKey(principal, alias)]; ok {
			return s.aliasTaken(alias)
		}
		if k.State == StatePendingDeletion {
			return s.stateErr(k)
		}
		now := s.now().UTC()
		st.Aliases[aliasKey(principal, alias)] = &aliasRec{Target: k.ID, Created: now, Updated: now}
		return nil
	})
}

// CreateKeyWithAlias is CreateKey followed by CreateAlias in one store
// transaction: when the alias is invalid or taken nothing is created, and
// no other process ever sees the key without its alias. The AWS API has no
// such call, so the server does not offer it; remote clients check the
// alias first and retire the key if CreateAlias still fails.
func (s *Store) CreateKeyWithAlias(ctx context.Context, principal string, in CreateKeyInput, alias string) (KeyMetadata, error) {
	var md KeyMetadata
	if err := checkPrincipal(principal); err != nil {
		return md, err
	}
	if err := checkNewAlias(alias); err != nil {
		return md, s.auditOp(principal, "CreateKey", "", err)
	}
	if err := validateCreate(&in); err != nil {
		return md, s.auditOp(principal, "CreateKey", "", err)
	}
	err := s.write(ctx, func(st *state, _ *storeLock) error {
		if _, ok := st.Aliases[aliasKey(principal, alias)]; ok {
			return s.aliasTaken(alias)
		}
		k, err := s.createKeyLocked(st, principal, in, KeyManagerCustomer)
		if err != nil {
			return err
		}
		now := s.now().UTC()
		st.Aliases[aliasKey(principal, alias)] = &aliasRec{Target: k.ID, Created: now, Updated: now}
		md = s.metadata(st, k)
		return nil
	})
	if err := s.auditOp(principal, "CreateKey", md.KeyID, err); err != nil {
		return md, err
	}
	return md, s.auditOp(principal, "CreateAlias", md.KeyID, nil)
}

// UpdateAlias points an existing alias at another key; the caller must own
// both keys.
func (s *Store) UpdateAlias(ctx context.Context, principal, alias, targetKeyRef string) error {
	if err := checkAliasName(alias); err != nil {
		return s.auditOp(principal, "UpdateAlias", "", err)
	}
	return s.adminWrite(ctx, principal, "UpdateAlias", targetKeyRef, func(st *state, k *keyRec) error {
		a, ok := st.Aliases[aliasKey(principal, alias)]
		if !ok {
			return newErr(CodeNotFound, "Alias %s is not found.", s.aliasARN(alias))
		}
		if alias == ServiceKeyAlias {
			return s.serviceKeyRefusal(st.Keys[a.Target], "have its alias moved")
		}
		if old, ok := st.Keys[a.Target]; ok {
			if err := s.requireAdmin(old, principal, "UpdateAlias"); err != nil {
				return err
			}
		}
		if k.State == StatePendingDeletion {
			return s.stateErr(k)
		}
		a.Target, a.Updated = k.ID, s.now().UTC()
		return nil
	})
}

// DeleteAlias removes an alias of a key principal owns.
func (s *Store) DeleteAlias(ctx context.Context, principal, alias string) error {
	if err := checkAliasName(alias); err != nil {
		return s.auditOp(principal, "DeleteAlias", "", err)
	}
	var keyID string
	err := s.write(ctx, func(st *state, _ *storeLock) error {
		a, ok := st.Aliases[aliasKey(principal, alias)]
		if !ok {
			return newErr(CodeNotFound, "Alias %s is not found.", s.aliasARN(alias))
		}
		keyID = a.Target
		if k, ok := st.Keys[a.Target]; ok {
			if alias == ServiceKeyAlias {
				return s.serviceKeyRefusal(k, "lose its alias")
			}
			if err := s.requireAdmin(k, principal, "DeleteAlias"); err != nil {
				return err
			}
		}
		delete(st.Aliases, aliasKey(principal, alias))
		return nil
	})
	return s.auditOp(principal, "DeleteAlias", keyID, err)
}

// ListAliases lists aliases, sorted by name: of one key when keyRef is set,
// else of every key principal can see.
func (s *Store) ListAliases(ctx context.Context, principal, keyRef string) ([]AliasEntry, error) {
	if err := checkPrincipal(principal); err != nil {
		return nil, err
	}
	var out []AliasEntry
	err := s.read(ctx, func(st *state) error {
		only := ""
		if keyRef != "" {
			k, err := s.describable(st, principal, keyRef)
			if err != nil {
				return err
			}
			only = k.ID
		}
		for key, a := range st.Aliases {
			owner, name, _ := splitAliasKey(key)
			k, ok := st.Keys[a.Target]
			if owner != principal || !ok || s.expired(k) || (only != "" && a.Target != only) || !s.canSee(k, principal) {
				continue
			}
			out = append(out, AliasEntry{AliasName: name, AliasArn: s.aliasARN(name), TargetKeyID: a.Target,
				CreationDate: a.Created, LastUpdatedDate: a.Updated})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].AliasName < out[j].AliasName })
	return out, err
}

// EnableKeyRotation turns on automatic rotation every periodDays (90..2560;
// 0 means 365). Rotation happens lazily on the first call after it is due.
func (s *Store) EnableKeyRotation(ctx context.Context, principal, keyRef string, periodDays int) error {
	if periodDays == 0 {
		periodDays = DefaultRotationDays
	}
	return s.adminWrite(ctx, principal, "EnableKeyRotation", keyRef, func(_ *state, k *keyRec) error {
		if err := s.checkRotatable(k, "have its rotation schedule changed (it rotates every year)"); err != nil {
			return err
		}
		if periodDays < MinRotationPeriodDays || periodDays > MaxRotationPeriodDays {
			return validationErr("RotationPeriodInDays must be between %d and %d, got %d", MinRotationPeriodDays, MaxRotationPeriodDays, periodDays)
		}
		next := s.now().UTC().Add(time.Duration(periodDays) * 24 * time.Hour)
		k.RotationEnabled, k.RotationDays, k.NextRotation = true, periodDays, &next
		return nil
	})
}

func (s *Store) externalRefusal(k *keyRec) error {
	return newErr(CodeUnsupportedOperation, "%s origin is EXTERNAL which is not valid for this operation.", s.keyARN(k.ID))
}

// checkRotatable refuses a change to k's rotation: the service key rotates
// on its own schedule (what names the refused change), EXTERNAL keys cannot
// rotate, and the key must be Enabled.
func (s *Store) checkRotatable(k *keyRec, what string) error {
	if k.Manager == KeyManagerAWS {
		return s.serviceKeyRefusal(k, what)
	}
	if k.Origin == OriginExternal {
		return s.externalRefusal(k)
	}
	return s.stateErr(k)
}

// DisableKeyRotation turns automatic rotation off; existing versions stay.
func (s *Store) DisableKeyRotation(ctx context.Context, principal, keyRef string) error {
	return s.adminWrite(ctx, principal, "DisableKeyRotation", keyRef, func(_ *state, k *keyRec) error {
		if err := s.checkRotatable(k, "have its rotation schedule changed (it rotates every year)"); err != nil {
			return err
		}
		if !k.RotationEnabled {
			return errNoChange
		}
		k.RotationEnabled, k.RotationDays, k.NextRotation = false, 0, nil
		return nil
	})
}

// GetKeyRotationStatus reports the rotation schedule and version count.
func (s *Store) GetKeyRotationStatus(ctx context.Context, principal, keyRef string) (RotationStatus, error) {
	var rs RotationStatus
	err := s.read(ctx, func(st *state) error {
		k, err := s.describable(st, principal, keyRef)
		if err != nil {
			return err
		}
		if k.Origin == OriginExternal {
			return s.externalRefusal(k)
		}
		rs = RotationStatus{KeyID: k.ID, Enabled: k.RotationEnabled, PeriodDays: k.RotationDays,
			OnDemandRotations: k.OnDemand, CurrentVersion: len(k.Versions)}
		if k.NextRotation != nil {
			t := *k.NextRotation
			rs.NextRotationDate = &t
		}
		if k.LastOnDemand != nil {
			t := *k.LastOnDemand
			rs.OnDemandRotationStartDate = &t
		}
		return nil
	})
	return rs, err
}

// RotateKeyOnDemand adds a new key material version at once. New data keys
// use it; blobs made under older versions keep decrypting. At most 25 per
// key; refused for EXTERNAL keys and the service key.
func (s *Store) RotateKeyOnDemand(ctx context.Context, principal, keyRef string) error {
	return s.adminWrite(ctx, principal, "RotateKeyOnDemand", keyRef, func(_ *state, k *keyRec) error {
		if err := s.checkRotatable(k, "be rotated on demand (it rotates every year)"); err != nil {
			return err
		}
		if k.OnDemand >= MaxOnDemandRotations {
			return newErr(CodeLimitExceeded, "%s has reached the limit of %d on-demand rotations", s.keyARN(k.ID), MaxOnDemandRotations)
		}
		now := s.now().UTC()
		if err := s.newMaterial(k, now, RotationOnDemand); err != nil {
			return err
		}
		k.OnDemand++
		k.LastOnDemand = &now
		return nil
	})
}

// serviceKeyOwner owns the service key. The colon keeps it from matching
// any principal name a principals file can define.
const serviceKeyOwner = "aws:encvol"

// ServiceKey returns principal's encvol service key, creating it (and
// principal's alias alias/encvol/default) on first use. Only principal
// (and LocalPrincipal) may use it for data keys; nobody may disable,
// delete, rotate on demand or grant it.
func (s *Store) ServiceKey(ctx context.Context, principal string) (KeyMetadata, error) {
	var md KeyMetadata
	if err := checkPrincipal(principal); err != nil {
		return md, err
	}
	found := false
	err := s.read(ctx, func(st *state) error {
		if a, ok := st.Aliases[aliasKey(principal, ServiceKeyAlias)]; ok {
			if k, ok := st.Keys[a.Target]; ok {
				md, found = s.metadata(st, k), true
			}
		}
		return nil
	})
	if err != nil || found {
		return md, err
	}
	created := false
	err = s.write(ctx, func(st *state, _ *storeLock) error {
		if a, ok := st.Aliases[aliasKey(principal, ServiceKeyAlias)]; ok {
			if k, ok := st.Keys[a.Target]; ok {
				md = s.metadata(st, k)
				return errNoChange
			}
		}
		k, err := s.createKeyLocked(st, serviceKeyOwner, CreateKeyInput{
			Description: "Default key that protects the encvol volumes " + principal + " creates without a key",
			Origin:      OriginAWSKMS,
		}, KeyManagerAWS)
		if err != nil {
			return err
		}
		next := k.Created.Add(DefaultRotationDays * 24 * time.Hour)
		k.RotationEnabled, k.RotationDays, k.NextRotation = true, DefaultRotationDays, &next
		k.ServiceFor = principal
		st.Aliases[aliasKey(principal, ServiceKeyAlias)] = &aliasRec{Target: k.ID, Created: k.Created, Updated: k.Created}
		md = s.metadata(st, k)
		created = true
		return nil
	})
	if created || err != nil {
		return md, s.auditOp(principal, "CreateServiceKey", md.KeyID, err)
	}
	return md, nil
}

// computeDue records the earliest time a lazy event becomes due.
func (st *state) computeDue() {
	var due time.Time
	note := func(t *time.Time) {
		if t != nil && (due.IsZero() || t.Before(due)) {
			due = *t
		}
	}
	for _, k := range st.Keys {
		switch {
		case k.State == StatePendingDeletion:
			note(k.DeletionDate)
		case k.State == StateEnabled && k.RotationEnabled && k.Origin == OriginAWSKMS:
			note(k.NextRotation)
		}
		if k.Origin == OriginExternal && k.ValidTo != nil && k.hasMaterial() {
			note(k.ValidTo)
		}
	}
	st.nextDue = due
}

func (st *state) isDue(now time.Time) bool {
	return !st.nextDue.IsZero() && !now.Before(st.nextDue)
}

// applyDue carries out due lazy events: deletes keys whose deletion date
// passed, rotates keys whose rotation is due, and drops imported material
// that expired. It reports whether it changed anything.
func (s *Store) applyDue(st *state) bool {
	now := s.now().UTC()
	if !st.isDue(now) {
		return false
	}
	changed := false
	for id, k := range st.Keys {
		if k.State == StatePendingDeletion && k.DeletionDate != nil && !now.Before(*k.DeletionDate) {
			delete(st.Keys, id)
			for name, a := range st.Aliases {
				if a.Target == id {
					delete(st.Aliases, name)
				}
			}
			s.auditSystem("DeleteKey", id, 0, "deletion date passed")
			changed = true
			continue
		}
		if k.Origin == OriginExternal && k.ValidTo != nil && k.hasMaterial() && !now.Before(*k.ValidTo) {
			k.dropMaterial()
			s.auditSystem("DeleteImportedKeyMaterial", id, 0, "imported key material expired")
			changed = true
		}
		if s.seal != nil && k.State == StateEnabled && k.RotationEnabled && k.Origin == OriginAWSKMS && k.NextRotation != nil && !now.Before(*k.NextRotation) {
			if err := s.newMaterial(k, now, RotationAutomatic); err != nil {
				continue // retried on the next call; the old version keeps working
			}
			next := now.Add(time.Duration(k.RotationDays) * 24 * time.Hour)
			k.NextRotation = &next
			s.auditSystem("RotateKey", id, len(k.Versions), "automatic rotation")
			changed = true
		}
	}
	st.computeDue()
	return changed
}
