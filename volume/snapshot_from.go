package volume

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// A volume made from a snapshot under the snapshot's own key shares the
// snapshot's data key: its files are reflinked or copied as they are (no
// sector is rewritten) and only the wrapped data key changes, bound by
// the KMS to the new volume's ID. Under another key every sector, name and
// xattr must be encrypted anew (reencryptSnapshot).

// fromSnapshotMarker, present in a backing directory without a finished
// header, marks a volume from a snapshot whose creation was interrupted:
// the next create from a snapshot into that directory starts over. It is a
// temporary name (keywrap.TempPrefix), so no mount ever shows it.
const fromSnapshotMarker = keywrap.TempPrefix + "from-snapshot"

// ErrNeedsCopy is matched by the refusal to make a volume from a snapshot
// under another key, which needs the copy engine.
var ErrNeedsCopy = errors.New("re-encrypting a snapshot under another key needs encvol copy")

// ResolveCreateFrom is ResolveCreate for `encvol create --from-snapshot`:
// without --kms the snapshot's own KMS is used when this configuration
// knows it.
func (c *Config) ResolveCreateFrom(name string, flags CreateOptions, s *Snapshot) (CreateOptions, kmsclient.Config, error) {
	if flags.KMSName == "" && s.Header.KMS != "" {
		if _, ok := c.KMS[s.Header.KMS]; ok {
			flags.KMSName = s.Header.KMS
			if name != "" {
				if v, err := c.Volume(name); err == nil && v.KMS != "" {
					flags.KMSName = v.KMS
				}
			}
		}
	}
	return c.ResolveCreate(name, flags)
}

