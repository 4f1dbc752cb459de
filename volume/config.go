// Package volume holds the operations on whole volumes: the configuration
// file, create, unlock, and the mount wiring that ties the file system, the
// key gate, the key monitor and the control socket together. It parses no
// flags; cmd/encvol does that and calls in here.
package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/encvol/encvol/kmsclient"
)

// Defaults applied when the configuration says nothing.
const (
	DefaultKeyCheckInterval = 5 * time.Second
	DefaultOfflineGrace     = 2 * time.Minute
	DefaultOnRevoke         = OnRevokeEIO
	// MinKeyCheckInterval keeps a typo ("5ms") from hammering the KMS.
	MinKeyCheckInterval = 50 * time.Millisecond

	OnRevokeEIO  = "eio"
	OnRevokeHang = "hang"

	// DefaultKMSName names the KMS of the built-in configuration.
	DefaultKMSName = "local"
	// SystemConfigPath is the first place FindConfig looks.
	SystemConfigPath = "/etc/encvol/encvol.toml"
)

// Duration is a time.Duration written in the configuration as a Go duration
// string ("5s", "500ms", "2m"). Bare numbers are refused: "5" could mean
// seconds or nanoseconds.
type Duration time.Duration

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"5s\", \"500ms\" or \"2m\")", string(b))
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration back in the same notation.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults is the [defaults] table: values every volume inherits unless its
// own table overrides them.
type Defaults struct {
	// KMS names the [kms.NAME] used when a command or volume names none; it
	// may be omitted when exactly one KMS is configured.
	KMS string `toml:"kms" json:"kms,omitempty"`
	// KeyCheckInterval is how often a mount re-checks its key.
	KeyCheckInterval Duration `toml:"key_check_interval" json:"key_check_interval"`
	// OfflineGrace is how long a mount keeps serving while the KMS cannot
	// be reached.
	OfflineGrace Duration `toml:"offline_grace" json:"offline_grace"`
	// OnRevoke is "eio" (calls fail while the key is unusable) or "hang"
	// (calls block until the key returns).
	OnRevoke string `toml:"on_revoke" json:"on_revoke"`
	// OnKeyEvent is a shell command run on every key gate transition, with
	// the details in ENCVOL_* environment variables.
	OnKeyEvent string `toml:"on_key_event" json:"on_key_event,omitempty"`
	// KnownVolumes is the file that pins each backing directory's volume
	// ID and key (pin.go); default known-volumes.json beside the
	// configuration file (DefaultKnownVolumesPath without one).
	KnownVolumes string `toml:"known_volumes" json:"known_volumes,omitempty"`
}

// VolumeConfig is one [volumes.NAME] table. Zero values inherit from
// [defaults].
type VolumeConfig struct {
	Backing    string `toml:"backing" json:"backing"`
	Mountpoint string `toml:"mountpoint" json:"mountpoint,omitempty"`
	KMS        string `toml:"kms" json:"kms,omitempty"`
	Key        string `toml:"key" json:"key,omitempty"`
	// VolumeID pins the volume: a mount whose header names another volume
	// ID (or, when Key is an ARN, another key) is refused.
	VolumeID         string   `toml:"volume_id" json:"volume_id,omitempty"`
	SectorSize       int      `toml:"sector_size" json:"sector_size,omitempty"`
	PlaintextNames   bool     `toml:"plaintext_names" json:"plaintext_names,omitempty"`
	AllowOther       bool     `toml:"allow_other" json:"allow_other,omitempty"`
	ReadOnly         bool     `toml:"read_only" json:"read_only,omitempty"`
	OnRevoke         string   `toml:"on_revoke" json:"on_revoke,omitempty"`
	KeyCheckInterval Duration `toml:"key_check_interval" json:"key_check_interval,omitempty"`
	// OfflineGrace is a pointer because "0s" (no grace) differs from unset.
	OfflineGrace *Duration `toml:"offline_grace" json:"offline_grace,omitempty"`
	OnKeyEvent   string    `toml:"on_key_event" json:"on_key_event,omitempty"`
	// Options is a mount option string as for `encvol mount -o`, applied
	// before the command line's own -o.
	Options string `toml:"options" json:"options,omitempty"`
	// Snapshots is the directory that holds the volume's snapshots;
	// default: the backing directory's path plus ".snapshots".
	Snapshots string `toml:"snapshots" json:"snapshots,omitempty"`
	// ImportFrom is a plaintext directory that `encvol import --all`
	// converts into this volume.
	ImportFrom string `toml:"import_from" json:"import_from,omitempty"`
}

