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

// groupSet maps a group name to its members.
type groupSet map[string]map[string]bool

// SetGroups replaces the groups that grants may name, as group name →
// member principal names. `encvol kms serve` sets them from its principals
// file (and again on every reload); a store without groups refuses grants
// to groups.
func (s *Store) SetGroups(groups map[string][]string) {
	gs := make(groupSet, len(groups))
	for name, members := range groups {
		set := make(map[string]bool, len(members))
		for _, m := range members {
			set[m] = true
		}
		gs[name] = set
	}
	s.groups.Store(&gs)
}

// Groups returns the group names SetGroups set, sorted.
func (s *Store) Groups() []string {
	gs := s.groups.Load()
	if gs == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(*gs))
}

// hasGroup reports whether name is a group of this store.
func (s *Store) hasGroup(name string) bool {
	gs := s.groups.Load()
	if gs == nil {
		return false
	}
	_, ok := (*gs)[name]
	return ok
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
	gs := s.groups.Load()
	return gs != nil && (*gs)[group][principal]
}

// granteeName turns a grantee reference into the form grants store: a
// principal as principalName does, or a group as "group:NAME" from
// "group:NAME" or arn:aws:iam::ACCOUNT:group/NAME. With mustExist, a group
// this store does not know is refused.
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
		return s.principalName(st, what, ref)
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
