package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
)

// Why pins: a mount takes the KMS, key and wrapped data key from the
// volume header, which lives in the backing directory. Someone who can
// write that directory and owns a key the victim may use could put in a
// header of their own (a new volume under their key): the mount would
// unlock it, and everything written afterwards would be readable to them.
// The header's MAC does not help, since the attacker made it with their
// own data key. So the volume ID and key of each backing directory are
// pinned outside it: in [volumes.NAME] (volume_id, key as an ARN) when
// configured, else in a known-volumes file recorded at the first mount,
// as ssh records host keys. A change is refused until the owner accepts
// it (`encvol trust`); rekey and header restore update the pin themselves.

// ErrPinMismatch is matched by a mount refused because the header names
// another volume ID or key than the one pinned for its backing directory.
var ErrPinMismatch = errors.New("volume header does not match its pin")

// Pin is what this machine knows about a backing directory.
type Pin struct {
	VolumeID string    `json:"volume_id"`
	KeyID    string    `json:"key_id"`
	KMS      string    `json:"kms,omitempty"`
	Recorded time.Time `json:"recorded"`
}

// knownVolumes is the file's content: pins by absolute backing path.
type knownVolumes struct {
	Version int            `json:"version"`
	Volumes map[string]Pin `json:"volumes"`
}

// knownVolumesFile is the pin file's name beside the configuration.
const knownVolumesFile = "known-volumes.json"

// DefaultKnownVolumesPath is where pins are kept without a configuration
// file: beside the default key store.
func DefaultKnownVolumesPath() string {
	return filepath.Join(filepath.Dir(DefaultKMSPath()), knownVolumesFile)
}

// KnownVolumesPath is the pin file this configuration uses: [defaults]
// known_volumes, else beside the configuration file (as ssh keeps
// known_hosts beside its configuration), else DefaultKnownVolumesPath.
func (c *Config) KnownVolumesPath() string {
	switch {
	case c.Defaults.KnownVolumes != "":
		return c.Defaults.KnownVolumes
	case c.Path != "":
		return filepath.Join(filepath.Dir(c.Path), knownVolumesFile)
	}
	return DefaultKnownVolumesPath()
}

// PinError says what changed between a backing directory's pin and its
// header, and how to accept the change.
type PinError struct {
	Backing    string
	Field      string // "volume ID" or "key"
	Pinned     string
	Header     string
	Where      string // the pin's source: a configuration table or the known-volumes file
	AcceptHint string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("the header of %s names %s %s, but %s pins %s: someone who can write the backing directory may have replaced the header "+
		"to read what is written next; if you changed it yourself (restored another volume or header there, or rekeyed with an older encvol), %s",
		e.Backing, e.Field, e.Header, e.Where, e.Pinned, e.AcceptHint)
}

func (e *PinError) Unwrap() error { return ErrPinMismatch }

// CheckPin compares header h of backing with its pin: the [volumes.NAME]
// table vc when it names volume_id (and key as an ARN), else the
// known-volumes file. A backing directory without a pin passes (the first
// mount records it, see RecordPin).
func (c *Config) CheckPin(name string, vc VolumeConfig, backing string, h *keywrap.Header) error {
	if vc.VolumeID != "" {
		where := fmt.Sprintf("[volumes.%s] in %s", name, c.describe())
		hint := fmt.Sprintf("set volume_id (and key) in [volumes.%s] to the header's values", name)
		if vc.VolumeID != h.VolumeID {
			return &PinError{Backing: backing, Field: "volume ID", Pinned: vc.VolumeID, Header: h.VolumeID, Where: where, AcceptHint: hint}
		}
		if strings.HasPrefix(vc.Key, "arn:") && vc.Key != h.KeyID {
			return &PinError{Backing: backing, Field: "key", Pinned: vc.Key, Header: h.KeyID, Where: where, AcceptHint: hint}
		}
		return nil
	}
	path := c.KnownVolumesPath()
	kv, err := readKnownVolumes(path)
	if err != nil {
		return err
	}
	p, ok := kv.Volumes[backing]
	if !ok {
		return nil
	}
	where := fmt.Sprintf("%s (recorded %s)", path, p.Recorded.Format(time.RFC3339))
	hint := fmt.Sprintf("accept the header with `encvol trust %s`", backing)
	if p.VolumeID != h.VolumeID {
		return &PinError{Backing: backing, Field: "volume ID", Pinned: p.VolumeID, Header: h.VolumeID, Where: where, AcceptHint: hint}
	}
	if p.KeyID != h.KeyID {
		return &PinError{Backing: backing, Field: "key", Pinned: p.KeyID, Header: h.KeyID, Where: where, AcceptHint: hint}
	}
	return nil
}

