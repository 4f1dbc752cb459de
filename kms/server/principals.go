package server

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/encvol/encvol/kms"
)

// Principal is one identity the server accepts: requests signed with
// AccessKeyID/SecretAccessKey act as Name, the principal the key store
// authorizes (key owner or grantee).
type Principal struct {
	Name            string `toml:"name"`
	AccessKeyID     string `toml:"access_key_id"`
	SecretAccessKey string `toml:"secret_access_key"`
}

// Group is a named set of principals: a grant to "group:NAME" admits every
// member (kms.GroupPrefix), as the group is when each request arrives.
type Group struct {
	Name    string   `toml:"name"`
	Members []string `toml:"members"`
}

// Principals is the content of a principals file.
type Principals struct {
	Principal []Principal `toml:"principal"`
	Group     []Group     `toml:"group"`
}

// Names returns the principals' names, sorted.
func (p *Principals) Names() []string {
	names := make([]string, len(p.Principal))
	for i, pr := range p.Principal {
		names[i] = pr.Name
	}
	slices.Sort(names)
	return names
}

// GroupMap returns the groups as name → members, what kms.Store.SetGroups takes.
func (p *Principals) GroupMap() map[string][]string {
	m := make(map[string][]string, len(p.Group))
	for _, g := range p.Group {
		m[g.Name] = g.Members
	}
	return m
}

// Access key IDs appear in every request's Credential scope, which is split
// on '/', and in logs, so they are restricted to a safe alphabet.
var accessKeyIDRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{4,128}$`)

// MinSecretLen is the shortest secret_access_key accepted, in bytes (Go's
// len, so a non-ASCII character counts as several). Shorter secrets are
// guessable offline from one captured signed request, so they are refused.
const MinSecretLen = 16

// LoadPrincipals reads a principals file and returns its principals; see
// LoadPrincipalsFile.
func LoadPrincipals(path string) ([]Principal, error) {
	p, err := LoadPrincipalsFile(path)
	if err != nil {
		return nil, err
	}
	return p.Principal, nil
}

// LoadPrincipalsFile reads a TOML principals file made of [[principal]]
// tables with name, access_key_id and secret_access_key, and [[group]]
// tables with name and members. It guarantees that there is at least one
// principal, that names and access key IDs are unique, that every secret
// is at least MinSecretLen bytes, and that every member of a group is a
// principal of the file; unknown keys are an error naming the key, so a
// typo cannot silently drop a principal. It does not judge the file's
// permissions: see kms.ReadableByOthers.
func LoadPrincipalsFile(path string) (*Principals, error) {
	var f Principals
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("principals file %s does not exist", path)
		}
		return nil, fmt.Errorf("principals file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("principals file %s: unknown key(s) %s (want [[principal]] tables with name, access_key_id, secret_access_key and [[group]] tables with name, members)", path, strings.Join(keys, ", "))
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("principals file %s: %w", path, err)
	}
	return &f, nil
}

// check enforces LoadPrincipalsFile's rules; editors check before writing.
func (f *Principals) check() error {
	if len(f.Principal) == 0 {
		return errors.New("defines no [[principal]] table: nobody could use the server")
	}
	names := map[string]bool{}
	keys := map[string]bool{}
	for i, p := range f.Principal {
		where := entryName("principal", i, p.Name)
		switch {
		case strings.TrimSpace(p.Name) == "":
			return fmt.Errorf("%s: name is empty", where)
		case strings.ContainsAny(p.Name, "\x00\n\r\t"):
			return fmt.Errorf("%s: name contains control characters", where)
		case strings.ContainsAny(p.Name, ":/"):
			return fmt.Errorf("%s: name contains ':' or '/', which would make its ARN ambiguous (and group:NAME names a group)", where)
		case p.Name == kms.LocalPrincipal:
			return fmt.Errorf("%s: the name %q is reserved: it is the store's own in-process access (the local KMS), which administers every key of the store; give this principal another name", where, p.Name)
		case !accessKeyIDRe.MatchString(p.AccessKeyID):
			return fmt.Errorf("%s: access_key_id must be 4-128 characters of A-Z a-z 0-9 _ . -", where)
		case len(p.SecretAccessKey) < MinSecretLen:
			return fmt.Errorf("%s: secret_access_key must be at least %d bytes long", where, MinSecretLen)
		case names[p.Name]:
			return fmt.Errorf("%s: name is used twice", where)
		case keys[p.AccessKeyID]:
			return fmt.Errorf("%s: access_key_id %s is used twice", where, p.AccessKeyID)
		}
		names[p.Name] = true
		keys[p.AccessKeyID] = true
	}
	groups := map[string]bool{}
	for i, g := range f.Group {
		where := entryName("group", i, g.Name)
		switch {
		case strings.TrimSpace(g.Name) == "":
			return fmt.Errorf("%s: name is empty", where)
		case strings.ContainsAny(g.Name, "\x00\n\r\t:/"):
			return fmt.Errorf("%s: name contains control characters, ':' or '/'", where)
		case groups[g.Name]:
			return fmt.Errorf("%s: name is used twice", where)
		}
		groups[g.Name] = true
		seen := map[string]bool{}
		for _, m := range g.Members {
			switch {
			case !names[m]:
				return fmt.Errorf("%s: member %q is not a [[principal]] of the file", where, m)
			case seen[m]:
				return fmt.Errorf("%s: member %q is listed twice", where, m)
			}
			seen[m] = true
		}
	}
	return nil
}

// entryName names the i-th table of a kind in messages: `principal #2 ("bob")`.
func entryName(kind string, i int, name string) string {
	if name == "" {
		return fmt.Sprintf("%s #%d", kind, i+1)
	}
	return fmt.Sprintf("%s #%d (%q)", kind, i+1, name)
}
