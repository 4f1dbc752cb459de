package volume

import (
	"fmt"
	"sort"

	"github.com/encvol/encvol/kms"
)

// CheckPrivate refuses a configuration file that holds secrets (static
// access keys in a [kms.NAME] table) and that other users can read: one
// leaked file would give them every key those credentials can use. The
// built-in configuration has no file and no secrets.
func (c *Config) CheckPrivate() error {
	if c.Path == "" {
		return nil
	}
	var holders []string
	for name, k := range c.KMS {
		if k.SecretAccessKey != "" || k.SessionToken != "" {
			holders = append(holders, "[kms."+name+"]")
		}
	}
	if len(holders) == 0 {
		return nil
	}
	open, mode, err := kms.ReadableByOthers(c.Path)
	if err != nil {
		return fmt.Errorf("configuration %s: %w", c.Path, err)
	}
	if !open {
		return nil
	}
	sort.Strings(holders)
	return fmt.Errorf("configuration %s (mode %04o) can be read by other users, and %s holds a secret access key: "+
		"chmod 600 %s (or move the credentials to the AWS shared credentials file), or pass --allow-readable-config to use it anyway",
		c.Path, mode, holders[0], c.Path)
}
