package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/sector"
)

// Unlocked is a volume whose data key has been unwrapped and whose header
// passed its MAC check. Close zeroizes every key it holds.
type Unlocked struct {
	Backing string
	Header  *keywrap.Header
	DK      *keywrap.Key
	Subkeys *keywrap.Subkeys
	// SharedReadOnly is set when the caller holds the key only through
	// read-only shares of this volume (SharedReadOnly): it must mount
	// read-only.
	SharedReadOnly bool
}

// Close zeroizes the data key and the subkeys; idempotent.
func (u *Unlocked) Close() {
	if u == nil {
		return
	}
	u.Subkeys.Close()
	u.DK.Close()
}

// KeyError says that the KMS refused to unwrap a volume's data key because
// of the key (its state, its existence, or the caller's access) or could not
// be reached. Error() is one sentence naming the key, its state and the
// command that fixes it; errors.Is sees the kmsclient kind underneath.
type KeyError struct {
	Backing string
	KMS     string // configured KMS name
	KeyID   string // key ARN from the header
	Alias   string // an alias of the key, when the KMS could tell
	State   string // Disabled, PendingDeletion, PendingImport, NotFound, AccessDenied, Unreachable, ...
	Err     error
}

func (e *KeyError) Error() string {
	key := e.KeyID
	ref := e.KeyID
	if e.Alias != "" {
		key = fmt.Sprintf("%s (%s)", e.KeyID, e.Alias)
		ref = e.Alias
	}
	var what string
	switch e.State {
	case "Unreachable":
		what = fmt.Sprintf("KMS %q cannot be reached to unwrap the key of volume %s (key %s)", e.KMS, e.Backing, key)
	case "NotFound":
		what = fmt.Sprintf("key %s of volume %s does not exist (deleted, or not in KMS %q)", key, e.Backing, e.KMS)
	case "AccessDenied":
		what = fmt.Sprintf("key %s of volume %s refuses access to this principal (no grant, grant revoked or wrong credentials)", key, e.Backing)
		// The volume may be someone else's: say how they share it.
		return fmt.Sprintf("%s: if it is another principal's volume, ask its owner to share it with you (the owner runs \"encvol share VOLUME --with YOUR_PRINCIPAL\"; a share may also have been revoked), else check the credentials of KMS %q (%s)",
			what, e.KMS, errSummary(e.Err))
	case "InvalidCiphertext":
		what = fmt.Sprintf("key %s cannot unwrap the data key of volume %s: the wrapped key or its encryption context does not match", key, e.Backing)
	default:
		what = fmt.Sprintf("key %s is %s, so volume %s cannot be unlocked", key, e.State, e.Backing)
	}
	kmsName := e.KMS
	if kmsName == DefaultKMSName {
		kmsName = ""
	}
	if fix := kmsclient.Remedy(e.Err, ref, kmsName); fix != "" {
		return what + "; " + fix
	}
	return what + ": " + e.Err.Error()
}

func (e *KeyError) Unwrap() error { return e.Err }

