package volume

// Which volume `encvol verify` checks and the temporary mount it makes
// when the volume is not mounted.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// VerifyTarget is a volume named on the `encvol verify` command line,
// resolved against the configuration.
type VerifyTarget struct {
	Name      string // [volumes.NAME], "" when given as a backing directory
	Snapshot  string // the snapshot directory when given one; Backing is its copy
	Backing   string
	Header    *keywrap.Header
	KMS       string
	KMSConfig kmsclient.Config
	volume    VolumeConfig
}

// ResolveVerify resolves NAME (a [volumes.NAME] table) or BACKING (a
// backing directory) and reads the volume header.
func (c *Config) ResolveVerify(arg string) (VerifyTarget, error) {
	var t VerifyTarget
	if v, ok := c.Volumes[arg]; ok && !strings.ContainsRune(arg, '/') {
		t.Name, t.Backing, t.volume = arg, v.Backing, v
	} else {
		t.Backing = arg
	}
	abs, err := filepath.Abs(t.Backing)
	if err != nil {
		return t, err
	}
	if snap := snapshotOf(abs); t.Name == "" && snap != "" {
		t.Snapshot, abs = snap, SnapshotBacking(snap)
	}
	t.Backing = abs
	if _, err := os.Stat(filepath.Join(abs, keywrap.HeaderFile)); err != nil {
		if t.Name == "" {
			if _, derr := os.Stat(abs); derr != nil {
				if !strings.ContainsRune(arg, '/') && len(c.Volumes) > 0 {
					return t, fmt.Errorf("%q is neither a [volumes.NAME] of %s (configured: %s) nor a backing directory", arg, c.describe(), strings.Join(sortedKeys(c.Volumes), ", "))
				}
				return t, fmt.Errorf("backing directory %s: %w", abs, derr)
			}
		}
		return t, fmt.Errorf("%s is not an encvol volume (no %s)", abs, keywrap.HeaderFile)
	}
	h, err := keywrap.ReadHeader(abs)
	if err != nil {
		return t, fmt.Errorf("volume %s: %w", abs, err)
	}
	t.Header = h
	kmsName := t.volume.KMS
	if kmsName == "" && h.KMS != "" {
		if _, ok := c.KMS[h.KMS]; ok {
			kmsName = h.KMS
		}
	}
	t.KMS, t.KMSConfig, err = c.KMSFor(kmsName)
	if err != nil {
		return t, err
	}
	return t, nil
}

// TemporaryMountSpec is the MountSpec `encvol mount BACKING mountpoint`
// would use for t, with the volume table's settings applied; it is
// read-write (the canary is written through it), except for a snapshot.
func (c *Config) TemporaryMountSpec(t VerifyTarget, mountpoint string) (MountSpec, error) {
	o := MountOptionSet{KMS: t.KMS, KeyCheckInterval: t.volume.KeyCheckInterval.D(), OnRevoke: t.volume.OnRevoke}
	if t.volume.OfflineGrace != nil {
		g := t.volume.OfflineGrace.D()
		o.OfflineGrace = &g
	}
	src := t.Backing
	if t.Snapshot != "" {
		src = t.Snapshot // mounted read-only, as every snapshot
	}
	spec, err := c.ResolveMount([]string{src, mountpoint}, o)
	if err != nil {
		return spec, err
	}
	spec.Name = t.Name
	spec.AllowOther = false
	spec.ReadOnly = t.Snapshot != ""
	spec.OnKeyEvent = firstString(t.volume.OnKeyEvent, c.Defaults.OnKeyEvent)
	return spec, nil
}

// MountTemporary unlocks and mounts spec in this process. The caller
// unmounts with UnmountTemporary.
func MountTemporary(ctx context.Context, spec MountSpec, log zerolog.Logger) (*Mount, error) {
	if err := CheckComplete(spec.Backing); err != nil {
		return nil, err
	}
	return mountTemporary(ctx, spec, log)
}

// mountTemporary is MountTemporary for a volume that may still carry the
// marker of its unfinished copy (which mounts it before it removes that).
func mountTemporary(ctx context.Context, spec MountSpec, log zerolog.Logger) (*Mount, error) {
	uctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	client, err := kmsclient.New(uctx, spec.KMS, spec.KMSConfig)
	if err != nil {
		return nil, fmt.Errorf("KMS %q: %w", spec.KMS, err)
	}
	u, err := UnlockHeader(uctx, client, spec.KMS, spec.Backing, spec.Header)
	if err != nil {
		client.Close()
		return nil, err
	}
	m, err := mountVolume(spec, client, u, log, "")
	if err != nil {
		client.Close()
		return nil, err
	}
	return m, nil
}

// UnmountTemporary unmounts a mount made by MountTemporary and waits until
// its keys are zeroized, retrying while the kernel still reports it busy.
func UnmountTemporary(m *Mount) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := m.Unmount()
		if err == nil {
			m.Wait()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FindMount returns the status of the running mount of volume volumeID,
// or nil when no encvol daemon serves it.
func FindMount(ctx context.Context, volumeID string) (*Status, error) {
	return findMount(ctx, func(st *Status) bool { return st.VolumeID == volumeID })
}

// findMount returns the status of the first daemon that answers on its
// control socket and matches, or nil.
func findMount(ctx context.Context, match func(*Status) bool) (*Status, error) {
	socks, err := ListSockets()
	if err != nil {
		return nil, err
	}
	for _, s := range socks {
		st, err := QueryStatus(ctx, s)
		if err != nil {
			continue // stale or busy sockets belong to other volumes or dead daemons
		}
		if match(st) {
			return st, nil
		}
	}
	return nil, nil
}
