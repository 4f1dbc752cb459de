package kms

import (
	"net/url"
	"strings"
)

// GrantsHeader is the HTTP response header by which `encvol kms serve`
// tells the caller of a Decrypt that it was admitted through grants only,
// and through which (DecryptVia): the grant names, each query-escaped, as
// a comma-separated list, UnnamedGrant for a grant without a name. It is
// absent when the caller may use the key without a grant, and from other
// AWS-compatible servers; AWS SDKs ignore it.
const GrantsHeader = "X-Encvol-Grants"

// FormatGrants is the GrantsHeader value for grants.
func FormatGrants(grants []string) string {
	esc := make([]string, len(grants))
	for i, g := range grants {
		if g == UnnamedGrant {
			esc[i] = g // QueryEscape would spell it %2A
			continue
		}
		esc[i] = url.QueryEscape(g)
	}
	return strings.Join(esc, ",")
}

// ParseGrants reads a GrantsHeader value; an element that does not unescape
// counts as an unnamed grant, which restricts nothing.
func ParseGrants(v string) []string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		name, err := url.QueryUnescape(p)
		if err != nil || p == UnnamedGrant || name == "" {
			name = UnnamedGrant
		}
		parts[i] = name
	}
	return parts
}
