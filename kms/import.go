package kms

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"hash"
	"time"
)

// Wrapping algorithms and key specs GetParametersForImport accepts.
const (
	WrapRSAOAEPSHA1   = "RSAES_OAEP_SHA_1"
	WrapRSAOAEPSHA256 = "RSAES_OAEP_SHA_256"
)

// importRec holds the outstanding import parameters of an EXTERNAL key:
// the RSA private key (PKCS#8, sealed like key material) and the token's
// random part.
type importRec struct {
	TokenID    string    `json:"token_id"`
	Algorithm  string    `json:"algorithm"`
	SealedPriv []byte    `json:"sealed_private_key"`
	ValidTo    time.Time `json:"valid_to"`
}

// Import token layout: 0x01 || key UUID (16 bytes) || token ID (16 bytes).
const importTokenLen = 1 + 16 + 16

func importAAD(keyID, tokenID string) string {
	return fmt.Sprintf("encvol kms import v1\x00%s\x00%s", keyID, tokenID)
}

func wrapKeyBits(spec string) (int, error) {
	switch spec {
	case "RSA_2048", "":
		return 2048, nil
	case "RSA_3072":
		return 3072, nil
	case "RSA_4096":
		return 4096, nil
	}
	return 0, validationErr("WrappingKeySpec %q is not supported; use RSA_2048, RSA_3072 or RSA_4096", spec)
}

func oaepHash(alg string) (hash.Hash, error) {
	switch alg {
	case WrapRSAOAEPSHA1:
		return sha1.New(), nil
	case WrapRSAOAEPSHA256:
		return sha256.New(), nil
	}
	return nil, validationErr("WrappingAlgorithm %q is not supported; use RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256", alg)
}

// GetParametersForImport creates an RSA wrapping key for importing key
// material into an EXTERNAL key and returns its public half (DER, PKIX)
// with a token; both are valid for 24 hours. New parameters replace older
// ones for the same key.
func (s *Store) GetParametersForImport(ctx context.Context, principal, keyRef, wrappingAlg, wrappingKeySpec string) (ImportParams, error) {
	var out ImportParams
	var keyID string
	err := func() error {
		if _, err := oaepHash(wrappingAlg); err != nil {
			return err
		}
		bits, err := wrapKeyBits(wrappingKeySpec)
		if err != nil {
			return err
		}
		// The key is checked before spending a second on RSA key generation,
		// and again under the write lock because it may change meanwhile.
		importable := func(st *state) (*keyRec, error) {
			k, err := s.resolve(st, principal, keyRef)
			if err != nil {
				return nil, err
			}
			keyID = k.ID
			if err := s.requireAdmin(k, principal, "GetParametersForImport"); err != nil {
				return nil, err
			}
			return k, s.importableErr(k)
		}
		if err := s.read(ctx, func(st *state) error {
			_, err := importable(st)
			return err
		}); err != nil {
			return err
		}
		priv, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return internalErr("generate wrapping key", err)
		}
		pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		if err != nil {
			return internalErr("encode wrapping key", err)
		}
		privDER, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return internalErr("encode wrapping key", err)
		}
		defer clear(privDER)
		var tid [16]byte
		if _, err := rand.Read(tid[:]); err != nil {
			return internalErr("import token", err)
		}
		return s.write(ctx, func(st *state, _ *storeLock) error {
			k, err := importable(st)
			if err != nil {
				return err
			}
			idb, _ := uuidBytes(k.ID)
			tokenID := hex.EncodeToString(tid[:])
			validTo := s.now().UTC().Add(ImportParamsValidity)
			sealedPriv, err := s.sealMaterial(privDER, importAAD(k.ID, tokenID))
			if err != nil {
				return err
			}
			k.Import = &importRec{TokenID: tokenID, Algorithm: wrappingAlg, ValidTo: validTo, SealedPriv: sealedPriv}
			tok := append([]byte{1}, idb...)
			out = ImportParams{KeyID: k.ID, ImportToken: append(tok, tid[:]...), PublicKeyDER: pubDER, ValidTo: validTo}
			return nil
		})
	}()
	return out, s.auditOp(principal, "GetParametersForImport", keyID, err)
}

func (s *Store) importableErr(k *keyRec) error {
	if k.Origin != OriginExternal {
		return newErr(CodeUnsupportedOperation, "%s origin is %s which is not valid for this operation.", s.keyARN(k.ID), k.Origin)
	}
	if k.State == StatePendingDeletion {
		return s.stateErr(k)
	}
	return nil
}

