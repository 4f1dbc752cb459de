package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
)

// ErrForeignHeader is matched (errors.Is) by the refusal to restore a
// header that belongs to another volume; ErrBackupFile by the refusal of a
// backup file inside the backing directory.
var (
	ErrForeignHeader = errors.New("header of another volume")
	ErrBackupFile    = errors.New("unusable header backup file")
)

// HeaderReport describes a header backup or restore.
type HeaderReport struct {
	VolumeID string `json:"volume_id"`
	Backing  string `json:"backing"`
	File     string `json:"file"`
	KMS      string `json:"kms"`    // the KMS the written header names
	KeyID    string `json:"key_id"` // the key it is wrapped under
	// Verified says the header's MAC was checked under its unwrapped data
	// key; NotVerified says why not (backup of a header whose key cannot
	// be used now).
	Verified    bool   `json:"verified"`
	NotVerified string `json:"not_verified,omitempty"`
	// Restore only: how FILE was proved to be this volume's header, and
	// the key of the header it replaced ("" when that was unreadable).
	Proof      string `json:"proof,omitempty"`
	OldKMS     string `json:"old_kms,omitempty"`
	OldKeyID   string `json:"old_key_id,omitempty"`
	KeyChanged bool   `json:"key_changed,omitempty"`
	Forced     bool   `json:"forced,omitempty"`
}

// headerClients opens KMS clients for the headers a backup or restore
// unwraps, one per configured KMS, and closes them together.
type headerClients struct {
	cfg     *Config
	clients map[string]kmsclient.Client
}

func (hc *headerClients) unlock(ctx context.Context, backing string, h *keywrap.Header) (*Unlocked, error) {
	name, kc, err := hc.cfg.HeaderKMS(h)
	if err != nil {
		return nil, err
	}
	c := hc.clients[name]
	if c == nil {
		if c, err = kmsclient.New(ctx, name, kc); err != nil {
			return nil, fmt.Errorf("KMS %q: %w", name, err)
		}
		if hc.clients == nil {
			hc.clients = map[string]kmsclient.Client{}
		}
		hc.clients[name] = c
	}
	return UnlockHeader(ctx, c, name, backing, h)
}

func (hc *headerClients) close() {
	for _, c := range hc.clients {
		c.Close()
	}
}

// isKeyProblem reports whether an unlock failed because of the key or the
// KMS (state, access, reachability) rather than a damaged header.
func isKeyProblem(err error) bool {
	var ke *KeyError
	return errors.As(err, &ke)
}

// BackupHeader copies the header of the volume in backing to file
// (atomically, mode 0600). It unwraps the data key and checks the header's
// MAC first, so that a damaged header never replaces a good backup; when
// the key cannot be used now (disabled, KMS down) the backup is still
// written, reported as not verified. An existing file is replaced only by
// a header of the same volume.
func (c *Config) BackupHeader(ctx context.Context, backing, file string) (*HeaderReport, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	if insideDir(backing, file) {
		return nil, withKind(ErrBackupFile, fmt.Errorf("backup header: %s is inside the backing directory %s: a backup there is lost with the volume (and the mount would show it as a damaged entry); write it elsewhere",
			file, backing))
	}
	path := filepath.Join(backing, keywrap.HeaderFile)
	data, err := readHeaderFile(path)
	if err != nil {
		return nil, fmt.Errorf("backup header of %s: %w", backing, err)
	}
	h, err := keywrap.ParseHeader(data)
	if err != nil {
		return nil, fmt.Errorf("backup header: %s is damaged, so it is not backed up (that would replace a good backup): %w", path, err)
	}
	rep := &HeaderReport{VolumeID: h.VolumeID, Backing: backing, File: file, KMS: h.KMS, KeyID: h.KeyID}
	hc := &headerClients{cfg: c}
	defer hc.close()
	u, err := hc.unlock(ctx, backing, h)
	switch {
	case err == nil:
		u.Close()
		rep.Verified = true
	case isKeyProblem(err):
		rep.NotVerified = err.Error()
	default:
		return nil, fmt.Errorf("backup header: the header of %s does not verify, so it is not backed up (that would replace a good backup): %w", backing, err)
	}
	if err := keywrap.BackupHeader(backing, file); err != nil {
		return nil, err
	}
	// keywrap.BackupHeader read the header again: make sure it wrote what
	// was verified (a rekey may have rewritten it in between).
	if written, err := readHeaderFile(file); err != nil || !bytes.Equal(written, data) {
		return nil, fmt.Errorf("backup header: the header of %s changed while it was backed up (a rekey?); run the backup again", backing)
	}
	return rep, nil
}

