package volume

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// The key-check blob (header version 2, docs/format.md): a mount checks
// its access to the key by decrypting it, so the data key crosses the
// network when the volume is unlocked (and when a closed gate reopens),
// never in the routine checks in between.

// errKeyCheckMismatch: the KMS decrypted the key-check blob to something
// else. The blob is covered by the header MAC, so the KMS is at fault.
var errKeyCheckMismatch = errors.New("the key-check blob decrypted to an unexpected value")

// AddKeyCheck makes h a version 2 header: the KMS encrypts the check
// plaintext under h's key and encryption context.
func AddKeyCheck(ctx context.Context, rw kmsclient.Rewrapper, h *keywrap.Header) error {
	pt, err := keywrap.NewKey(keywrap.KeyCheckPlaintext(h.VolumeID))
	if err != nil {
		return err
	}
	defer pt.Close()
	blob, arn, err := rw.EncryptKey(ctx, h.KeyID, pt, h.EncryptionContext)
	if err != nil {
		return fmt.Errorf("key-check blob under %s: %w", h.KeyID, err)
	}
	if arn != h.KeyID {
		return fmt.Errorf("key-check blob: the KMS encrypted under %s, not the volume's key %s", arn, h.KeyID)
	}
	h.SetKeyCheck(blob)
	return nil
}

// checkKey asks the KMS whether h's key may still be used for this
// volume: it decrypts the key-check blob and compares the result. Errors
// are the KMS's, as for an unwrap of the data key.
func checkKey(ctx context.Context, client kmsclient.Client, h *keywrap.Header) error {
	if ac, ok := client.(kmsclient.AccessChecker); ok {
		if handled, err := ac.CheckAccess(ctx, h.KeyID, h.KeyCheck, h.EncryptionContext); handled {
			return err
		}
	}
	got, err := client.Decrypt(ctx, h.KeyID, h.KeyCheck, h.EncryptionContext)
	if err != nil {
		return err
	}
	defer got.Close()
	if subtle.ConstantTimeCompare(got.Bytes(), keywrap.KeyCheckPlaintext(h.VolumeID)) != 1 {
		return errKeyCheckMismatch
	}
	return nil
}

// ProbeKey tells whether a mount of backing could unwrap its data key
// now, by decrypting the key-check blob of h (a version 2 header): the KMS
// does not send the data key. Key problems come back as UnlockHeader
// reports them.
func ProbeKey(ctx context.Context, client kmsclient.Client, kmsName, backing string, h *keywrap.Header) error {
	if len(h.KeyCheck) == 0 {
		return fmt.Errorf("volume %s: the header has no key-check blob to probe the key with", backing)
	}
	if err := checkKey(ctx, client, h); err != nil {
		return unwrapError(ctx, client, kmsName, backing, h, err)
	}
	return nil
}
