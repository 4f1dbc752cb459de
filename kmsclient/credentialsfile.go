package kmsclient

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/encvol/encvol/keywrap"
)

// WriteCredentialsProfile writes an access key as profile [profile] of the
// AWS shared credentials file at path (the format of ~/.aws/credentials,
// which awscli, the SDKs and a [kms.NAME] with `profile` read), replacing
// a profile of that name and keeping the others. The file is replaced
// atomically with mode 0600.
func WriteCredentialsProfile(path, profile, accessKeyID, secret string) error {
	if profile == "" || strings.ContainsAny(profile, "[]\n\r") {
		return fmt.Errorf("credentials profile %q: want a name without brackets or line breaks", profile)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("credentials file %s: %w", path, err)
	}
	var out strings.Builder
	skipping := false
	for line := range strings.Lines(string(old)) {
		if name, ok := iniSection(line); ok {
			skipping = name == profile
		}
		if !skipping {
			out.WriteString(line)
		}
	}
	if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
		out.WriteString("\n")
	}
	if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n\n") {
		out.WriteString("\n")
	}
	fmt.Fprintf(&out, "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", profile, accessKeyID, secret)
	return keywrap.WriteFileAtomic(path, []byte(out.String()), 0o600)
}

// iniSection reads a "[name]" line.
func iniSection(line string) (string, bool) {
	l := strings.TrimSpace(line)
	if len(l) < 2 || l[0] != '[' || l[len(l)-1] != ']' {
		return "", false
	}
	return strings.TrimSpace(l[1 : len(l)-1]), true
}