// Config is a loaded, validated configuration file. Relative paths in it
// have been resolved against the directory of the file.
type Config struct {
	KMS      map[string]kmsclient.Config `toml:"kms" json:"kms"`
	Defaults Defaults                    `toml:"defaults" json:"defaults"`
	Volumes  map[string]VolumeConfig     `toml:"volumes" json:"volumes,omitempty"`
	Policy   Policy                      `toml:"policy" json:"policy"`
	// Path is the file the configuration came from, "" for the built-in one.
	Path string `toml:"-" json:"path"`
}

// FindConfig returns the configuration file to use: explicit when given
// (it must exist), else /etc/encvol/encvol.toml, else
// $XDG_CONFIG_HOME/encvol/encvol.toml (~/.config when unset). It returns ""
// when none exists, meaning the built-in default applies.
func FindConfig(explicit string) (string, error) {
	if explicit != "" {
		st, err := os.Stat(explicit)
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("configuration file %s does not exist: fix the path, or leave the option out to use the default configuration", explicit)
		}
		if err != nil {
			return "", fmt.Errorf("configuration file %s: %w", explicit, err)
		}
		if st.IsDir() {
			return "", fmt.Errorf("configuration file %s is a directory", explicit)
		}
		return explicit, nil
	}
	candidates := []string{SystemConfigPath}
	if dir := userConfigDir(); dir != "" {
		candidates = append(candidates, filepath.Join(dir, "encvol", "encvol.toml"))
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", nil
}

func userConfigDir() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config")
	}
	return ""
}

// DefaultKMSPath is where the built-in configuration keeps the local key
// store: /var/lib/encvol/kms for root, $XDG_DATA_HOME/encvol/kms
// (~/.local/share when unset) for everyone else.
func DefaultKMSPath() string {
	if os.Geteuid() == 0 {
		return "/var/lib/encvol/kms"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "encvol", "kms")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "encvol", "kms")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("encvol-%d", os.Getuid()), "kms")
}

// DefaultConfig is the configuration used when no file exists: one local
// KMS named "local" at DefaultKMSPath.
func DefaultConfig() *Config {
	c := &Config{
		KMS: map[string]kmsclient.Config{
			DefaultKMSName: {Type: kmsclient.TypeLocal, Path: DefaultKMSPath()},
		},
		Volumes:  map[string]VolumeConfig{},
		Defaults: Defaults{OfflineGrace: Duration(DefaultOfflineGrace)},
	}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if c.Defaults.KeyCheckInterval == 0 {
		c.Defaults.KeyCheckInterval = Duration(DefaultKeyCheckInterval)
	}
	if c.Defaults.OnRevoke == "" {
		c.Defaults.OnRevoke = DefaultOnRevoke
	}
	if c.KMS == nil {
		c.KMS = map[string]kmsclient.Config{}
	}
	if c.Volumes == nil {
		c.Volumes = map[string]VolumeConfig{}
	}
}

// LoadConfig reads and validates the TOML file at path; "" gives
// DefaultConfig. Unknown keys are errors naming the key and the file, so a
// typo never silently falls back to a default.
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return DefaultConfig(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on bytes already read; path is used for
// messages and to resolve relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			if perr.LastKey != "" {
				return nil, fmt.Errorf("configuration %s: line %d (key %s): %s", path, perr.Position.Line, perr.LastKey, perr.Message)
			}
			return nil, fmt.Errorf("configuration %s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("configuration %s: unknown key %s (see config.example.toml for every key)", path, strings.Join(keys, ", "))
	}
	c.Path = path
	// "0s" is a valid grace (close on the first failed check), so only an
	// absent key takes the default.
	if !md.IsDefined("defaults", "offline_grace") {
		c.Defaults.OfflineGrace = Duration(DefaultOfflineGrace)
	}
	c.applyDefaults()
	c.resolvePaths(filepath.Dir(path))
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	return &c, nil
}

// resolvePaths makes relative paths relative to the configuration file, not
// to whatever directory a command (or mount(8)) happens to run in.
func (c *Config) resolvePaths(base string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		if b, err := filepath.Abs(base); err == nil {
			base = b
		}
		return filepath.Join(base, p)
	}
	for name, k := range c.KMS {
		k.Path = abs(k.Path)
		k.PassphraseFile = abs(k.PassphraseFile)
		k.CAFile = abs(k.CAFile)
		c.KMS[name] = k
	}
	c.Defaults.KnownVolumes = abs(c.Defaults.KnownVolumes)
	for name, v := range c.Volumes {
		v.Backing = abs(v.Backing)
		v.Mountpoint = abs(v.Mountpoint)
		v.Snapshots = abs(v.Snapshots)
		v.ImportFrom = abs(v.ImportFrom)
		c.Volumes[name] = v
	}
}

