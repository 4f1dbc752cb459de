package kms

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"maps"
	"slices"
	"sort"
	"time"
)

type grantRec struct {
	ID          string            `json:"id"`
	Token       string            `json:"token"`
	Name        string            `json:"name,omitempty"`
	Grantee     string            `json:"grantee"`
	Retiring    string            `json:"retiring,omitempty"`
	Issuer      string            `json:"issuer"`
	Operations  []string          `json:"operations"`
	Constraints *GrantConstraints `json:"constraints,omitempty"`
	Created     time.Time         `json:"created"`
}

var grantableOps = []string{
	OpDecrypt, OpEncrypt, OpGenerateDataKey, OpGenerateDataKeyWithoutPlaintext,
	OpReEncryptFrom, OpReEncryptTo, OpDescribeKey, OpCreateGrant, OpRetireGrant,
}

// contextFreeOps take no encryption context: as in AWS, a grant's
// constraints do not apply to them.
var contextFreeOps = []string{OpDescribeKey, OpRetireGrant}

// admits reports whether g lets its grantee perform op with encCtx.
func (g *grantRec) admits(op string, encCtx map[string]string) bool {
	if !slices.Contains(g.Operations, op) {
		return false
	}
	return slices.Contains(contextFreeOps, op) || g.Constraints.Allows(encCtx)
}

