package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// A rekey rewrites the header of a mounted volume; the mount learns of it
// through its control socket (OpRekey) and follows: it reads the new header
// from disk, unwraps its data key with the KMS the header now names, proves
// that this is the data key it already serves with, and from then on its
// key monitor checks the new key. The file system keeps its keys, so I/O
// never pauses.

// followTimeout bounds the unwrap a mount makes to follow a rekey.
const followTimeout = 20 * time.Second

// RekeyNotice is what `encvol rekey` tells a mount: the KMS the new header
// names, as the rekeying command's configuration defines it. The mount
// reuses its own client when the settings are those it already uses.
type RekeyNotice struct {
	KMS      string            `json:"kms"`
	Settings *kmsclientWireCfg `json:"kms_settings,omitempty"`
}

// kmsclientWireCfg carries a kmsclient.Config over the control socket
// (a 0600 socket in a 0700 directory of the same user), credentials
// included: kmsclient.Config leaves them out of its JSON on purpose.
type kmsclientWireCfg struct {
	kmsclient.Config
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	SessionToken    string `json:"session_token,omitempty"`
}

// NewRekeyNotice describes the KMS named kmsName with settings cfg.
func NewRekeyNotice(kmsName string, cfg kmsclient.Config) *RekeyNotice {
	return &RekeyNotice{KMS: kmsName, Settings: &kmsclientWireCfg{Config: cfg, SecretAccessKey: cfg.SecretAccessKey, SessionToken: cfg.SessionToken}}
}

func (n *RekeyNotice) config() (kmsclient.Config, bool) {
	if n == nil || n.Settings == nil {
		return kmsclient.Config{}, false
	}
	c := n.Settings.Config
	c.SecretAccessKey, c.SessionToken = n.Settings.SecretAccessKey, n.Settings.SessionToken
	return c, true
}

// NotifyRekey tells the mount at mountpoint that its volume's header was
// rewrapped, and returns the mount's status once it follows.
func NotifyRekey(ctx context.Context, mountpoint string, n *RekeyNotice) (*Status, error) {
	resp, err := callRequest(ctx, SocketPath(mountpoint), controlRequest{Op: OpRekey, Rekey: n}, followTimeout+5*time.Second)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("control socket of %s: answer without status", mountpoint)
	}
	return resp.Status, nil
}

// followRekey is the mount's side of OpRekey.
func (m *Mount) followRekey(n *RekeyNotice) (*Status, error) {
	m.followMu.Lock()
	defer m.followMu.Unlock()
	cur, curClient, curKMS := m.monitor.watched()
	nh, err := keywrap.ReadHeader(m.spec.Backing)
	if err != nil {
		return nil, fmt.Errorf("follow rekey: %w", err)
	}
	if nh.VolumeID != cur.VolumeID {
		return nil, fmt.Errorf("follow rekey: the header of %s now belongs to volume %s, not to the mounted volume %s", m.spec.Backing, nh.VolumeID, cur.VolumeID)
	}
	if nh.KMS == cur.KMS && nh.KeyID == cur.KeyID && bytes.Equal(nh.WrappedDK, cur.WrappedDK) {
		st := m.Status()
		return &st, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), followTimeout)
	defer cancel()
	client, kmsName := curClient, curKMS
	var fresh kmsclient.Client
	if cfg, ok := n.config(); ok && cfg != m.kmsConfig() {
		if fresh, err = kmsclient.New(ctx, n.KMS, cfg); err != nil {
			return nil, fmt.Errorf("follow rekey: KMS %q: %w", n.KMS, err)
		}
		client, kmsName = fresh, n.KMS
	}
	if err := m.adopt(ctx, cur, nh, client, kmsName); err != nil {
		if fresh != nil {
			fresh.Close()
		}
		return nil, err
	}
	if fresh != nil {
		m.setKMSConfig(n)
		if err := curClient.Close(); err != nil {
			m.log.Warn().Err(err).Str("kms", curKMS).Msg("closing the KMS client of the old key failed")
		}
	}
	// Check the new key at once: a gate closed because the old key was
	// disabled reopens now, not one interval later.
	m.monitor.Check(ctx)
	st := m.Status()
	return &st, nil
}

// adopt proves that nh wraps the data key the mount serves with and makes
// the monitor watch it. The mount's keys were made from the data key whose
// header MAC cur carries: a data key that verifies cur is that key.
func (m *Mount) adopt(ctx context.Context, cur, nh *keywrap.Header, client kmsclient.Client, kmsName string) error {
	u, err := UnlockHeader(ctx, client, kmsName, m.spec.Backing, nh)
	if err != nil {
		return fmt.Errorf("follow rekey: %w", err)
	}
	defer u.Close()
	if err := cur.VerifyMAC(u.Subkeys.HeaderMAC); err != nil {
		return fmt.Errorf("follow rekey: the new header of %s wraps a different data key than the one this mount serves with; not following it", m.spec.Backing)
	}
	if err := m.monitor.Follow(nh, client, kmsName); err != nil {
		return fmt.Errorf("follow rekey: %w", err)
	}
	m.log.Info().Str("op", "rekey").Str("old_key_id", cur.KeyID).Str("key_id", nh.KeyID).Str("kms", kmsName).
		Msg("volume rekeyed: the key monitor now checks the new key")
	return nil
}

// kmsConfig returns the settings of the KMS the mount now uses.
func (m *Mount) kmsConfig() kmsclient.Config {
	m.specMu.Lock()
	defer m.specMu.Unlock()
	return m.spec.KMSConfig
}

func (m *Mount) setKMSConfig(n *RekeyNotice) {
	cfg, _ := n.config()
	m.specMu.Lock()
	m.spec.KMS, m.spec.KMSConfig = n.KMS, cfg
	m.specMu.Unlock()
}

// errMonitorStopped refuses a Follow after Stop.
var errMonitorStopped = errors.New("the mount is shutting down")

// watched returns the header, client and KMS name the monitor checks.
func (m *Monitor) watched() (*keywrap.Header, kmsclient.Client, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.header, m.client, m.kms
}

// Follow makes the monitor check h's key through client from now on. The
// caller has proved that h wraps the data key the gate's keys come from.
// It waits for a check in progress, so no answer about the old key is
// applied afterwards.
func (m *Monitor) Follow(h *keywrap.Header, client kmsclient.Client, kmsName string) error {
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errMonitorStopped
	}
	m.header, m.client, m.kms = h, client, kmsName
	return nil
}

// Client returns the KMS client the monitor uses now; whoever closes the
// mount closes it.
func (m *Monitor) Client() kmsclient.Client {
	_, c, _ := m.watched()
	return c
}

// headerUnchanged makes sure that the header a mount unwrapped is still
// the one on disk once the mount holds the volume's lock: a rekey or a
// restore that finished in between would otherwise leave the mount
// checking a key the volume no longer uses.
func headerUnchanged(backing string, h *keywrap.Header) error {
	now, err := keywrap.ReadHeader(backing)
	if err != nil {
		return fmt.Errorf("mount %s: %w", backing, err)
	}
	if now.VolumeID != h.VolumeID || now.KMS != h.KMS || now.KeyID != h.KeyID || !bytes.Equal(now.WrappedDK, h.WrappedDK) {
		return fmt.Errorf("the header of %s changed while it was being mounted (a rekey or header restore ran): mount it again", backing)
	}
	return nil
}
