package kms

import (
	"maps"
	"slices"
	"strings"
)

// GroupPrefix marks a grantee that is a group of principals rather than one
// principal: "group:NAME". A grant to a group admits every principal that
// is a member when the request arrives, so a change of membership takes
// effect at once without touching the grants. AWS KMS grants name users and
// roles only; groups are this store's extension, named on the wire as IAM
// group ARNs (arn:aws:iam::ACCOUNT:group/NAME).
const GroupPrefix = "group:"

// identities are the principals and groups a store's grants may name.
type identities struct {
	principals map[string]bool            // nil: any principal name
	groups     map[string]map[string]bool // group → its members
}

// SetIdentities tells the store which principals and groups exist, as
// `encvol kms serve` reads them from its principals file (again on every
// reload): grants may then name only those, so a mistyped grantee is
// refused instead of granting a name nobody has. groups maps a group name
// to its member principals. A store never told accepts any principal name
// and no group.
func (s *Store) SetIdentities(principals []string, groups map[string][]string) {
	id := &identities{groups: make(map[string]map[string]bool, len(groups))}
	if principals != nil {
		id.principals = make(map[string]bool, len(principals))
		for _, p := range principals {
			id.principals[p] = true
		}
	}
	for name, members := range groups {
		set := make(map[string]bool, len(members))
		for _, m := range members {
			set[m] = true
		}
		id.groups[name] = set
	}
	s.idents.Store(id)
}

// SetGroups is SetIdentities with groups only: any principal name stays
// acceptable.
func (s *Store) SetGroups(groups map[string][]string) { s.SetIdentities(nil, groups) }

// Groups returns the names of the groups set, sorted.
func (s *Store) Groups() []string {
	id := s.idents.Load()
	if id == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(id.groups))
}

// hasGroup reports whether name is a group of this store.
func (s *Store) hasGroup(name string) bool {
	id := s.idents.Load()
	if id == nil {
		return false
	}
	_, ok := id.groups[name]
	return ok
}

// knownPrincipal reports whether grants may name principal: any name
// unless SetIdentities gave a list.
func (s *Store) knownPrincipal(name string) bool {
	id := s.idents.Load()
	return id == nil || id.principals == nil || id.principals[name]
}

// isGrantee reports whether a grant to grantee applies to principal: the
// grantee is the principal, or a group the principal is a member of now.
func (s *Store) isGrantee(grantee, principal string) bool {
	if grantee == principal {
		return true
	}
	group, ok := strings.CutPrefix(grantee, GroupPrefix)
	if !ok {
		return false
	}
	id := s.idents.Load()
	return id != nil && id.groups[group][principal]
}

// granteeName turns a grantee reference into the form grants store: a
// principal as principalName does, or a group as "group:NAME" from
// "group:NAME" or arn:aws:iam::ACCOUNT:group/NAME. With mustExist, a group
// or principal this store does not know is refused.
func (s *Store) granteeName(st *state, what, ref string, mustExist bool) (string, error) {
	group, isGroup := strings.CutPrefix(ref, GroupPrefix)
	if !isGroup && strings.HasPrefix(ref, "arn:") {
		parts := strings.SplitN(ref, ":", 6)
		if len(parts) == 6 && parts[2] == "iam" && strings.HasPrefix(parts[5], "group/") {
			if !s.knowsAccount(st, parts[4]) {
				return "", newErr(CodeInvalidArn, "%s %s is in account %s; this KMS serves account %s and knows no groups of other accounts", what, ref, parts[4], s.account)
			}
			group, isGroup = strings.TrimPrefix(parts[5], "group/"), true
		}
	}
	if !isGroup {
		name, err := s.principalName(st, what, ref)
		if err == nil && mustExist && !s.knownPrincipal(name) {
			return "", newErr(CodeNotFound, "%s %s: no principal %q in the principals file of this KMS", what, ref, name)
		}
		return name, err
	}
	if strings.TrimSpace(group) == "" || strings.ContainsAny(group, "\x00\n\r\t:/") {
		return "", validationErr("%s %q is not a group name", what, ref)
	}
	if mustExist && !s.hasGroup(group) {
		if len(s.Groups()) == 0 {
			return "", newErr(CodeNotFound, "%s %s: this KMS has no groups (groups are defined by [[group]] tables in the principals file of `encvol kms serve`)", what, ref)
		}
		return "", newErr(CodeNotFound, "%s %s: no [[group]] named %q in the principals file of this KMS (groups: %s)", what, ref, group, strings.Join(s.Groups(), ", "))
	}
	return GroupPrefix + group, nil
}
