package volume

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// RekeyClient is what a rekey needs from a KMS: both backends of
// kmsclient.NewAdmin implement it.
type RekeyClient interface {
	kmsclient.Client
	kmsclient.Rewrapper
}

// RekeyOptions says which volume moves to which key.
type RekeyOptions struct {
	Backing string
	// Src is the KMS that wraps the data key now, SrcKMS its configured
	// name.
	Src    RekeyClient
	SrcKMS string
	// Dst is the KMS of the new key, DstKMS its configured name and
	// DstConfig its settings (a mount of the volume that has to switch
	// KMS is told them). When DstKMS equals SrcKMS the key moves inside
	// one KMS (ReEncrypt).
	Dst       RekeyClient
	DstKMS    string
	DstConfig kmsclient.Config
	// KeyRef names the new key: key ID, ARN or alias/NAME.
	KeyRef string
	// Policy, when set, applies [policy] require_customer_key to the new
	// key (Config.CheckKeyWithKMS) and receives the volume's new pin.
	Policy *Config
}

// Rekey methods.
const (
	RekeyReEncrypt      = "ReEncrypt"
	RekeyDecryptEncrypt = "Decrypt+Encrypt"
)

// RekeyResult reports what Rekey did.
type RekeyResult struct {
	VolumeID string `json:"volume_id"`
	Backing  string `json:"backing"`
	OldKMS   string `json:"old_kms"`
	OldKeyID string `json:"old_key_id"`
	KMS      string `json:"kms"`
	KeyID    string `json:"key_id"`
	// Method is RekeyReEncrypt or RekeyDecryptEncrypt; "" when the
	// volume already was under the key (Unchanged).
	Method    string `json:"method,omitempty"`
	Unchanged bool   `json:"unchanged,omitempty"`
	// Mountpoint is where the volume is mounted ("" when it is not); the
	// mount's key monitor checks KeyID from now on.
	Mountpoint string `json:"mountpoint,omitempty"`
}

// ErrRekeyTarget is matched (errors.Is) by Rekey's refusal of a key that
// cannot protect a volume (asymmetric, or not for encryption).
var ErrRekeyTarget = errors.New("key cannot protect a volume")

// Rekey rewraps a volume's data key under another key and rewrites the
// header atomically: only the header's kms, key_id and wrapped_dk change
// (volume ID, encryption context, everything else stay), no data is
// rewritten. Within one KMS the KMS rewraps (ReEncrypt) and the data key
// is unwrapped only to authenticate the header; across KMSes it is
// unwrapped from the old one and wrapped by the new one (Decrypt +
// Encrypt). The new wrapping is unwrapped again before the header is
// written, so a key that may wrap but not unwrap never locks the volume
// out. A mounted volume is told through its control socket and follows at
// once. Run again after an interruption, it finishes the job (a header
// already under the key is only announced to the mount).
func Rekey(ctx context.Context, opt RekeyOptions) (*RekeyResult, error) {
	backing, err := filepath.Abs(opt.Backing)
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	// A mount holds the lock for as long as it serves; then the header is
	// rewritten beside it and the mount follows. Anything else holding it
	// (another rekey, a restore, a copy) is waited for by the user.
	lock, err := LockVolume(backing)
	mountpoint := ""
	if err != nil {
		var inUse *InUseError
		if !errors.As(err, &inUse) || inUse.Mountpoint == "" {
			return nil, err
		}
		mountpoint = inUse.Mountpoint
	}
	defer lock.Release()
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		return nil, fmt.Errorf("rekey volume %s: %w (restore it with `encvol header restore %s FILE`)", backing, err, backing)
	}
	info, err := opt.Dst.DescribeKey(ctx, opt.KeyRef)
	if err != nil {
		return nil, fmt.Errorf("rekey volume %s: new key %s in KMS %q: %w", backing, opt.KeyRef, opt.DstKMS, err)
	}
	if err := checkRekeyTarget(info, opt.KeyRef, opt.DstKMS); err != nil {
		return nil, fmt.Errorf("rekey volume %s: %w", backing, err)
	}
	if opt.Policy != nil {
		if err := opt.Policy.CheckKeyWithKMS(ctx, opt.Dst, opt.DstKMS, info.Arn); err != nil {
			return nil, err
		}
	}
	res := &RekeyResult{VolumeID: h.VolumeID, Backing: backing, OldKMS: h.KMS, OldKeyID: h.KeyID,
		KMS: opt.DstKMS, KeyID: info.Arn, Mountpoint: mountpoint}
	if opt.SrcKMS == opt.DstKMS && h.KeyID == info.Arn && len(h.KeyCheck) > 0 {
		res.Unchanged = true
	} else if res.Method, err = rewrapHeader(ctx, backing, h, opt, info); err != nil {
		return nil, err
	}
	if mountpoint == "" {
		return res, nil
	}
	st, err := NotifyRekey(ctx, mountpoint, NewRekeyNotice(opt.DstKMS, opt.DstConfig))
	if err != nil {
		return res, fmt.Errorf("the header of volume %s is now wrapped under %s, but its mount on %s did not take the new key (%v): that mount keeps checking the old key %s until it is unmounted and mounted again",
			backing, info.Arn, mountpoint, err, h.KeyID)
	}
	if st.KeyID != info.Arn {
		return res, fmt.Errorf("the header of volume %s is now wrapped under %s, but its mount on %s checks key %s (another rekey or restore ran at the same time?); run `encvol rekey` again",
			backing, info.Arn, mountpoint, st.KeyID)
	}
	return res, nil
}