// ImportKeyMaterial unwraps encryptedMaterial (RSA-OAEP with the import
// parameters) and installs it as the key's material. It must be exactly 32
// bytes and, after a first import, the same material as before. validTo nil
// means the material does not expire; otherwise it must lie in the future,
// and when it passes the key returns to PendingImport.
func (s *Store) ImportKeyMaterial(ctx context.Context, principal, keyRef string, importToken, encryptedMaterial []byte, validTo *time.Time) error {
	return s.adminWrite(ctx, principal, "ImportKeyMaterial", keyRef, func(_ *state, k *keyRec) error {
		if err := s.importableErr(k); err != nil {
			return err
		}
		now := s.now().UTC()
		if validTo != nil && !validTo.After(now) {
			return validationErr("ValidTo %s is not in the future", validTo.UTC().Format(time.RFC3339))
		}
		idb, _ := uuidBytes(k.ID)
		if len(importToken) != importTokenLen || importToken[0] != 1 || !hmac.Equal(importToken[1:17], idb) {
			return newErr(CodeInvalidImportToken, "the import token is not valid for %s", s.keyARN(k.ID))
		}
		imp := k.Import
		if imp == nil || subtle.ConstantTimeCompare([]byte(hex.EncodeToString(importToken[17:])), []byte(imp.TokenID)) != 1 {
			return newErr(CodeInvalidImportToken, "the import token is not valid for %s (superseded or never issued); call GetParametersForImport again", s.keyARN(k.ID))
		}
		if !now.Before(imp.ValidTo) {
			return newErr(CodeExpiredImportToken, "the import token for %s expired at %s; call GetParametersForImport again", s.keyARN(k.ID), imp.ValidTo.Format(time.RFC3339))
		}
		privDER, err := s.openMaterial(imp.SealedPriv, importAAD(k.ID, imp.TokenID))
		if err != nil {
			return err
		}
		defer clear(privDER)
		pk, err := x509.ParsePKCS8PrivateKey(privDER)
		if err != nil {
			return internalErr("parse wrapping key", err)
		}
		priv, ok := pk.(*rsa.PrivateKey)
		if !ok {
			return newErr(CodeInternal, "wrapping key is not RSA")
		}
		h, err := oaepHash(imp.Algorithm)
		if err != nil {
			return err
		}
		material, err := rsa.DecryptOAEP(h, nil, priv, encryptedMaterial, nil)
		if err != nil {
			return newErr(CodeInvalidCiphertext, "the encrypted key material could not be decrypted with the import parameters (%s, RSA-OAEP)", imp.Algorithm)
		}
		defer clear(material)
		if len(material) != 32 {
			return newErr(CodeIncorrectKeyMaterial, "key material must be 32 bytes (a 256-bit symmetric key), got %d", len(material))
		}
		fp := s.fingerprint(k.ID, material)
		if k.Fingerprint != nil && !hmac.Equal(fp, k.Fingerprint) {
			return newErr(CodeIncorrectKeyMaterial, "the key material is not the material previously imported into %s; only the same material can be re-imported", s.keyARN(k.ID))
		}
		k.Fingerprint = fp
		if len(k.Versions) == 0 {
			k.Versions = []*versionRec{{Version: 1, Created: now}}
		}
		sealed, err := s.sealMaterial(material, materialAAD(k.ID, 1))
		if err != nil {
			return err
		}
		k.Versions[0].Sealed = sealed
		if validTo != nil {
			t := validTo.UTC()
			k.ValidTo, k.ExpirationModel = &t, ExpirationModelExpires
		} else {
			k.ValidTo, k.ExpirationModel = nil, ExpirationModelDoesNotExpire
		}
		if k.State == StatePendingImport {
			k.State = StateEnabled
		}
		return nil
	})
}

// fingerprint identifies imported material without revealing it.
func (s *Store) fingerprint(keyID string, material []byte) []byte {
	m := hmac.New(sha256.New, s.macKey)
	m.Write([]byte("encvol kms import fingerprint v1\x00" + keyID + "\x00"))
	m.Write(material)
	return m.Sum(nil)
}

// dropMaterial forgets an EXTERNAL key's imported material (expiry or
// DeleteImportedKeyMaterial): the key waits in PendingImport for the same
// material to be imported again, which its fingerprint recognises.
func (k *keyRec) dropMaterial() {
	for _, v := range k.Versions {
		v.Sealed = nil
	}
	if k.State != StatePendingDeletion {
		k.State = StatePendingImport
	}
}

// DeleteImportedKeyMaterial deletes the material imported into an EXTERNAL
// key at once: the key becomes PendingImport and unwraps nothing until the
// same material is imported again. Deleting when there is none is a no-op.
func (s *Store) DeleteImportedKeyMaterial(ctx context.Context, principal, keyRef string) error {
	return s.adminWrite(ctx, principal, "DeleteImportedKeyMaterial", keyRef, func(_ *state, k *keyRec) error {
		if err := s.importableErr(k); err != nil {
			return err
		}
		if !k.hasMaterial() {
			return errNoChange
		}
		k.dropMaterial()
		k.ValidTo = nil
		return nil
	})
}
