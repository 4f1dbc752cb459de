package kms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Key policies. A key may carry a policy put by PutKeyPolicy or CreateKey's
// Policy. This KMS enforces a subset of AWS's policy language and refuses
// every document outside it, naming the statement and the reason, so that
// nothing a caller writes is stored without effect:
//
//   - Version "2012-10-17" or "2008-10-17" (or none), an optional Id, and
//     Statement: one statement or a list.
//   - Each statement has Effect "Allow", a Principal {"AWS": P or [P...]}
//     where P is a principal of this KMS (arn:aws:iam::ACCOUNT:user/NAME or
//     NAME), Resource "*" or the key's own ARN, and an Action:
//   - "kms:*" (or "*"): the principals administer the key, as its owner
//     does; no Condition.
//   - use actions: kms:Decrypt, kms:DescribeKey, kms:Encrypt,
//     kms:GenerateDataKey, kms:GenerateDataKeyWithoutPlaintext,
//     kms:GenerateDataKey*, kms:ReEncryptFrom, kms:ReEncryptTo and
//     kms:ReEncrypt*, optionally under a Condition of
//     "StringEquals": {"kms:EncryptionContext:KEY": VALUE or [VALUE...]}
//     (the request's context has KEY with one of the values) and
//     "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": [KEY...]}
//     (the request's context has no other keys).
//
// The owner of a key always administers it, so a policy must name the
// owner in a kms:* statement: then what GetKeyPolicy returns is the whole
// of what the policy allows. Grants come on top, as in AWS. A key without a
// policy answers GetKeyPolicy with its effective access: the owner and one
// statement per grant (Sid "EncvolGrant<grant ID>"); those grant statements
// describe grants and are refused in a policy that is put, because a grant
// is revoked with RevokeGrant, not by editing a document.

const (
	// PolicyName is the only key policy name, as in AWS.
	PolicyName = "default"

	maxPolicySize     = 32 << 10
	grantSidPrefix    = "EncvolGrant"
	ownerSid          = "EncvolKeyOwner"
	effectiveAccessID = "encvol-effective-access"
	policyVersion     = "2012-10-17"
)

// policyRec is a key policy that was put: the document as given (compacted),
// which GetKeyPolicy returns, and what it allows.
type policyRec struct {
	Document string       `json:"document"`
	Admins   []string     `json:"admins"`
	Rules    []policyRule `json:"rules,omitempty"`
}

// policyRule is one use statement: its principals may perform Operations
// when the request's encryption context satisfies the conditions.
type policyRule struct {
	Principals []string `json:"principals"`
	Operations []string `json:"operations"`
	// Context maps an encryption context key to the values allowed for it;
	// the request's context must contain every key.
	Context map[string][]string `json:"context,omitempty"`
	// OnlyKeys, when set, limits the request's context to the keys in Keys.
	OnlyKeys bool     `json:"only_keys,omitempty"`
	Keys     []string `json:"keys,omitempty"`
}

// useActions maps the lower-case use actions a statement may name to the
// operations they allow.
var useActions = map[string][]string{
	"kms:decrypt":                         {OpDecrypt},
	"kms:describekey":                     {OpDescribeKey},
	"kms:encrypt":                         {OpEncrypt},
	"kms:generatedatakey":                 {OpGenerateDataKey},
	"kms:generatedatakeywithoutplaintext": {OpGenerateDataKeyWithoutPlaintext},
	"kms:generatedatakey*":                {OpGenerateDataKey, OpGenerateDataKeyWithoutPlaintext},
	"kms:reencryptfrom":                   {OpReEncryptFrom},
	"kms:reencryptto":                     {OpReEncryptTo},
	"kms:reencrypt*":                      {OpReEncryptFrom, OpReEncryptTo},
}

func (r *policyRule) allows(principal, op string, encCtx map[string]string) bool {
	if !slices.Contains(r.Principals, principal) || !slices.Contains(r.Operations, op) {
		return false
	}
	for k, vals := range r.Context {
		v, ok := encCtx[k]
		if !ok || !slices.Contains(vals, v) {
			return false
		}
	}
	if r.OnlyKeys {
		for k := range encCtx {
			if !slices.Contains(r.Keys, k) {
				return false
			}
		}
	}
	return true
}

func (p *policyRec) isAdmin(principal string) bool {
	return p != nil && slices.Contains(p.Admins, principal)
}

func (p *policyRec) allows(principal, op string, encCtx map[string]string) bool {
	if p == nil {
		return false
	}
	for i := range p.Rules {
		if p.Rules[i].allows(principal, op, encCtx) {
			return true
		}
	}
	return false
}

