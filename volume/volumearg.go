package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// VolumeBacking resolves a VOLUME argument of the lifecycle commands: the
// name of a [volumes.NAME] table, or a backing directory. A name wins over
// a relative directory of the same name; "./NAME" picks the directory.
func (c *Config) VolumeBacking(arg string) (string, error) {
	if v, ok := c.Volumes[arg]; ok && !strings.ContainsRune(arg, '/') {
		return v.Backing, nil
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist) && !strings.ContainsRune(arg, '/'):
		return "", fmt.Errorf("%q is neither a volume name in %s nor a directory", arg, c.describe())
	case err != nil:
		return "", fmt.Errorf("volume %s: %w", arg, err)
	case !st.IsDir():
		return "", fmt.Errorf("volume %s is not a directory: give a backing directory or a volume name", arg)
	}
	return abs, nil
}

// HeaderKMS picks the configured KMS that unwraps h: the one the header
// names when this configuration has it, else the default KMS (a header
// made with another configuration may call the same KMS differently).
func (c *Config) HeaderKMS(h *keywrap.Header) (string, kmsclient.Config, error) {
	if _, ok := c.KMS[h.KMS]; ok {
		return c.KMSFor(h.KMS)
	}
	return c.KMSFor("")
}
