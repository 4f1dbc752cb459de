package server

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// Principal is one identity the server accepts: requests signed with
// AccessKeyID/SecretAccessKey act as Name, the principal the key store
// authorizes (key owner or grantee).
type Principal struct {
	Name            string `toml:"name"`
	AccessKeyID     string `toml:"access_key_id"`
	SecretAccessKey string `toml:"secret_access_key"`
}

type principalsFile struct {
	Principal []Principal `toml:"principal"`
}

// Access key IDs appear in every request's Credential scope, which is split
// on '/', and in logs, so they are restricted to a safe alphabet.
var accessKeyIDRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{4,128}$`)

// MinSecretLen is the shortest secret_access_key accepted, in bytes (Go's
// len, so a non-ASCII character counts as several). Shorter secrets are
// guessable offline from one captured signed request, so they are refused.
const MinSecretLen = 16

// LoadPrincipals reads a TOML principals file made of [[principal]] tables
// with name, access_key_id and secret_access_key. It guarantees that the
// result is non-empty, that names and access key IDs are unique, and that
// every secret is at least MinSecretLen bytes; unknown keys are an error naming
// the key, so a typo cannot silently drop a principal. It does not judge the
// file's permissions: see kms.ReadableByOthers.
func LoadPrincipals(path string) ([]Principal, error) {
	var f principalsFile
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
		return nil, fmt.Errorf("principals file %s: unknown key(s) %s (want [[principal]] tables with name, access_key_id, secret_access_key)", path, strings.Join(keys, ", "))
	}
	if len(f.Principal) == 0 {
		return nil, fmt.Errorf("principals file %s defines no [[principal]] table: nobody could use the server", path)
	}
	names := map[string]bool{}
	keys := map[string]bool{}
	for i, p := range f.Principal {
		where := fmt.Sprintf("principals file %s: principal #%d", path, i+1)
		if p.Name != "" {
			where += fmt.Sprintf(" (%q)", p.Name)
		}
		switch {
		case strings.TrimSpace(p.Name) == "":
			return nil, fmt.Errorf("%s: name is empty", where)
		case strings.ContainsAny(p.Name, "\x00\n\r\t"):
			return nil, fmt.Errorf("%s: name contains control characters", where)
		case !accessKeyIDRe.MatchString(p.AccessKeyID):
			return nil, fmt.Errorf("%s: access_key_id must be 4-128 characters of A-Z a-z 0-9 _ . -", where)
		case len(p.SecretAccessKey) < MinSecretLen:
			return nil, fmt.Errorf("%s: secret_access_key must be at least %d bytes long", where, MinSecretLen)
		case names[p.Name]:
			return nil, fmt.Errorf("%s: name is used twice", where)
		case keys[p.AccessKeyID]:
			return nil, fmt.Errorf("%s: access_key_id %s is used twice", where, p.AccessKeyID)
		}
		names[p.Name] = true
		keys[p.AccessKeyID] = true
	}
	return f.Principal, nil
}
