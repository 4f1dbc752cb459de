package volume

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/sector"
)

// Header field values written by this version. A new header starts at
// HeaderVersion and becomes keywrap.HeaderVersionEntries once it has its
// key-check blob.
const (
	HeaderVersion      = 1
	CipherAES256GCM    = "AES-256-GCM"
	NameModeEncrypted  = "encrypted"
	NameModePlaintext  = "plaintext"
	ContextVolumeIDKey = "encvol:volume-id"
)

// CreateOptions describes a new volume.
type CreateOptions struct {
	// Backing is the backing directory; it must be missing or empty.
	Backing string
	// KMSName is the [kms.NAME] the client talks to; it is recorded in the
	// header so a mount knows which KMS to ask.
	KMSName string
	// KeyRef is the CMK (key ID, ARN or alias/NAME); "" uses the KMS's
	// service key.
	KeyRef string
	// SectorSize is the plaintext sector size; 0 means sector.DefaultSectorSize.
	SectorSize int
	// PlaintextNames leaves file names unencrypted (debugging only).
	PlaintextNames bool
}

// Create makes a new volume in opt.Backing: a fresh data key from the KMS
// (wrapped under the CMK with the volume ID as encryption context), the
// authenticated header, and the root directory ID. It refuses a non-empty
// directory, creates a missing one with mode 0700, and removes what it
// created when a step fails. The plaintext data key never leaves locked
// memory and is zeroized before Create returns.
func Create(ctx context.Context, client kmsclient.Client, opt CreateOptions) (*keywrap.Header, error) {
	return create(ctx, client, opt, "")
}

// create is Create, except that a backing directory whose only entry is
// named keep counts as empty (a copy writes its marker first) and keep
// survives a failure.
func create(ctx context.Context, client kmsclient.Client, opt CreateOptions, keep string) (*keywrap.Header, error) {
	if opt.Backing == "" {
		return nil, errors.New("create volume: no backing directory given")
	}
	backing, err := filepath.Abs(opt.Backing)
	if err != nil {
		return nil, fmt.Errorf("create volume: %w", err)
	}
	if opt.KMSName == "" {
		opt.KMSName = DefaultKMSName
	}
	sectorSize := opt.SectorSize
	if sectorSize == 0 {
		sectorSize = sector.DefaultSectorSize
	}
	if err := CheckSectorSize(sectorSize); err != nil {
		return nil, fmt.Errorf("create volume: sector size %w", err)
	}

	madeDir, err := prepareBacking(backing, keep)
	if err != nil {
		return nil, err
	}
	ok := false
	var written []string
	defer func() {
		if ok {
			return
		}
		for _, p := range written {
			_ = os.Remove(p)
		}
		if madeDir {
			_ = os.Remove(backing)
		}
	}()

	keyRef := opt.KeyRef
	if keyRef == "" {
		keyRef, err = client.DefaultKey(ctx)
		if err != nil {
			return nil, fmt.Errorf("create volume %s: service key: %w", backing, err)
		}
	}
	id, err := keywrap.NewVolumeID()
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	encCtx := map[string]string{ContextVolumeIDKey: id}
	dk, blob, keyARN, err := client.GenerateDataKey(ctx, keyRef, encCtx)
	if err != nil {
		return nil, fmt.Errorf("create volume %s: generate data key under %s: %w", backing, keyRef, err)
	}
	defer dk.Close()

	// A key that lets us generate but not decrypt would produce a volume
	// nobody can mount: prove the round trip now.
	check, err := client.Decrypt(ctx, keyARN, blob, encCtx)
	if err != nil {
		return nil, fmt.Errorf("create volume %s: the new data key cannot be unwrapped again under %s: %w", backing, keyARN, err)
	}
	same := subtle.ConstantTimeCompare(check.Bytes(), dk.Bytes()) == 1
	check.Close()
	if !same {
		return nil, fmt.Errorf("create volume %s: the KMS unwrapped a different data key than it generated under %s", backing, keyARN)
	}

	sub, err := keywrap.DeriveSubkeys(dk)
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	defer sub.Close()

	nameMode := NameModeEncrypted
	if opt.PlaintextNames {
		nameMode = NameModePlaintext
	}
	h := &keywrap.Header{
		Version:           HeaderVersion,
		VolumeID:          id,
		KMS:               opt.KMSName,
		KeyID:             keyARN,
		WrappedDK:         blob,
		EncryptionContext: encCtx,
		Cipher:            CipherAES256GCM,
		SectorSize:        sectorSize,
		NameMode:          nameMode,
		Created:           time.Now().UTC().Truncate(time.Second),
	}
	// Test doubles of the KMS cannot encrypt; every real backend can.
	if rw, ok := client.(kmsclient.Rewrapper); ok {
		if err := AddKeyCheck(ctx, rw, h); err != nil {
			return nil, fmt.Errorf("create volume %s: %w", backing, err)
		}
		// Versions 3 to 5 need the key-check blob of version 2.
		h.Version = keywrap.HeaderVersionEntries
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}

	// Plaintext-names volumes need the root's ID file too: the mount
	// reads it, and mkdir gives every directory one whatever the mode.
	dfd, err := unix.Open(backing, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create volume %s: open backing directory: %w", backing, err)
	}
	written = append(written, filepath.Join(backing, names.DirIDFile))
	rootID, err := names.CreateDirID(dfd)
	if err == nil && h.AuthMeta() {
		err = writeRootMeta(dfd, h, sub.Names, opt.PlaintextNames, rootID)
	}
	unix.Close(dfd)
	if err != nil {
		return nil, fmt.Errorf("create volume %s: root directory ID: %w", backing, err)
	}
	// The header goes last: a directory without one is not a volume, so a
	// crash in between leaves nothing that looks usable.
	written = append(written, filepath.Join(backing, keywrap.HeaderFile))
	if err := keywrap.WriteHeader(backing, h, sub.HeaderMAC); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", backing, err)
	}
	ok = true
	return h, nil
}