// CreateFromSnapshot makes a new volume in opt.Backing (missing or empty)
// from snapshot s, with a volume ID of its own. opt.KMSName and opt.KeyRef
// choose the key: none, or the snapshot's own key, rewraps the snapshot's
// data key for the new volume; another key re-encrypts
// (reencryptSnapshot). The snapshot's manifest must authenticate. A
// creation that is killed leaves a marked directory that the next run
// starts over in.
func CreateFromSnapshot(ctx context.Context, client kmsclient.Client, opt CreateOptions, s *Snapshot, progress Progress) (*keywrap.Header, error) {
	backing, err := filepath.Abs(opt.Backing)
	if err != nil {
		return nil, fmt.Errorf("create volume from snapshot: %w", err)
	}
	if opt.KMSName != s.Header.KMS {
		return reencryptSnapshot(ctx, client, opt, s, fmt.Sprintf("KMS %q, not the snapshot's KMS %q", opt.KMSName, s.Header.KMS))
	}
	u, err := UnlockHeader(ctx, client, opt.KMSName, s.Backing, s.Header)
	if err != nil {
		return nil, fmt.Errorf("create volume from snapshot %s refused: %w", s.Path, err)
	}
	defer u.Close()
	if err := s.Verify(u.DK); err != nil {
		return nil, fmt.Errorf("create volume from snapshot refused: %w", err)
	}
	if opt.KeyRef != "" {
		info, err := client.DescribeKey(ctx, opt.KeyRef)
		if err != nil {
			return nil, fmt.Errorf("create volume from snapshot %s: key %s: %w", s.Path, opt.KeyRef, err)
		}
		if info.Arn != s.Header.KeyID {
			return reencryptSnapshot(ctx, client, opt, s, fmt.Sprintf("key %s (%s), not the snapshot's key %s", opt.KeyRef, info.Arn, s.Header.KeyID))
		}
	}

	madeDir, err := prepareFromSnapshot(backing)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			clearBacking(backing, madeDir)
		}
	}()
	if err := keywrap.WriteFileAtomic(filepath.Join(backing, fromSnapshotMarker), []byte(s.Path+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	skip := func(rel string) bool { return rel == keywrap.HeaderFile }
	if _, _, err := CloneTree(ctx, s.Backing, backing, CloneOptions{Progress: progress, Skip: skip}); err != nil {
		return nil, fmt.Errorf("create volume %s from snapshot %s: %w", backing, s.Path, err)
	}
	h, err := rewrapForVolume(ctx, client, u, opt.KMSName)
	if err != nil {
		return nil, fmt.Errorf("create volume %s from snapshot %s: %w", backing, s.Path, err)
	}
	if err := syncTree(backing); err != nil {
		return nil, err
	}
	// The header goes last: until then the marker says "unfinished".
	if err := keywrap.WriteHeader(backing, h, u.Subkeys.HeaderMAC); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	if err := os.Remove(filepath.Join(backing, fromSnapshotMarker)); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	ok = true
	if err := keywrap.SyncDir(backing); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	return h, nil
}

// rewrapForVolume returns the header of a new volume that shares u's data
// key: a fresh volume ID, and the data key wrapped by the KMS under the
// same key bound to that ID, checked by unwrapping it again.
func rewrapForVolume(ctx context.Context, client kmsclient.Client, u *Unlocked, kmsName string) (*keywrap.Header, error) {
	old := u.Header
	id, err := keywrap.NewVolumeID()
	if err != nil {
		return nil, err
	}
	encCtx := map[string]string{ContextVolumeIDKey: id}
	rw, ok := client.(kmsclient.Rewrapper)
	if !ok {
		return nil, fmt.Errorf("KMS %q cannot re-encrypt a data key for the new volume", kmsName)
	}
	blob, keyARN, err := rw.ReEncrypt(ctx, old.WrappedDK, old.EncryptionContext, old.KeyID, old.KeyID, encCtx)
	if err != nil {
		return nil, fmt.Errorf("rewrap the data key under %s for the new volume: %w", old.KeyID, err)
	}
	check, err := client.Decrypt(ctx, keyARN, blob, encCtx)
	if err != nil {
		return nil, fmt.Errorf("the rewrapped data key cannot be unwrapped again under %s: %w", keyARN, err)
	}
	same := subtle.ConstantTimeCompare(check.Bytes(), u.DK.Bytes()) == 1
	check.Close()
	if !same {
		return nil, fmt.Errorf("the KMS rewrapped a different data key under %s", keyARN)
	}
	h := &keywrap.Header{
		// The entries are copied byte for byte: they keep their format.
		Version: old.Version, VolumeID: id, KMS: kmsName, KeyID: keyARN, WrappedDK: blob, EncryptionContext: encCtx,
		Cipher: old.Cipher, SectorSize: old.SectorSize, NameMode: old.NameMode,
		Created: time.Now().UTC().Truncate(time.Second),
	}
	if err := AddKeyCheck(ctx, rw, h); err != nil {
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return h, nil
}

// reencryptSnapshot makes a volume from snapshot s under a key other than
// the snapshot's (why says which): every sector, name and xattr must be
// encrypted anew under a new data key. That is the copy engine's work
// (`encvol copy`, which reads a snapshot like a volume); this is where it
// plugs in.
func reencryptSnapshot(_ context.Context, _ kmsclient.Client, opt CreateOptions, s *Snapshot, why string) (*keywrap.Header, error) {
	return nil, fmt.Errorf("%w; the new volume %s would use %s, so make it under the snapshot's own key %s instead (leave out --key and --kms)",
		ErrNeedsCopy, opt.Backing, why, s.Header.KeyID)
}

// prepareFromSnapshot is prepareBacking, except that a directory left by
// an interrupted creation from a snapshot (its marker, no header yet, or a
// header written just before the kill) is emptied and used again.
func prepareFromSnapshot(dir string) (bool, error) {
	if _, err := os.Lstat(filepath.Join(dir, fromSnapshotMarker)); err == nil {
		clearBacking(dir, false)
	}
	return prepareBacking(dir, "")
}

// clearBacking removes what a failed creation put into dir: dir itself when
// it made it, else everything in it.
func clearBacking(dir string, madeDir bool) {
	if madeDir {
		_ = os.RemoveAll(dir)
		return
	}
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, n := range names {
		_ = os.RemoveAll(filepath.Join(dir, n))
	}
}