// names reports whether the policy names principal at all.
func (p *policyRec) names(principal string) bool {
	if p.isAdmin(principal) {
		return true
	}
	if p != nil {
		for _, r := range p.Rules {
			if slices.Contains(r.Principals, principal) {
				return true
			}
		}
	}
	return false
}

// policyErr is the refusal of a document outside the supported subset.
func policyErr(format string, args ...any) *Error {
	return newErr(CodeMalformedPolicy, format, args...)
}

// policyParser checks one document for the key keyID owned by owner.
type policyParser struct {
	s     *Store
	st    *state
	keyID string
	owner string
}

// parsePolicy checks doc against the subset and returns what it allows.
func (s *Store) parsePolicy(st *state, k *keyRec, doc string) (*policyRec, error) {
	if len(doc) > maxPolicySize {
		return nil, newErr(CodeLimitExceeded, "the key policy is %d bytes; at most %d are allowed", len(doc), maxPolicySize)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(doc)); err != nil {
		return nil, policyErr("the key policy is not valid JSON: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(compact.Bytes(), &top); err != nil {
		return nil, policyErr("the key policy must be a JSON object with Version and Statement")
	}
	for name := range top {
		if name != "Version" && name != "Id" && name != "Statement" {
			return nil, policyErr("the key policy has an element %q; supported are Version, Id and Statement", name)
		}
	}
	if raw, ok := top["Version"]; ok {
		var v string
		if json.Unmarshal(raw, &v) != nil || (v != "2012-10-17" && v != "2008-10-17") {
			return nil, policyErr("the key policy's Version %s is not valid: use \"2012-10-17\"", raw)
		}
	}
	if raw, ok := top["Id"]; ok {
		var id string
		if json.Unmarshal(raw, &id) != nil {
			return nil, policyErr("the key policy's Id must be a string")
		}
	}
	stmts, err := statementList(top["Statement"])
	if err != nil {
		return nil, err
	}
	pp := policyParser{s: s, st: st, keyID: k.ID, owner: k.Owner}
	rec := &policyRec{Document: compact.String()}
	for i, raw := range stmts {
		if err := pp.statement(rec, i+1, raw); err != nil {
			return nil, err
		}
	}
	sort.Strings(rec.Admins)
	rec.Admins = slices.Compact(rec.Admins)
	if k.Manager == KeyManagerCustomer && !rec.isAdmin(k.Owner) {
		return nil, policyErr("the key policy has no \"kms:*\" statement for the key's owner %s: on this KMS the owner always administers its key, so the policy must say so (add a statement allowing \"kms:*\" to it)", s.PrincipalARN(k.Owner))
	}
	return rec, nil
}

func statementList(raw json.RawMessage) ([]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, policyErr("the key policy has no Statement")
	case raw[0] == '{':
		return []json.RawMessage{raw}, nil
	case raw[0] == '[':
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, policyErr("the key policy's Statement is not a list of statements: %v", err)
		}
		if len(list) == 0 {
			return nil, policyErr("the key policy's Statement list is empty")
		}
		return list, nil
	default:
		return nil, policyErr("the key policy's Statement must be a statement object or a list of them")
	}
}

// stringList decodes a JSON string or list of strings.
func stringList(raw json.RawMessage) ([]string, bool) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, true
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
		return many, true
	}
	return nil, false
}

