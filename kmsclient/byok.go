package kmsclient

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
)

// ImportRawKeyMaterial brings your own key material into an EXTERNAL key:
// it fetches import parameters, wraps material (exactly 32 bytes) with
// RSAES-OAEP-SHA-256 under the KMS's public key, and imports it. The
// material never crosses the wire unwrapped. The caller keeps ownership
// of material (and should zero it).
func ImportRawKeyMaterial(ctx context.Context, a Admin, keyRef string, material []byte) error {
	if len(material) != DataKeySize {
		return &Error{Kind: ErrInvalidRequest, Op: "ImportKeyMaterial", KeyID: keyRef,
			Message: fmt.Sprintf("key material must be exactly %d bytes, got %d", DataKeySize, len(material))}
	}
	params, err := a.GetParametersForImport(ctx, keyRef)
	if err != nil {
		return err
	}
	pubAny, err := x509.ParsePKIXPublicKey(params.PublicKeyDER)
	if err != nil {
		return &Error{Kind: ErrInvalidRequest, Op: "GetParametersForImport", KeyID: keyRef,
			Message: fmt.Sprintf("the KMS sent a wrapping key that is not a PKIX public key: %v", err), Err: err}
	}
	pub, ok := pubAny.(*rsa.PublicKey)
	if !ok {
		return &Error{Kind: ErrInvalidRequest, Op: "GetParametersForImport", KeyID: keyRef,
			Message: fmt.Sprintf("the KMS sent a %T wrapping key, want RSA", pubAny)}
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, material, nil)
	if err != nil {
		return &Error{Kind: ErrInvalidRequest, Op: "ImportKeyMaterial", KeyID: keyRef,
			Message: fmt.Sprintf("wrap key material: %v", err), Err: err}
	}
	return a.ImportKeyMaterial(ctx, keyRef, params.ImportToken, wrapped)
}