// KeyState names the state a KMS error implies, as AWS spells key states
// where one applies: "Disabled", "PendingDeletion", "PendingImport",
// "NotFound", "AccessDenied", "InvalidCiphertext", "Unreachable", or
// "Error" for anything else.
func KeyState(err error) string {
	switch {
	case err == nil:
		return "Enabled"
	case errors.Is(err, kmsclient.ErrDisabled):
		return "Disabled"
	case errors.Is(err, kmsclient.ErrPendingDeletion):
		return "PendingDeletion"
	case errors.Is(err, kmsclient.ErrPendingImport):
		return "PendingImport"
	case errors.Is(err, kmsclient.ErrNotFound):
		return "NotFound"
	case errors.Is(err, kmsclient.ErrAccessDenied):
		return "AccessDenied"
	case errors.Is(err, kmsclient.ErrInvalidCiphertext):
		return "InvalidCiphertext"
	case errors.Is(err, kmsclient.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		return "Unreachable"
	}
	return "Error"
}

// isRevocation reports whether err means the key itself is unusable (close
// the gate at once) rather than that the KMS could not answer.
func isRevocation(err error) bool {
	switch KeyState(err) {
	case "Disabled", "PendingDeletion", "PendingImport", "NotFound", "AccessDenied", "InvalidCiphertext":
		return true
	}
	return false
}

// ErrHeaderMAC is returned (wrapped) by Unlock when the header does not
// authenticate under the unwrapped data key.
var ErrHeaderMAC = keywrap.ErrHeaderMAC

// Unlock reads the header of the volume in backing, has the KMS unwrap its
// data key, derives the subkeys and verifies the header MAC. Failures name
// the volume: a *KeyError for key problems, a MAC error when the header was
// modified.
func Unlock(ctx context.Context, client kmsclient.Client, backing string) (*Unlocked, error) {
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		return nil, fmt.Errorf("unlock volume %s: %w", backing, err)
	}
	return UnlockHeader(ctx, client, "", backing, h)
}

// UnlockHeader is Unlock with a header already read; kmsName (default: the
// header's) is only used in messages.
func UnlockHeader(ctx context.Context, client kmsclient.Client, kmsName, backing string, h *keywrap.Header) (*Unlocked, error) {
	if kmsName == "" {
		kmsName = h.KMS
	}
	var acc kmsclient.DecryptAccess
	dk, err := client.Decrypt(kmsclient.WithDecryptAccess(ctx, &acc), h.KeyID, h.WrappedDK, h.EncryptionContext)
	if err != nil {
		return nil, unwrapError(ctx, client, kmsName, backing, h, err)
	}
	u, err := unlockWithDK(backing, h, dk)
	if err != nil {
		return nil, err
	}
	u.SharedReadOnly = SharedReadOnly(acc, h.VolumeID)
	return u, nil
}

// unwrapError turns the KMS's refusal to decrypt h's data key (or its
// key-check blob) into the error a user can act on.
func unwrapError(ctx context.Context, client kmsclient.Client, kmsName, backing string, h *keywrap.Header, err error) error {
	// DescribeKey answers in every key state: it tells a damaged header
	// from a key problem, and an alias makes the message and the
	// suggested command readable.
	var info kmsclient.KeyInfo
	var derr error
	invalid := errors.Is(err, kmsclient.ErrInvalidCiphertext)
	if invalid || isRevocation(err) {
		info, derr = client.DescribeKey(ctx, h.KeyID)
	}
	if damaged := damagedWrappedKey(kmsName, backing, h, err, invalid, info, derr); damaged != nil {
		return damaged
	}
	if st := KeyState(err); st != "Error" {
		ke := &KeyError{Backing: backing, KMS: kmsName, KeyID: h.KeyID, State: st, Err: err}
		if derr == nil && len(info.Aliases) > 0 {
			ke.Alias = info.Aliases[0]
		}
		return ke
	}
	return fmt.Errorf("unlock volume %s: unwrap data key with key %s: %w", backing, h.KeyID, err)
}

// DamagedKeyError says that the header's wrapped data key (wrapped_dk, or
// the encryption context it is bound to) is damaged: the KMS cannot unwrap
// it although the header's key exists. It is a damaged header, not a key
// problem, so errors.Is matches keywrap.ErrHeaderCorrupt as well as the
// KMS error underneath.
type DamagedKeyError struct {
	Backing string
	KMS     string
	KeyID   string // the key the header names
	State   string // that key's state, "" when the KMS could not say
	Err     error  // the KMS's answer to the unwrap
}