func (pp *policyParser) statement(rec *policyRec, n int, raw json.RawMessage) error {
	var el map[string]json.RawMessage
	if err := json.Unmarshal(raw, &el); err != nil {
		return policyErr("statement %d is not a JSON object", n)
	}
	where := fmt.Sprintf("statement %d", n)
	if sidRaw, ok := el["Sid"]; ok {
		var sid string
		if json.Unmarshal(sidRaw, &sid) != nil {
			return policyErr("%s: Sid must be a string", where)
		}
		where = fmt.Sprintf("statement %d (Sid %q)", n, sid)
		if strings.HasPrefix(sid, grantSidPrefix) {
			return policyErr("%s describes a grant (GetKeyPolicy lists grants for information); grants are changed with CreateGrant, RevokeGrant and RetireGrant, not in a key policy: remove the statement", where)
		}
	}
	for name := range el {
		switch name {
		case "Sid", "Effect", "Principal", "Action", "Resource", "Condition":
		case "NotAction", "NotPrincipal", "NotResource":
			return policyErr("%s: %s is not supported; name the principals, actions and resource the statement allows", where, name)
		default:
			return policyErr("%s has an element %q; supported are Sid, Effect, Principal, Action, Resource and Condition", where, name)
		}
	}
	var effect string
	if json.Unmarshal(el["Effect"], &effect) != nil || effect != "Allow" {
		if effect == "Deny" {
			return policyErr("%s: Effect Deny is not supported: access on this KMS only comes from the owner, \"Allow\" statements and grants, so take access away by removing what gives it", where)
		}
		return policyErr("%s: Effect must be \"Allow\"", where)
	}
	principals, err := pp.principals(where, el["Principal"])
	if err != nil {
		return err
	}
	if err := pp.resource(where, el["Resource"]); err != nil {
		return err
	}
	actions, ok := stringList(el["Action"])
	if !ok {
		return policyErr("%s: Action must be an action or a list of actions, such as \"kms:Decrypt\"", where)
	}
	admin := false
	var ops []string
	for _, a := range actions {
		la := strings.ToLower(a)
		if la == "kms:*" || la == "*" {
			admin = true
			continue
		}
		use, ok := useActions[la]
		if !ok {
			return policyErr("%s: action %s is outside the supported subset: use \"kms:*\" for administration, or use actions (kms:Decrypt, kms:DescribeKey, kms:Encrypt, kms:GenerateDataKey*, kms:ReEncrypt*)", where, a)
		}
		ops = append(ops, use...)
	}
	condRaw, hasCond := el["Condition"]
	if admin {
		if hasCond {
			return policyErr("%s: a \"kms:*\" statement cannot have a Condition on this KMS; conditions are supported on use statements only", where)
		}
		rec.Admins = append(rec.Admins, principals...)
		return nil
	}
	sort.Strings(ops)
	rule := policyRule{Principals: principals, Operations: slices.Compact(ops)}
	if hasCond {
		if slices.Contains(rule.Operations, OpDescribeKey) {
			return policyErr("%s: kms:DescribeKey has no encryption context, so a Condition on it would never allow it; put kms:DescribeKey in a statement without a Condition", where)
		}
		if err := condition(where, condRaw, &rule); err != nil {
			return err
		}
	}
	rec.Rules = append(rec.Rules, rule)
	return nil
}

func (pp *policyParser) principals(where string, raw json.RawMessage) ([]string, error) {
	if raw == nil {
		return nil, policyErr("%s has no Principal", where)
	}
	var star string
	if json.Unmarshal(raw, &star) == nil {
		return nil, policyErr("%s: Principal %q is not supported; name principals as {\"AWS\": \"arn:aws:iam::%s:user/NAME\"}", where, star, pp.s.account)
	}
	var byType map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byType); err != nil {
		return nil, policyErr("%s: Principal must be {\"AWS\": PRINCIPAL or [PRINCIPAL, ...]}", where)
	}
	for t := range byType {
		if t != "AWS" {
			return nil, policyErr("%s: principal type %q is not supported; this KMS's principals are users, named under \"AWS\"", where, t)
		}
	}
	refs, ok := stringList(byType["AWS"])
	if !ok {
		return nil, policyErr("%s: Principal must be {\"AWS\": PRINCIPAL or [PRINCIPAL, ...]}", where)
	}
	names := make([]string, 0, len(refs))
	for _, ref := range refs {
		switch {
		case ref == "*":
			return nil, policyErr("%s: principal \"*\" (everybody) is not supported; name the principals", where)
		case strings.HasPrefix(ref, "arn:aws:iam::") && strings.HasSuffix(ref, ":root"):
			return nil, policyErr("%s: principal %s is an account, which on AWS hands the decision to IAM policies; this KMS has no IAM policies, so name the users (arn:aws:iam::%s:user/NAME)", where, ref, pp.s.account)
		}
		name, err := pp.s.principalName(pp.st, "principal", ref)
		if err != nil {
			var e *Error
			msg := err.Error()
			if errors.As(err, &e) {
				msg = e.Message
			}
			return nil, policyErr("%s: %s", where, msg)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return slices.Compact(names), nil
}

func (pp *policyParser) resource(where string, raw json.RawMessage) error {
	if raw == nil {
		return policyErr("%s has no Resource; use \"Resource\": \"*\" (the key the policy is attached to)", where)
	}
	res, ok := stringList(raw)
	if !ok {
		return policyErr("%s: Resource must be \"*\" or the key's ARN", where)
	}
	for _, r := range res {
		if r == "*" {
			continue
		}
		id, alias, err := pp.s.parseRef(pp.st, r)
		if err != nil || alias != "" || id != pp.keyID || !strings.HasPrefix(r, "arn:") {
			return policyErr("%s: Resource %s is not this key; a key policy applies to its own key only: use \"*\"", where, r)
		}
	}
	return nil
}

// Condition operators and keys of the subset.
const (
	condStringEquals = "StringEquals"
	condForAllValues = "ForAllValues:StringEquals"
	condKeyContext   = "kms:EncryptionContext:"
	condKeyKeys      = "kms:EncryptionContextKeys"
)

func condition(where string, raw json.RawMessage, rule *policyRule) error {
	var ops map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ops); err != nil {
		return policyErr("%s: Condition must be {\"StringEquals\": {\"kms:EncryptionContext:KEY\": \"VALUE\"}}", where)
	}
	for op, keys := range ops {
		for key, valRaw := range keys {
			vals, ok := stringList(valRaw)
			if !ok {
				return policyErr("%s: condition %s %s must be a string or a list of strings", where, op, key)
			}
			switch {
			case op == condStringEquals && len(key) > len(condKeyContext) && strings.EqualFold(key[:len(condKeyContext)], condKeyContext):
				if rule.Context == nil {
					rule.Context = map[string][]string{}
				}
				ctxKey := key[len(condKeyContext):]
				rule.Context[ctxKey] = append(rule.Context[ctxKey], vals...)
			case op == condForAllValues && strings.EqualFold(key, condKeyKeys):
				rule.OnlyKeys = true
				rule.Keys = append(rule.Keys, vals...)
			default:
				return policyErr("%s: condition %s on %s is outside the supported subset; use \"StringEquals\" on \"kms:EncryptionContext:KEY\" or \"ForAllValues:StringEquals\" on \"kms:EncryptionContextKeys\"", where, op, key)
			}
		}
	}
	for k, v := range rule.Context {
		sort.Strings(v)
		rule.Context[k] = slices.Compact(v)
	}
	sort.Strings(rule.Keys)
	rule.Keys = slices.Compact(rule.Keys)
	return nil
}