// checkRekeyTarget refuses a key that cannot take a volume, in one sentence
// each: not Enabled, asymmetric, or not for encryption.
func checkRekeyTarget(info kmsclient.KeyInfo, ref, kmsName string) error {
	name := ref
	if info.Arn != "" && info.Arn != ref {
		name = fmt.Sprintf("%s (%s)", ref, info.Arn)
	}
	if info.KeySpec != "" && info.KeySpec != "SYMMETRIC_DEFAULT" {
		return withKind(ErrRekeyTarget, fmt.Errorf("key %s in KMS %q is an asymmetric key (%s): only symmetric keys (SYMMETRIC_DEFAULT) can protect a volume; name a symmetric key",
			name, kmsName, info.KeySpec))
	}
	if info.KeyUsage != "" && info.KeyUsage != "ENCRYPT_DECRYPT" {
		return withKind(ErrRekeyTarget, fmt.Errorf("key %s in KMS %q is for %s, not ENCRYPT_DECRYPT: it cannot wrap a data key; name a symmetric encryption key",
			name, kmsName, info.KeyUsage))
	}
	if info.State != "Enabled" {
		return withKind(stateKind(info.State), fmt.Errorf("key %s in KMS %q is %s, and only an Enabled key can take a volume", name, kmsName, info.State))
	}
	return nil
}

// stateKind is the kmsclient error kind of a key state other than Enabled.
func stateKind(state string) error {
	switch state {
	case "Disabled":
		return kmsclient.ErrDisabled
	case "PendingDeletion":
		return kmsclient.ErrPendingDeletion
	case "PendingImport":
		return kmsclient.ErrPendingImport
	}
	return kmsclient.ErrInvalidRequest
}

// rewrapHeader does the rewrap and writes the new header; it returns the
// method used.
func rewrapHeader(ctx context.Context, backing string, h *keywrap.Header, opt RekeyOptions, info kmsclient.KeyInfo) (string, error) {
	// The data key authenticates the header, so it is unwrapped in any
	// case: that also proves the current header intact before it is
	// rewritten.
	u, err := UnlockHeader(ctx, opt.Src, opt.SrcKMS, backing, h)
	if err != nil {
		return "", fmt.Errorf("rekey volume %s: %w", backing, err)
	}
	defer u.Close()
	method := RekeyReEncrypt
	var blob []byte
	var arn string
	if opt.SrcKMS == opt.DstKMS {
		blob, arn, err = opt.Dst.ReEncrypt(ctx, h.WrappedDK, h.EncryptionContext, h.KeyID, info.Arn, h.EncryptionContext)
	} else {
		method = RekeyDecryptEncrypt
		blob, arn, err = opt.Dst.EncryptKey(ctx, info.Arn, u.DK, h.EncryptionContext)
	}
	if err != nil {
		return "", fmt.Errorf("rekey volume %s: wrap the data key under %s: %w", backing, info.Arn, err)
	}
	check, err := opt.Dst.Decrypt(ctx, arn, blob, h.EncryptionContext)
	if err != nil {
		return "", fmt.Errorf("rekey volume %s: the data key wrapped under %s cannot be unwrapped again (the header is unchanged): %w", backing, arn, err)
	}
	same := subtle.ConstantTimeCompare(check.Bytes(), u.DK.Bytes()) == 1
	check.Close()
	if !same {
		return "", fmt.Errorf("rekey volume %s: KMS %q unwrapped a different data key than it wrapped under %s (the header is unchanged)", backing, opt.DstKMS, arn)
	}
	nh := *h
	nh.KMS, nh.KeyID, nh.WrappedDK = opt.DstKMS, arn, blob
	// A new key-check blob under the new key (a version 1 header gets its
	// first one here).
	if err := AddKeyCheck(ctx, opt.Dst, &nh); err != nil {
		return "", fmt.Errorf("rekey volume %s: %w", backing, err)
	}
	if err := keywrap.WriteHeader(backing, &nh, u.Subkeys.HeaderMAC); err != nil {
		return "", fmt.Errorf("rekey volume %s: %w", backing, err)
	}
	// The next mount checks the header against its pin (pin.go).
	if opt.Policy != nil {
		if err := opt.Policy.RecordPin(backing, &nh); err != nil {
			return "", fmt.Errorf("volume %s rekeyed, but its pin was not updated (run `encvol trust %s`): %w", backing, backing, err)
		}
	}
	return method, nil
}