func (e *DamagedKeyError) Error() string {
	key := fmt.Sprintf("%s is the key it names", e.KeyID)
	if e.State != "" {
		key = fmt.Sprintf("%s exists and is %s", e.KeyID, e.State)
	}
	answer := ""
	var ke *kmsclient.Error
	if errors.As(e.Err, &ke) && ke.Code != "" {
		answer = fmt.Sprintf(" (%s)", ke.Code)
	}
	return fmt.Sprintf("the wrapped data key in the header of volume %s (%s) is damaged: KMS %q cannot unwrap it%s although key %s; restore the header from a backup",
		e.Backing, filepath.Join(e.Backing, keywrap.HeaderFile), e.KMS, answer, key)
}

func (e *DamagedKeyError) Unwrap() []error { return []error{keywrap.ErrHeaderCorrupt, e.Err} }

// damagedWrappedKey returns a *DamagedKeyError when err, the KMS's answer
// to unwrapping h's data key, means the header is damaged rather than the
// key unusable, and nil otherwise. The header MAC needs the data key, so
// before the unwrap only the KMS can tell: InvalidCiphertext means the
// blob does not parse or authenticate under a key the KMS could use, and
// NotFound while the header's own key exists means the blob names a key
// that the header does not, so its key ID bytes were changed.
// info and derr are the KMS's description of the header's key.
func damagedWrappedKey(kmsName, backing string, h *keywrap.Header, err error, invalid bool, info kmsclient.KeyInfo, derr error) error {
	if !invalid && !errors.Is(err, kmsclient.ErrNotFound) {
		return nil
	}
	if derr != nil && !invalid {
		return nil // the header's key is gone too: a deleted key, not damage
	}
	return &DamagedKeyError{Backing: backing, KMS: kmsName, KeyID: h.KeyID, State: info.State, Err: err}
}

// unlockWithDK derives the subkeys of dk (taking ownership of it) and
// verifies the header MAC.
func unlockWithDK(backing string, h *keywrap.Header, dk *keywrap.Key) (*Unlocked, error) {
	sub, err := keywrap.DeriveSubkeys(dk)
	if err != nil {
		dk.Close()
		return nil, fmt.Errorf("unlock volume %s: %w", backing, err)
	}
	if err := h.VerifyMAC(sub.HeaderMAC); err != nil {
		sub.Close()
		dk.Close()
		if errors.Is(err, keywrap.ErrHeaderMAC) {
			return nil, fmt.Errorf("header of volume %s (%s) failed its MAC check: the header was modified or belongs to another key (%s): %w",
				h.VolumeID, filepath.Join(backing, keywrap.HeaderFile), restoreHint(backing), err)
		}
		return nil, fmt.Errorf("unlock volume %s: %w", backing, err)
	}
	return &Unlocked{Backing: backing, Header: h, DK: dk, Subkeys: sub}, nil
}

// openKeys turns an Unlocked into the keys the file system uses and closes
// everything else: the DK, the names subkey (the codec keeps its own copy)
// and the MAC key. The content subkey must outlive the cipher, which reads
// it for every per-file derivation, so the gate zeroizes it through
// Keys.Release after closing the cipher. u must not be used afterwards.
func openKeys(u *Unlocked) (*fusefs.Keys, error) {
	defer u.Close()
	content := u.Subkeys.Content
	cipher, err := sector.NewCipher(content, u.Header.SectorSize)
	if err != nil {
		return nil, fmt.Errorf("volume %s: content cipher: %w", u.Backing, err)
	}
	codec, err := names.NewCodec(u.Subkeys.Names, u.Header.NameMode == NameModePlaintext)
	if err != nil {
		cipher.Close()
		return nil, fmt.Errorf("volume %s: name codec: %w", u.Backing, err)
	}
	useFormat(u.Header, cipher, codec)
	u.Subkeys.Content = nil // ownership moves to the Keys
	return &fusefs.Keys{Content: cipher, Names: codec, Release: content.Close}, nil
}

// closeUnused closes keys that never reached a gate.
func closeUnused(k *fusefs.Keys) {
	if k == nil {
		return
	}
	k.Content.Close()
	k.Names.Close()
	if k.Release != nil {
		k.Release()
	}
}
