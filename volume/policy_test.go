package volume

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

func TestPolicyConfig(t *testing.T) {
	base := "[kms.local]\ntype = \"local\"\npath = \"kms\"\n"
	for _, c := range []struct {
		body    string
		require bool
		window  time.Duration
		err     string
	}{
		{"", false, DefaultKeyInUseWindow, ""},
		{"[policy]\nrequire_customer_key = true\n", true, DefaultKeyInUseWindow, ""},
		{"[policy]\nkey_in_use_window = \"1h\"\n", false, time.Hour, ""},
		{"[policy]\nkey_in_use_window = \"0s\"\n", false, 0, ""},
		{"[policy]\nkey_in_use_window = \"30\"\n", false, 0, "not a duration"},
		{"[policy]\nrequire_customer_keys = true\n", false, 0, "unknown key policy.require_customer_keys"},
	} {
		cfg, err := ParseConfig(filepath.Join(t.TempDir(), "c.toml"), []byte(base+c.body))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.body, err)
		}
		if cfg.Policy.RequireCustomerKey != c.require || cfg.KeyInUseWindow() != c.window {
			t.Errorf("%q: require %v window %v", c.body, cfg.Policy.RequireCustomerKey, cfg.KeyInUseWindow())
		}
	}
	if DefaultConfig().KeyInUseWindow() != 720*time.Hour {
		t.Error("the built-in configuration's window is not 720h")
	}
}

func TestCheckCustomerKey(t *testing.T) {
	off := &Config{Path: "/etc/encvol/encvol.toml"}
	on := &Config{Path: "/etc/encvol/encvol.toml", Policy: Policy{RequireCustomerKey: true}}
	for _, key := range []string{"", kmsclient.DefaultKeyAlias, "arn:aws:kms:local:000000000000:alias/encvol/default"} {
		if err := off.CheckCustomerKey("local", key); err != nil {
			t.Errorf("policy off, key %q: %v", key, err)
		}
		err := on.CheckCustomerKey("corp", key)
		if !errors.Is(err, ErrPolicy) {
			t.Fatalf("policy on, key %q: %v", key, err)
		}
		for _, want := range []string{"[policy] require_customer_key = true", "/etc/encvol/encvol.toml", "--key KEY", "kms create-key --alias alias/NAME --kms corp"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("policy refusal of %q does not say %q: %v", key, want, err)
			}
		}
	}
	if err := on.CheckCustomerKey("local", ""); err == nil || !strings.Contains(err.Error(), "without --key") {
		t.Errorf("missing key: %v", err)
	}
	if err := on.CheckCustomerKey("local", "alias/app"); err != nil {
		t.Errorf("customer key alias refused: %v", err)
	}
}

func TestCheckKeyWithKMS(t *testing.T) {
	fx := newKAFixture(t, "[policy]\nrequire_customer_key = true\n", "local")
	ctx := context.Background()
	cust := fx.key("local", "alias/cust")
	svc, err := fx.adm["local"].DefaultKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{svc, svc[strings.LastIndex(svc, "/")+1:]} {
		if err := fx.cfg.CheckKeyWithKMS(ctx, fx.adm["local"], "local", key); !errors.Is(err, ErrPolicy) {
			t.Errorf("service key as %s: %v", key, err)
		}
	}
	for _, key := range []string{cust.Arn, cust.KeyID, "alias/cust"} {
		if err := fx.cfg.CheckKeyWithKMS(ctx, fx.adm["local"], "local", key); err != nil {
			t.Errorf("customer key as %s: %v", key, err)
		}
	}
	// A customer key that alias/encvol/default names (as on a remote KMS,
	// where a user creates the alias) is the service key too.
	named := describeOnly{kmsclient.DefaultKeyAlias: {Arn: "arn:named", KeyManager: "CUSTOMER"}, "arn:named": {Arn: "arn:named", KeyManager: "CUSTOMER"}}
	if err := fx.cfg.CheckKeyWithKMS(ctx, named, "corp", "arn:named"); !errors.Is(err, ErrPolicy) {
		t.Errorf("customer key behind alias/encvol/default: %v", err)
	}
	off := &Config{}
	if err := off.CheckKeyWithKMS(ctx, fx.adm["local"], "local", svc); err != nil {
		t.Errorf("policy off: %v", err)
	}
}

// describeOnly is a kmsclient.Client that only describes keys.
type describeOnly map[string]kmsclient.KeyInfo

func (d describeOnly) DescribeKey(_ context.Context, ref string) (kmsclient.KeyInfo, error) {
	if k, ok := d[ref]; ok {
		return k, nil
	}
	return kmsclient.KeyInfo{}, &kmsclient.Error{Kind: kmsclient.ErrNotFound, Op: "DescribeKey", KeyID: ref}
}

func (describeOnly) GenerateDataKey(context.Context, string, map[string]string) (*keywrap.Key, []byte, string, error) {
	return nil, nil, "", errors.ErrUnsupported
}

func (describeOnly) Decrypt(context.Context, string, []byte, map[string]string) (*keywrap.Key, error) {
	return nil, errors.ErrUnsupported
}

func (describeOnly) DefaultKey(context.Context) (string, error) { return "", errors.ErrUnsupported }
func (describeOnly) Close() error                               { return nil }
