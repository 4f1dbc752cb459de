package kms

import "strings"

// Aliases belong to the principal that made them, as AWS aliases belong to
// an account: two principals may each have alias/app, and a principal
// resolves only its own (others reach a shared key by its ARN). keys.json
// keys each alias record by "PRINCIPAL:alias/NAME"; principal names never
// contain ':' (the principals file refuses them) and alias names never do
// either, so the split is unambiguous.

// aliasKey is the state key of principal's alias name.
func aliasKey(principal, name string) string { return principal + ":" + name }

// splitAliasKey undoes aliasKey. ok is false for a record written before
// aliases were scoped (its key is the bare alias name).
func splitAliasKey(key string) (owner, name string, ok bool) {
	i := strings.IndexByte(key, ':')
	if i < 0 {
		return "", key, false
	}
	return key[:i], key[i+1:], true
}

// migrateAliases gives the records of a store written before aliases and
// service keys were per principal an owner. A bare alias goes to its key's
// owner; the one shared service key (and its alias) goes to LocalPrincipal,
// which holds the store's root secret anyway, so it stops being usable by
// every principal of a server (volumes made under it by remote principals
// stop mounting for them; see docs/kms-server.md and docs/threat-model.md).
// It reports whether anything changed.
func (st *state) migrateAliases() bool {
	changed := false
	for _, k := range st.Keys {
		if k.Manager == KeyManagerAWS && k.ServiceFor == "" {
			k.ServiceFor, changed = LocalPrincipal, true
		}
	}
	for key, a := range st.Aliases {
		if _, _, ok := splitAliasKey(key); ok {
			continue
		}
		owner := LocalPrincipal
		if k, ok := st.Keys[a.Target]; ok && k.Manager != KeyManagerAWS {
			owner = k.Owner
		}
		delete(st.Aliases, key)
		st.Aliases[aliasKey(owner, key)] = a
		changed = true
	}
	return changed
}