// ---- GetKeyPolicy documents ----

type policyDocOut struct {
	Version   string         `json:"Version"`
	ID        string         `json:"Id"`
	Statement []statementOut `json:"Statement"`
}

type statementOut struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Principal map[string]string         `json:"Principal"`
	Action    any                       `json:"Action"`
	Resource  string                    `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

func actionNames(ops []string) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = "kms:" + op
	}
	sort.Strings(out)
	return out
}

// policyDocument returns what GetKeyPolicy answers for k: the policy that
// was put, or else the key's effective access.
func (s *Store) policyDocument(k *keyRec) (string, error) {
	if k.Policy != nil {
		return k.Policy.Document, nil
	}
	doc := policyDocOut{Version: policyVersion, ID: effectiveAccessID}
	if k.Manager == KeyManagerAWS {
		doc.Statement = append(doc.Statement, statementOut{
			Sid: "EncvolServiceKeyUse", Effect: "Allow", Principal: map[string]string{"AWS": s.PrincipalARN(k.ServiceFor)},
			Action: actionNames([]string{OpDecrypt, OpDescribeKey, OpEncrypt, OpGenerateDataKey,
				OpGenerateDataKeyWithoutPlaintext, OpReEncryptFrom, OpReEncryptTo}),
			Resource: "*",
		})
	} else {
		doc.Statement = append(doc.Statement, statementOut{
			Sid: ownerSid, Effect: "Allow", Principal: map[string]string{"AWS": s.PrincipalARN(k.Owner)},
			Action: "kms:*", Resource: "*",
		})
	}
	for _, g := range k.Grants {
		doc.Statement = append(doc.Statement, s.grantStatements(g)...)
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", internalErr("encode key policy", err)
	}
	return string(out), nil
}

// grantStatements describe grant g: one statement, or two when the grant's
// constraints leave out the operations that take no encryption context.
func (s *Store) grantStatements(g *grantRec) []statementOut {
	stmt := func(sid string, ops []string) statementOut {
		return statementOut{Sid: sid, Effect: "Allow", Principal: map[string]string{"AWS": s.PrincipalARN(g.Grantee)},
			Action: actionNames(ops), Resource: "*"}
	}
	c := g.Constraints
	if c.empty() {
		return []statementOut{stmt(grantSidPrefix+g.ID, g.Operations)}
	}
	var constrained, free []string
	for _, op := range g.Operations {
		if slices.Contains(contextFreeOps, op) {
			free = append(free, op)
		} else {
			constrained = append(constrained, op)
		}
	}
	var out []statementOut
	if len(constrained) > 0 {
		st := stmt(grantSidPrefix+g.ID, constrained)
		pairs := c.EncryptionContextSubset
		st.Condition = map[string]map[string]any{}
		if len(c.EncryptionContextEquals) > 0 {
			pairs = c.EncryptionContextEquals
			st.Condition[condForAllValues] = map[string]any{condKeyKeys: slices.Sorted(maps.Keys(pairs))}
		}
		eq := map[string]any{}
		for k, v := range pairs {
			eq[condKeyContext+k] = v
		}
		st.Condition[condStringEquals] = eq
		out = append(out, st)
	}
	if len(free) > 0 {
		out = append(out, stmt(grantSidPrefix+g.ID+"NoContext", free))
	}
	return out
}