// RecordPin pins header h for backing in the known-volumes file: at the
// first mount (h has passed its MAC check by then), and after rekey, header
// restore or `encvol trust`. Entries of backing directories that no longer
// exist are dropped on the way, so the file does not grow without bound.
func (c *Config) RecordPin(backing string, h *keywrap.Header) error {
	path := c.KnownVolumesPath()
	return updateKnownVolumes(path, func(kv *knownVolumes) bool {
		old, ok := kv.Volumes[backing]
		if ok && old.VolumeID == h.VolumeID && old.KeyID == h.KeyID && old.KMS == h.KMS {
			return false
		}
		kv.Volumes[backing] = Pin{VolumeID: h.VolumeID, KeyID: h.KeyID, KMS: h.KMS, Recorded: time.Now().UTC().Truncate(time.Second)}
		return true
	})
}

// PinnedFor returns the known-volumes pin of backing, if any.
func (c *Config) PinnedFor(backing string) (Pin, bool, error) {
	kv, err := readKnownVolumes(c.KnownVolumesPath())
	if err != nil {
		return Pin{}, false, err
	}
	p, ok := kv.Volumes[backing]
	return p, ok, nil
}

func readKnownVolumes(path string) (*knownVolumes, error) {
	kv := &knownVolumes{Version: 1, Volumes: map[string]Pin{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return kv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read known volumes %s: %w", path, err)
	}
	if err := json.Unmarshal(b, kv); err != nil || kv.Version != 1 {
		return nil, fmt.Errorf("known volumes %s is damaged (%v): move it aside; the next mount of each volume records its pin again", path, err)
	}
	if kv.Volumes == nil {
		kv.Volumes = map[string]Pin{}
	}
	return kv, nil
}

// updateKnownVolumes applies change under an exclusive lock (mounts of
// different volumes record at the same time) and rewrites the file
// atomically, 0600, when change reports a change.
func updateKnownVolumes(path string, change func(*knownVolumes) bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("known volumes %s: %w", path, err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("known volumes %s: %w", path, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock known volumes %s: %w", path, err)
	}
	kv, err := readKnownVolumes(path)
	if err != nil {
		return err
	}
	if !change(kv) {
		return nil
	}
	keys := make([]string, 0, len(kv.Volumes))
	for k := range kv.Volumes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := os.Stat(filepath.Join(k, keywrap.HeaderFile)); errors.Is(err, fs.ErrNotExist) {
			delete(kv.Volumes, k)
		}
	}
	b, err := json.MarshalIndent(kv, "", "  ")
	if err != nil {
		return err
	}
	if err := keywrap.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write known volumes %s: %w", path, err)
	}
	return nil
}

// TrustPlan is what `encvol trust` is about to do for a volume: Old is the
// known-volumes pin it replaces (Had false when there was none).
type TrustPlan struct {
	Backing  string
	Header   *keywrap.Header
	Old      Pin
	Had      bool
	PinsFile string
}

// PlanTrust says what accepting t's current header would change. A volume
// pinned by its configuration table is changed there, not here.
func (c *Config) PlanTrust(t VerifyTarget) (TrustPlan, error) {
	if t.volume.VolumeID != "" {
		return TrustPlan{}, fmt.Errorf("[volumes.%s] in %s pins volume_id %s: edit volume_id (and key) there to accept the header's %s under %s",
			t.Name, c.describe(), t.volume.VolumeID, t.Header.VolumeID, t.Header.KeyID)
	}
	old, had, err := c.PinnedFor(t.Backing)
	if err != nil {
		return TrustPlan{}, err
	}
	return TrustPlan{Backing: t.Backing, Header: t.Header, Old: old, Had: had, PinsFile: c.KnownVolumesPath()}, nil
}
