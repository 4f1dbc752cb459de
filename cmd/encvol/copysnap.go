package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// A copy reads one consistent state. A mounted source is copied from a
// snapshot taken for the purpose (the mount pauses writes only for the
// snapshot's last pass); the snapshot is named after the target, so a
// copy that is stopped and run again reads the same state, and it is
// deleted once the copy is complete.

// copyMounted copies the mounted volume src into the target of topt
// through a snapshot of it.
func (a *app) copyMounted(ctx context.Context, cfg *volume.Config, source string, srcClient, client kmsclient.Client, topt volume.TargetOptions) (*volume.TransferReport, error) {
	v, err := cfg.ResolveSnapshotVolume(source)
	if err != nil {
		return nil, targetError(err)
	}
	target, err := filepath.Abs(topt.Target.Backing)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(target))
	name := "copy-" + hex.EncodeToString(sum[:6])
	snap, err := volume.OpenSnapshot(filepath.Join(v.Snapshots, name))
	if err != nil {
		// None from an earlier run of this copy: take it now.
		res, err := volume.CreateSnapshot(ctx, srcClient, volume.SnapshotOptions{Volume: v, Name: name, Progress: topt.Progress, Log: a.log})
		if err != nil {
			return nil, fmt.Errorf("snapshot of the mounted volume %s for the copy: %w", v.Backing, err)
		}
		fmt.Fprintf(a.stderr, "%s is mounted: copying snapshot %s (writes paused %.0f ms)\n", v.Backing, res.Path, res.PausedMS)
		if snap, err = volume.OpenSnapshot(res.Path); err != nil {
			return nil, err
		}
	}
	rep, err := volume.CopyVolume(ctx, client, volume.CopyOptions{Source: snap.Backing, SourceClient: srcClient, TargetOptions: topt})
	if err != nil {
		return nil, err
	}
	if err := volume.DeleteSnapshot(v, snap); err != nil {
		a.log.Warn().Err(err).Str("snapshot", snap.Path).Msg("the copy is complete, but the snapshot taken for it could not be deleted")
	}
	return rep, nil
}

// reencryptSnapshot makes the volume opt from snapshot snap under a key
// other than the snapshot's: every sector, name and attribute is written
// anew under a new data key, by the copy engine.
func (a *app) reencryptSnapshot(ctx context.Context, cfg *volume.Config, snap *volume.Snapshot, opt volume.CreateOptions, resume bool) (*keywrap.Header, error) {
	srcName, srcCfg, err := cfg.KMSFor(snap.Header.KMS)
	if err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("the snapshot's KMS %q: %w", snap.Header.KMS, err))
	}
	srcClient, err := kmsclient.New(ctx, srcName, srcCfg)
	if err != nil {
		return nil, a.withRemedy(fmt.Errorf("KMS %q of %s: %w", srcName, snap.Path, err), snap.Header.KeyID, srcName)
	}
	defer srcClient.Close()
	client, topt, err := a.targetOptions(ctx, cfg, opt, resume, a.transferProgress())
	if err != nil {
		return nil, err
	}
	defer client.Close()
	if _, err := volume.CopyVolume(ctx, client, volume.CopyOptions{Source: snap.Backing, SourceClient: srcClient, TargetOptions: topt}); err != nil {
		return nil, err
	}
	return keywrap.ReadHeader(topt.Target.Backing)
}
