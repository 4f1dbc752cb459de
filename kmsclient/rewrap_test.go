package kmsclient_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/encvol/encvol/kmsclient"
)

// TestRewrap: ReEncrypt moves a wrapped data key to another key of the
// same KMS, EncryptKey wraps an unwrapped one; both keep the encryption
// context binding and refuse a disabled destination, on every backend.
func TestRewrap(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			a := b.open(t)
			rw, ok := a.(kmsclient.Rewrapper)
			if !ok {
				t.Fatalf("%s does not rewrap", b.name)
			}
			src, dst := mustCreateKey(t, a, ""), mustCreateKey(t, a, "")
			encCtx := map[string]string{"encvol:volume-id": "vol-rewrap"}
			dk, blob, _, err := a.GenerateDataKey(ctx, src.KeyID, encCtx)
			if err != nil {
				t.Fatal(err)
			}
			defer dk.Close()

			moved, arn, err := rw.ReEncrypt(ctx, blob, encCtx, src.Arn, dst.KeyID, encCtx)
			if err != nil || arn != dst.Arn {
				t.Fatalf("ReEncrypt: %s, %v", arn, err)
			}
			got, err := a.Decrypt(ctx, dst.Arn, moved, encCtx)
			if err != nil || !bytes.Equal(got.Bytes(), dk.Bytes()) {
				t.Fatalf("Decrypt of the rewrapped key: %v", err)
			}
			got.Close()
			if _, err := a.Decrypt(ctx, "", moved, map[string]string{"encvol:volume-id": "vol-other"}); !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
				t.Fatalf("rewrapped key under another context: %v", err)
			}

			wrapped, arn, err := rw.EncryptKey(ctx, dst.KeyID, dk, encCtx)
			if err != nil || arn != dst.Arn {
				t.Fatalf("EncryptKey: %s, %v", arn, err)
			}
			if got, err = a.Decrypt(ctx, "", wrapped, encCtx); err != nil || !bytes.Equal(got.Bytes(), dk.Bytes()) {
				t.Fatalf("Decrypt of the encrypted key: %v", err)
			}
			got.Close()

			if err := a.DisableKey(ctx, dst.KeyID); err != nil {
				t.Fatal(err)
			}
			if _, _, err := rw.ReEncrypt(ctx, blob, encCtx, src.Arn, dst.KeyID, encCtx); !errors.Is(err, kmsclient.ErrDisabled) {
				t.Errorf("ReEncrypt to a disabled key: %v", err)
			}
			if _, _, err := rw.EncryptKey(ctx, dst.KeyID, dk, encCtx); !errors.Is(err, kmsclient.ErrDisabled) {
				t.Errorf("EncryptKey under a disabled key: %v", err)
			}
			if _, _, err := rw.ReEncrypt(ctx, blob, map[string]string{"encvol:volume-id": "vol-other"}, src.Arn, src.KeyID, encCtx); !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
				t.Errorf("ReEncrypt with the wrong source context: %v", err)
			}
		})
	}
}