func (c *Config) validate() error {
	if len(c.KMS) == 0 {
		return errors.New("no [kms.NAME] table: configure at least one KMS (type = \"local\" or \"aws\")")
	}
	for _, name := range sortedKeys(c.KMS) {
		if err := c.KMS[name].Validate(); err != nil {
			return fmt.Errorf("[kms.%s]: %w", name, err)
		}
	}
	if c.Defaults.KMS != "" {
		if _, ok := c.KMS[c.Defaults.KMS]; !ok {
			return fmt.Errorf("[defaults] kms = %q: no [kms.%s] table (configured: %s)", c.Defaults.KMS, c.Defaults.KMS, strings.Join(sortedKeys(c.KMS), ", "))
		}
	}
	if err := checkTiming("[defaults]", c.Defaults.OnRevoke, c.Defaults.KeyCheckInterval); err != nil {
		return err
	}
	for _, name := range sortedKeys(c.Volumes) {
		v := c.Volumes[name]
		where := fmt.Sprintf("[volumes.%s]", name)
		if v.Backing == "" {
			return fmt.Errorf("%s: backing is missing: give the backing directory of the volume", where)
		}
		if v.KMS != "" {
			if _, ok := c.KMS[v.KMS]; !ok {
				return fmt.Errorf("%s: kms = %q: no [kms.%s] table (configured: %s)", where, v.KMS, v.KMS, strings.Join(sortedKeys(c.KMS), ", "))
			}
		}
		if v.SectorSize != 0 {
			if err := CheckSectorSize(v.SectorSize); err != nil {
				return fmt.Errorf("%s: sector_size: %w", where, err)
			}
		}
		if err := checkTiming(where, v.OnRevoke, v.KeyCheckInterval); err != nil {
			return err
		}
		if v.Options != "" {
			if _, err := ParseMountOptions(v.Options); err != nil {
				return fmt.Errorf("%s: options: %w", where, err)
			}
		}
	}
	return nil
}

func checkTiming(where, onRevoke string, interval Duration) error {
	switch onRevoke {
	case "", OnRevokeEIO, OnRevokeHang:
	default:
		return fmt.Errorf("%s: on_revoke = %q: want %q or %q", where, onRevoke, OnRevokeEIO, OnRevokeHang)
	}
	if interval != 0 && interval.D() < MinKeyCheckInterval {
		return fmt.Errorf("%s: key_check_interval = %s is shorter than the minimum %s", where, interval.D(), MinKeyCheckInterval)
	}
	return nil
}

// CheckSectorSize accepts a power of two from 512 to 65536.
func CheckSectorSize(n int) error {
	if n < 512 || n > 65536 || n&(n-1) != 0 {
		return fmt.Errorf("%d is not a power of two from 512 to 65536", n)
	}
	return nil
}

// KMSFor resolves a KMS name: the named one, or for "" the default
// ([defaults] kms, or the only configured KMS). It returns the resolved
// name and its settings.
func (c *Config) KMSFor(name string) (string, kmsclient.Config, error) {
	if name == "" {
		name = c.Defaults.KMS
	}
	if name == "" {
		if len(c.KMS) == 1 {
			for n := range c.KMS {
				name = n
			}
		} else {
			return "", kmsclient.Config{}, fmt.Errorf("%d KMS are configured (%s) in %s: name one with --kms NAME or set kms in [defaults]",
				len(c.KMS), strings.Join(sortedKeys(c.KMS), ", "), c.describe())
		}
	}
	k, ok := c.KMS[name]
	if !ok {
		return "", kmsclient.Config{}, fmt.Errorf("no KMS named %q in %s (configured: %s)", name, c.describe(), strings.Join(sortedKeys(c.KMS), ", "))
	}
	return name, k, nil
}

// Volume returns the [volumes.NAME] table.
func (c *Config) Volume(name string) (VolumeConfig, error) {
	v, ok := c.Volumes[name]
	if !ok {
		known := sortedKeys(c.Volumes)
		if len(known) == 0 {
			return VolumeConfig{}, fmt.Errorf("no volume named %q: %s has no [volumes.NAME] tables", name, c.describe())
		}
		return VolumeConfig{}, fmt.Errorf("no volume named %q in %s (configured: %s)", name, c.describe(), strings.Join(known, ", "))
	}
	return v, nil
}

func (c *Config) describe() string {
	if c.Path == "" {
		return "the built-in configuration"
	}
	return c.Path
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