// RestoreHeader replaces the header of the volume in backing with the
// header in file. The volume must not be mounted or in use. file must be
// a header of this volume, which is checked as far as the current header
// allows:
//
//   - file's data key is unwrapped through the KMS it names and its MAC
//     checked: a damaged or forged backup is refused.
//   - When the current header verifies, file must name the same volume ID
//     and wrap the same data key (the current header's MAC verifies under
//     it).
//   - When the current header parses but its key cannot be used now, its
//     volume ID must equal file's.
//   - When the current header is missing or damaged, its volume ID proves
//     nothing: the volume's own files must, one encrypted name (or sector)
//     that authenticates under file's data key (proveDataKey). A foreign
//     key fails on every one and is refused. A volume with nothing to
//     check (empty root) is refused unless force is set.
//
// The report says which key file is wrapped under and whether that
// differs from the header it replaces: a backup taken before a rekey
// re-opens the volume to the old key.
func (c *Config) RestoreHeader(ctx context.Context, backing, file string, force bool) (*HeaderReport, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	lock, err := LockVolume(backing)
	if err != nil {
		var inUse *InUseError
		if errors.As(err, &inUse) && inUse.Mountpoint != "" {
			return nil, withKind(err, fmt.Errorf("the header of %s cannot be restored while the volume is mounted on %s: unmount it first (`encvol umount %s`)",
				backing, inUse.Mountpoint, inUse.Mountpoint))
		}
		return nil, err
	}
	defer lock.Release()

	data, err := readHeaderFile(file)
	if err != nil {
		return nil, fmt.Errorf("restore header: %w", err)
	}
	bh, err := keywrap.ParseHeader(data)
	if err != nil {
		return nil, fmt.Errorf("restore header: %s is not a valid encvol header: %w", file, err)
	}
	rep := &HeaderReport{VolumeID: bh.VolumeID, Backing: backing, File: file, KMS: bh.KMS, KeyID: bh.KeyID}
	hc := &headerClients{cfg: c}
	defer hc.close()
	bu, err := hc.unlock(ctx, backing, bh)
	if err != nil {
		return nil, restoreUnlockError(file, err)
	}
	defer bu.Close()
	rep.Verified = true

	if err := c.matchCurrent(ctx, hc, backing, file, bh, bu, rep, force); err != nil {
		return nil, err
	}
	if err := keywrap.WriteFileAtomic(filepath.Join(backing, keywrap.HeaderFile), data, 0o600); err != nil {
		return nil, fmt.Errorf("restore header of %s: %w", backing, err)
	}
	// The restored header is this volume's (checked above): the next mount
	// must not take it for a swapped one.
	if err := c.RecordPin(backing, bh); err != nil {
		return nil, fmt.Errorf("header of %s restored, but its pin was not updated (run `encvol trust %s`): %w", backing, backing, err)
	}
	return rep, nil
}

