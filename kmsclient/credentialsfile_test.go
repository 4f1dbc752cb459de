package kmsclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
)

// TestWriteCredentialsProfile: the profile the SDK reads back is the one
// written; other profiles survive a rewrite; the file is 0600.
func TestWriteCredentialsProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(path, []byte("[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n[bob]\naws_access_key_id = OLD\naws_secret_access_key = old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteCredentialsProfile(path, "bob", "AKIABOB", "bobsecret"); err != nil {
		t.Fatal(err)
	}
	if err := WriteCredentialsProfile(path, "carol", "AKIACAROL", "carolsecret"); err != nil {
		t.Fatal(err)
	}
	for profile, want := range map[string][2]string{"bob": {"AKIABOB", "bobsecret"}, "carol": {"AKIACAROL", "carolsecret"}, "default": {"AKIADEFAULT", "d"}} {
		cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithSharedCredentialsFiles([]string{path}),
			awsconfig.WithSharedConfigFiles([]string{}), awsconfig.WithSharedConfigProfile(profile), awsconfig.WithRegion("us-east-1"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := cfg.Credentials.Retrieve(context.Background())
		if err != nil || c.AccessKeyID != want[0] || c.SecretAccessKey != want[1] {
			t.Fatalf("profile %s: %+v, %v", profile, c, err)
		}
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "OLD") {
		t.Fatalf("the old bob profile survived:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	if err := WriteCredentialsProfile(path, "a]b", "x", "y"); err == nil {
		t.Fatal("a profile name with a bracket was accepted")
	}
}
