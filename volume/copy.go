package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/encvol/encvol/kmsclient"
)

// CopyOptions describe the copy of a volume (or snapshot) into a new
// volume under another data key. A Target.SectorSize of 0 keeps the
// source's.
type CopyOptions struct {
	// Source is the backing directory of the volume or snapshot to copy;
	// SourceClient reaches the KMS that unwraps its key.
	Source       string
	SourceClient kmsclient.Client
	TargetOptions
}

// CopyVolume copies a volume or snapshot into a new volume with its own
// data key under opt.Target's key, at the sector level and without a
// mount: every sector, name, symlink target and attribute is decrypted
// with the source's key and encrypted again with the new one. The copy is
// never less encrypted than its source. It is resumable and checked like
// an import (Transfer). client reaches the target's KMS.
func CopyVolume(ctx context.Context, client kmsclient.Client, opt CopyOptions) (*TransferReport, error) {
	src, release, err := openCopySource(ctx, opt.SourceClient, opt.Source)
	if err != nil {
		return nil, err
	}
	defer release()
	return Reencrypt(ctx, client, src.BackingSource, ReencryptOptions{
		Operation: OpCopy, SourcePath: src.Root(), SourceID: src.volumeID, SourceNames: src.nameMode, SourceSectorSize: src.SectorSize(),
		TargetOptions: opt.TargetOptions,
	})
}

// copySource is a volume opened for copying.
type copySource struct {
	*BackingSource
	volumeID string
	nameMode string
}

// openCopySource opens what a copy reads: the volume or snapshot in
// backing, unlocked with its own key, held locked against mounts for as
// long as the copy reads it. A mounted volume is refused: the copy must
// see one consistent state, which a snapshot of the mounted volume gives.
func openCopySource(ctx context.Context, client kmsclient.Client, backing string) (*copySource, func(), error) {
	abs, err := filepath.Abs(backing)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckComplete(abs); err != nil {
		return nil, nil, err
	}
	lock, err := LockVolume(abs)
	if err != nil {
		var inUse *InUseError
		if errors.As(err, &inUse) && inUse.Mountpoint != "" {
			return nil, nil, withKind(inUse, fmt.Errorf("volume %s is mounted on %s, and a copy needs a state nobody writes to: unmount it first (`encvol umount %s`) or copy a snapshot of it",
				abs, inUse.Mountpoint, inUse.Mountpoint))
		}
		return nil, nil, err
	}
	u, err := Unlock(ctx, client, abs)
	if err != nil {
		lock.Release()
		return nil, nil, err
	}
	id, mode := u.Header.VolumeID, u.Header.NameMode
	bs, err := OpenBackingSource(u)
	if err != nil {
		lock.Release()
		return nil, nil, err
	}
	return &copySource{BackingSource: bs, volumeID: id, nameMode: mode}, func() {
		bs.Close()
		lock.Release()
	}, nil
}

// ReencryptOptions describe the re-encryption of a decrypted volume or
// snapshot into a new volume.
type ReencryptOptions struct {
	// Operation is OpReencrypt (a volume made from a snapshot under
	// another key) or OpCopy; it names the work in the marker and in
	// messages.
	Operation string
	// SourcePath (absolute) and SourceID (the volume or snapshot ID) name
	// the source in the marker; SourceNames is its name mode and
	// SourceSectorSize its sector size (the default for the target's).
	SourcePath       string
	SourceID         string
	SourceNames      string
	SourceSectorSize int
	TargetOptions
}

// Reencrypt writes src, the decrypted tree of a volume or snapshot (a
// BackingSource), into a new volume with a new data key generated under
// opt.Target's key, for `encvol copy` and `encvol create --from-snapshot
// --key`. A target with encrypted names is required of a source with
// encrypted names: the result is never less encrypted than its source.
func Reencrypt(ctx context.Context, client kmsclient.Client, src Source, opt ReencryptOptions) (*TransferReport, error) {
	if opt.Operation == "" {
		opt.Operation = OpReencrypt
	}
	if opt.SourceNames != NameModePlaintext && opt.Target.PlaintextNames {
		return nil, refusedBacking(fmt.Errorf("%s has encrypted names and a copy is never less encrypted than its source: leave out --plaintext-names (and plaintext_names of the target's volume table)", opt.SourcePath))
	}
	if opt.Target.SectorSize == 0 {
		opt.Target.SectorSize = opt.SourceSectorSize
	}
	if err := checkApart(opt.SourcePath, opt.Target.Backing); err != nil {
		return nil, err
	}
	return Transfer(ctx, client, TransferOptions{
		Operation: opt.Operation, Source: src, SourcePath: opt.SourcePath, SourceID: opt.SourceID, TargetOptions: opt.TargetOptions,
	})
}