// matchCurrent decides, from the current header and the volume's files,
// whether the backup bh (unlocked as bu) belongs to the volume.
func (c *Config) matchCurrent(ctx context.Context, hc *headerClients, backing, file string, bh *keywrap.Header, bu *Unlocked, rep *HeaderReport, force bool) error {
	foreign := func(format string, a ...any) error {
		return withKind(ErrForeignHeader, fmt.Errorf("restore header: %s is not a header of the volume in %s: %s; give a backup of this volume",
			file, backing, fmt.Sprintf(format, a...)))
	}
	cur, perr := keywrap.ReadHeader(backing)
	trusted := false
	if perr == nil {
		rep.OldKMS, rep.OldKeyID = cur.KMS, cur.KeyID
		rep.KeyChanged = cur.KeyID != bh.KeyID || cur.KMS != bh.KMS
		cu, err := hc.unlock(ctx, backing, cur)
		switch {
		case err == nil:
			cu.Close()
			if cur.VolumeID != bh.VolumeID {
				return foreign("it belongs to volume %s, the current header to %s", bh.VolumeID, cur.VolumeID)
			}
			if cur.VerifyMAC(bu.Subkeys.HeaderMAC) != nil {
				return foreign("it names volume %s but wraps another data key", bh.VolumeID)
			}
			rep.Proof = "the current header verifies and names the same volume ID and data key"
			return nil
		case isKeyProblem(err):
			// The header is fine as far as anyone can tell; only its
			// key is unusable now. Its volume ID stands.
			if cur.VolumeID != bh.VolumeID {
				return foreign("it belongs to volume %s, the current header to %s", bh.VolumeID, cur.VolumeID)
			}
			trusted = true
			rep.Proof = fmt.Sprintf("the current header names the same volume ID (its MAC could not be checked: %s)", KeyState(err))
		}
	}
	proof, err := proveDataKey(backing, bh, bu.Subkeys)
	switch {
	case errors.Is(err, errForeignKey):
		return foreign("its data key does not decrypt this volume's files (it belongs to volume %s)", bh.VolumeID)
	case err != nil:
		return fmt.Errorf("restore header: %w", err)
	case proof != "":
		if rep.Proof == "" {
			rep.Proof = proof
		} else {
			rep.Proof += "; " + proof
		}
		return nil
	case trusted:
		return nil
	case force:
		rep.Forced = true
		rep.Proof = "none: restored with --force"
		return nil
	}
	return withKind(ErrForeignHeader, fmt.Errorf("restore header: the current header of %s is missing or damaged and the volume holds no files to check %s against, so nothing proves it belongs to this volume; rerun with --force if you are sure",
		backing, file))
}

// restoreUnlockError explains why the backup itself cannot be unlocked.
func restoreUnlockError(file string, err error) error {
	switch {
	case isKeyProblem(err):
		return fmt.Errorf("restore header: the data key in %s cannot be unwrapped: %w", file, err)
	case errors.Is(err, keywrap.ErrHeaderMAC):
		return fmt.Errorf("restore header: %s does not authenticate under its own data key (damaged, or not written by encvol); use another backup: %w", file, keywrap.ErrHeaderCorrupt)
	case errors.Is(err, keywrap.ErrHeaderCorrupt):
		return fmt.Errorf("restore header: the wrapped data key in %s is damaged; use another backup: %w", file, keywrap.ErrHeaderCorrupt)
	}
	return fmt.Errorf("restore header from %s: %w", file, err)
}

// readHeaderFile reads a header file of at most keywrap.MaxHeaderSize bytes.
func readHeaderFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, keywrap.MaxHeaderSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > keywrap.MaxHeaderSize {
		return nil, fmt.Errorf("%s is larger than %d bytes: not an encvol header: %w", path, keywrap.MaxHeaderSize, keywrap.ErrHeaderCorrupt)
	}
	return data, nil
}

// restoreHint tells how to recover a volume whose header is lost or
// damaged.
func restoreHint(backing string) string {
	return fmt.Sprintf("restore it from a backup with `encvol header restore %s FILE`", backing)
}

// lostHeader reports whether backing, which has no header, still holds
// the root directory ID of a volume: a volume whose header was lost, not
// a directory that never was one.
func lostHeader(backing string) bool {
	_, err := os.Stat(filepath.Join(backing, names.DirIDFile))
	return err == nil
}

// insideDir reports whether file (which need not exist) would lie in dir or
// below it, comparing directories by identity as CheckOverlap does.
func insideDir(dir, file string) bool {
	want, err := dirIdentity(dir)
	if err != nil {
		return false
	}
	parent := filepath.Dir(file)
	if id, err := dirIdentity(parent); err == nil && id == want {
		return true
	}
	in, _ := hasAncestor(parent, want)
	return in
}