// Allows reports whether a request with encCtx satisfies the constraints
// (nil constrains nothing).
func (c *GrantConstraints) Allows(encCtx map[string]string) bool {
	if c == nil {
		return true
	}
	if len(c.EncryptionContextEquals) > 0 && !maps.Equal(c.EncryptionContextEquals, encCtx) {
		return false
	}
	for k, v := range c.EncryptionContextSubset {
		if got, ok := encCtx[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (c *GrantConstraints) empty() bool {
	return c == nil || (len(c.EncryptionContextEquals) == 0 && len(c.EncryptionContextSubset) == 0)
}

func sameConstraints(a, b *GrantConstraints) bool {
	if a.empty() || b.empty() {
		return a.empty() == b.empty()
	}
	return maps.Equal(a.EncryptionContextEquals, b.EncryptionContextEquals) &&
		maps.Equal(a.EncryptionContextSubset, b.EncryptionContextSubset)
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// CreateGrant lets GranteePrincipal perform Operations on the key. The owner
// may grant anything; a grantee holding a CreateGrant grant may pass on at
// most its own operations under its own constraints. A second call with the
// same name and parameters returns the existing grant. Grants on the service
// key are refused: volumes that are shared need a customer key.
func (s *Store) CreateGrant(ctx context.Context, principal string, in GrantInput) (grantID, grantToken string, err error) {
	err = s.keyWrite(ctx, principal, "CreateGrant", in.KeyRef, func(st *state, k *keyRec) error {
		if err := checkPrincipal(principal); err != nil {
			return err
		}
		if k.Manager == KeyManagerAWS {
			return s.serviceKeyRefusal(k, "be shared with grants")
		}
		if err := s.validateGrant(st, &in); err != nil {
			return err
		}
		if !isAdmin(k, principal) {
			if !s.mayDelegate(k, principal, in) {
				return s.accessDenied(principal, OpCreateGrant, k)
			}
		}
		if k.State == StatePendingDeletion {
			return s.stateErr(k)
		}
		if in.Name != "" {
			for _, g := range k.Grants {
				if g.Name == in.Name && g.Grantee == in.GranteePrincipal && g.Retiring == in.RetiringPrincipal &&
					slices.Equal(g.Operations, in.Operations) && sameConstraints(g.Constraints, in.Constraints) {
					grantID, grantToken = g.ID, g.Token
					return errNoChange
				}
			}
		}
		if len(k.Grants) >= 50000 {
			return newErr(CodeLimitExceeded, "%s has too many grants", s.keyARN(k.ID))
		}
		id, err := randomToken(32)
		if err != nil {
			return internalErr("grant id", err)
		}
		tok := make([]byte, 48)
		if _, err := rand.Read(tok); err != nil {
			return internalErr("grant token", err)
		}
		g := &grantRec{ID: id, Token: base64.RawURLEncoding.EncodeToString(tok), Name: in.Name,
			Grantee: in.GranteePrincipal, Retiring: in.RetiringPrincipal, Issuer: principal,
			Operations: in.Operations, Created: s.now().UTC()}
		if !in.Constraints.empty() {
			g.Constraints = in.Constraints
		}
		k.Grants = append(k.Grants, g)
		grantID, grantToken = g.ID, g.Token
		return nil
	})
	return grantID, grantToken, err
}

// validateGrant checks in and turns its principals (names or IAM user
// ARNs) into names.
func (s *Store) validateGrant(st *state, in *GrantInput) error {
	if in.GranteePrincipal == "" {
		return validationErr("GranteePrincipal is required")
	}
	var err error
	if in.GranteePrincipal, err = s.granteeName(st, "GranteePrincipal", in.GranteePrincipal, true); err != nil {
		return err
	}
	if in.RetiringPrincipal != "" {
		if in.RetiringPrincipal, err = s.principalName(st, "RetiringPrincipal", in.RetiringPrincipal); err != nil {
			return err
		}
	}
	if len(in.Operations) == 0 {
		return validationErr("Operations must list at least one operation")
	}
	ops := slices.Clone(in.Operations)
	sort.Strings(ops)
	ops = slices.Compact(ops)
	for _, op := range ops {
		if !slices.Contains(grantableOps, op) {
			return validationErr("grant operation %q is not supported; valid operations: %v", op, grantableOps)
		}
	}
	in.Operations = ops
	if c := in.Constraints; c != nil {
		if len(c.EncryptionContextEquals) > 0 && len(c.EncryptionContextSubset) > 0 {
			return validationErr("use either EncryptionContextEquals or EncryptionContextSubset, not both")
		}
		// An empty map constrains nothing: clients (Terraform's provider)
		// send the constraint they were not given as {}.
		norm := &GrantConstraints{}
		if len(c.EncryptionContextEquals) > 0 {
			norm.EncryptionContextEquals = maps.Clone(c.EncryptionContextEquals)
		}
		if len(c.EncryptionContextSubset) > 0 {
			norm.EncryptionContextSubset = maps.Clone(c.EncryptionContextSubset)
		}
		in.Constraints = norm
	}
	if len(in.Name) > 256 {
		return validationErr("grant Name is longer than 256 characters")
	}
	return nil
}

// mayDelegate reports whether a grantee may create the grant in: one of its
// grants must allow CreateGrant and every requested operation, with the same
// constraints.
func (s *Store) mayDelegate(k *keyRec, principal string, in GrantInput) bool {
	for _, g := range k.Grants {
		if !s.isGrantee(g.Grantee, principal) || !slices.Contains(g.Operations, OpCreateGrant) {
			continue
		}
		ok := true
		for _, op := range in.Operations {
			if !slices.Contains(g.Operations, op) {
				ok = false
			}
		}
		if ok && (g.Constraints.empty() || sameConstraints(g.Constraints, in.Constraints)) {
			return true
		}
	}
	return false
}

// GrantFilter selects grants; empty fields match every grant. Principals
// may be names or IAM user ARNs.
type GrantFilter struct {
	GrantID          string
	GranteePrincipal string
}

// ListGrants lists the key's grants (administrators only), oldest first.
func (s *Store) ListGrants(ctx context.Context, principal, keyRef string) ([]Grant, error) {
	return s.ListGrantsFiltered(ctx, principal, keyRef, GrantFilter{})
}

// ListGrantsFiltered is ListGrants keeping the grants f selects.
func (s *Store) ListGrantsFiltered(ctx context.Context, principal, keyRef string, f GrantFilter) ([]Grant, error) {
	var out []Grant
	err := s.adminRead(ctx, principal, "ListGrants", keyRef, func(st *state, k *keyRec) error {
		grantee := ""
		if f.GranteePrincipal != "" {
			var err error
			if grantee, err = s.granteeName(st, "GranteePrincipal", f.GranteePrincipal, false); err != nil {
				return err
			}
		}
		for _, g := range k.Grants {
			if (f.GrantID == "" || g.ID == f.GrantID) && (grantee == "" || g.Grantee == grantee) {
				out = append(out, s.exportGrant(k.ID, g))
			}
		}
		return nil
	})
	return out, err
}

// ListRetirableGrants lists the grants, on every key, whose retiring
// principal is retiring: all of them when the caller is that principal,
// else those on keys the caller administers. Sorted by key, then oldest
// first.
func (s *Store) ListRetirableGrants(ctx context.Context, principal, retiring string) ([]Grant, error) {
	if err := checkPrincipal(principal); err != nil {
		return nil, err
	}
	var out []Grant
	err := s.read(ctx, func(st *state) error {
		name, err := s.principalName(st, "RetiringPrincipal", retiring)
		if err != nil {
			return err
		}
		ids := slices.Sorted(maps.Keys(st.Keys))
		for _, id := range ids {
			k := st.Keys[id]
			if s.expired(k) || (name != principal && !isAdmin(k, principal)) {
				continue
			}
			for _, g := range k.Grants {
				if g.Retiring == name {
					out = append(out, s.exportGrant(k.ID, g))
				}
			}
		}
		return nil
	})
	return out, err
}

// exportGrant returns g as ListGrants shows it, principals as ARNs.
func (s *Store) exportGrant(keyID string, g *grantRec) Grant {
	out := Grant{KeyID: keyID, GrantID: g.ID, Name: g.Name, GranteePrincipal: s.PrincipalARN(g.Grantee),
		IssuingPrincipal: s.PrincipalARN(g.Issuer), Operations: slices.Clone(g.Operations),
		CreationDate: g.Created}
	if g.Retiring != "" {
		out.RetiringPrincipal = s.PrincipalARN(g.Retiring)
	}
	if g.Constraints != nil {
		c := *g.Constraints
		c.EncryptionContextEquals = maps.Clone(c.EncryptionContextEquals)
		c.EncryptionContextSubset = maps.Clone(c.EncryptionContextSubset)
		out.Constraints = &c
	}
	return out
}

// RevokeGrant deletes a grant (key owner only). The grantee's next call is
// denied, in every process using the store.
func (s *Store) RevokeGrant(ctx context.Context, principal, keyRef, grantID string) error {
	return s.adminWrite(ctx, principal, "RevokeGrant", keyRef, func(_ *state, k *keyRec) error {
		return s.dropGrant(k, grantID)
	})
}

// RetireGrant deletes a grant when principal is its retiring principal, a
// grantee allowed RetireGrant by it, or the key owner.
func (s *Store) RetireGrant(ctx context.Context, principal, keyRef, grantID string) error {
	return s.keyWrite(ctx, principal, "RetireGrant", keyRef, func(_ *state, k *keyRec) error {
		if err := checkPrincipal(principal); err != nil {
			return err
		}
		for _, g := range k.Grants {
			if g.ID != grantID {
				continue
			}
			if isAdmin(k, principal) || g.Retiring == principal ||
				(g.Grantee == principal && slices.Contains(g.Operations, OpRetireGrant)) {
				return s.dropGrant(k, grantID)
			}
			return s.accessDenied(principal, OpRetireGrant, k)
		}
		return newErr(CodeInvalidGrantID, "Grant ID %s is not valid for %s", grantID, s.keyARN(k.ID))
	})
}

func (s *Store) dropGrant(k *keyRec, grantID string) error {
	for i, g := range k.Grants {
		if g.ID == grantID {
			k.Grants = slices.Delete(k.Grants, i, i+1)
			return nil
		}
	}
	return newErr(CodeInvalidGrantID, "Grant ID %s is not valid for %s", grantID, s.keyARN(k.ID))
}
