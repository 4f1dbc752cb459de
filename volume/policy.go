package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/encvol/encvol/kmsclient"
)

// DefaultKeyInUseWindow is how far back the audit log counts a data-key
// unwrap as "the key is in use" when [policy] key_in_use_window is unset.
const DefaultKeyInUseWindow = 720 * time.Hour

// Policy is the [policy] table: safeguards an operator switches on for
// every command that reads this configuration.
type Policy struct {
	// RequireCustomerKey refuses new volumes, and rekeys, under the
	// service key (alias/encvol/default): such volumes cannot be revoked
	// on their own or shared.
	RequireCustomerKey bool `toml:"require_customer_key" json:"require_customer_key"`
	// KeyInUseWindow is how recent an unwrap in the audit log must be for
	// disable-key and schedule-key-deletion to count the volume as using
	// the key. A pointer: "0s" (ignore the audit log) differs from unset.
	KeyInUseWindow *Duration `toml:"key_in_use_window" json:"key_in_use_window,omitempty"`
}

// ErrPolicy is matched (errors.Is) by refusals of a [policy] setting.
var ErrPolicy = errors.New("refused by [policy]")

// KeyInUseWindow returns [policy] key_in_use_window, or its default.
func (c *Config) KeyInUseWindow() time.Duration {
	if c.Policy.KeyInUseWindow == nil {
		return DefaultKeyInUseWindow
	}
	return c.Policy.KeyInUseWindow.D()
}

// CheckCustomerKey is the one check of [policy] require_customer_key that
// every command creating or rewrapping a volume makes before it asks the
// KMS for anything: with the setting on, a missing key (which would mean
// the service key) and the service key alias itself are refused with a
// sentence naming the setting, the file and how to name a customer key.
// key is what the user gave (--key or the volume's key =); kmsName is the
// KMS it belongs to. A key named by its key ID or ARN can only be
// recognised as the service key by the KMS: CheckDescribedKey does that.
func (c *Config) CheckCustomerKey(kmsName, key string) error {
	if !c.Policy.RequireCustomerKey {
		return nil
	}
	key = strings.TrimSpace(key)
	var what string
	switch {
	case key == "":
		what = fmt.Sprintf("a volume without --key, which would use the service key %s", kmsclient.DefaultKeyAlias)
	case key == kmsclient.DefaultKeyAlias || strings.HasSuffix(key, ":"+kmsclient.DefaultKeyAlias):
		what = fmt.Sprintf("the service key %s", kmsclient.DefaultKeyAlias)
	default:
		return nil
	}
	kmsFlag := ""
	if kmsName != "" && kmsName != DefaultKMSName {
		kmsFlag = " --kms " + kmsName
	}
	return withKind(ErrPolicy, fmt.Errorf("[policy] require_customer_key = true in %s refuses %s: name a customer key with --key KEY (a key ID, ARN or alias/NAME; create one with `encvol kms create-key --alias alias/NAME%s`)",
		c.describe(), what, kmsFlag))
}

// CheckKeyWithKMS is CheckCustomerKey plus what only the KMS knows: with
// the setting on it also refuses the service key named by its key ID or
// ARN, that is a key the KMS manages itself or the key alias/encvol/default
// names (on a remote KMS that alias may name a key created by a user).
// Commands call it once they have a client for the KMS of the new key.
func (c *Config) CheckKeyWithKMS(ctx context.Context, client kmsclient.Client, kmsName, key string) error {
	if err := c.CheckCustomerKey(kmsName, key); err != nil || !c.Policy.RequireCustomerKey {
		return err
	}
	info, err := client.DescribeKey(ctx, key)
	if err != nil {
		return err
	}
	service := info.ManagedByKMS()
	if !service {
		svc, err := client.DescribeKey(ctx, kmsclient.DefaultKeyAlias)
		service = err == nil && svc.Arn == info.Arn
	}
	if service {
		return c.CheckCustomerKey(kmsName, kmsclient.DefaultKeyAlias)
	}
	return nil
}