// prepareBacking makes sure dir exists and is empty but for an entry
// named keep; it reports whether it created dir.
func prepareBacking(dir, keep string) (bool, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("create volume: make backing directory: %w", err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("create volume: %w", err)
	}
	if !st.IsDir() {
		return false, refusedBacking(fmt.Errorf("create volume: %s is not a directory", dir))
	}
	empty, err := isEmptyDir(dir, keep)
	if err != nil {
		return false, fmt.Errorf("create volume: %w", err)
	}
	if !empty {
		if _, herr := os.Stat(filepath.Join(dir, keywrap.HeaderFile)); herr == nil {
			return false, refusedBacking(fmt.Errorf("create volume: %s already holds a volume (%s exists); choose another directory", dir, keywrap.HeaderFile))
		}
		return false, refusedBacking(fmt.Errorf("create volume: backing directory %s is not empty; give a new or empty directory", dir))
	}
	return false, nil
}

// isEmptyDir reports whether dir holds no entry other than one named keep.
func isEmptyDir(dir, keep string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(16)
		for _, n := range names {
			if n != keep {
				return false, nil
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("read %s: %w", dir, err)
		}
	}
}

// ResolveCreate fills a CreateOptions from `encvol create` arguments: name
// selects a [volumes.NAME] table whose values apply where flags left a
// zero value. It returns the options (KMSName resolved) and the KMS
// settings to build the client from.
func (c *Config) ResolveCreate(name string, flags CreateOptions) (CreateOptions, kmsclient.Config, error) {
	opt := flags
	if name != "" {
		v, err := c.Volume(name)
		if err != nil {
			return opt, kmsclient.Config{}, err
		}
		if opt.Backing != "" && opt.Backing != v.Backing {
			return opt, kmsclient.Config{}, fmt.Errorf("give either a volume name or --backing, not both")
		}
		opt.Backing = v.Backing
		opt.KMSName = firstString(opt.KMSName, v.KMS)
		opt.KeyRef = firstString(opt.KeyRef, v.Key)
		if opt.SectorSize == 0 {
			opt.SectorSize = v.SectorSize
		}
		opt.PlaintextNames = opt.PlaintextNames || v.PlaintextNames
	}
	if opt.Backing == "" {
		return opt, kmsclient.Config{}, fmt.Errorf("give a volume name from the configuration or --backing DIR")
	}
	if opt.SectorSize != 0 {
		if err := CheckSectorSize(opt.SectorSize); err != nil {
			return opt, kmsclient.Config{}, fmt.Errorf("sector size %w", err)
		}
	}
	kmsName, kc, err := c.KMSFor(opt.KMSName)
	if err != nil {
		return opt, kmsclient.Config{}, err
	}
	opt.KMSName = kmsName
	return opt, kc, nil
}
