package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"sort"
)

// Ciphertext blob format, version 1 (all integers big-endian):
//
//	offset  size  field
//	0       1     format byte 0xE1 ("encvol kms blob, version 1")
//	1       16    key ID: the CMK's UUID as 16 raw bytes
//	17      4     key material version (uint32, 1 = first material)
//	21      16    random nonce N
//	37      n+16  AES-256-GCM ciphertext of the plaintext, with tag
//
// The GCM key is HMAC-SHA256(material, "encvol kms blob v1\x00" || N), so
// every blob has its own key and random nonces never repeat under one key;
// the GCM nonce is then 12 zero bytes. The additional data is the 37-byte
// header followed by the canonical encoding of the encryption context:
//
//	uint32 number of pairs, then for each pair in ascending byte order of
//	the key: uint32 len(key) || key || uint32 len(value) || value
//
// An absent and an empty context encode alike (count 0). Because the header
// is authenticated, changing the key ID or version of a blob makes it fail;
// because the context is, a different or missing context fails with
// InvalidCiphertextException.
const (
	blobFormat    = 0xE1
	blobHeaderLen = 1 + 16 + 4 + 16
	blobTagLen    = 16

	maxPlaintext  = 4096
	maxDataKey    = 1024
	maxContextLen = 8192
	blobKeyLabel  = "encvol kms blob v1\x00"
)

type blobHeader struct {
	keyID   string
	version uint32
}

func parseBlob(blob []byte) (blobHeader, error) {
	if len(blob) < blobHeaderLen+blobTagLen || blob[0] != blobFormat {
		return blobHeader{}, newErr(CodeInvalidCiphertext, "the ciphertext is not a blob this KMS produced (bad length or format byte)")
	}
	return blobHeader{keyID: uuidString(blob[1:17]), version: binary.BigEndian.Uint32(blob[17:21])}, nil
}

// canonicalContext encodes an encryption context deterministically.
func canonicalContext(ctx map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(ctx))
	size := 4
	for k, v := range ctx {
		keys = append(keys, k)
		size += 8 + len(k) + len(v)
	}
	if size-4 > maxContextLen {
		return nil, validationErr("encryption context is %d bytes; at most %d allowed", size-4, maxContextLen)
	}
	sort.Strings(keys)
	out := make([]byte, 0, size)
	out = binary.BigEndian.AppendUint32(out, uint32(len(keys)))
	for _, k := range keys {
		out = binary.BigEndian.AppendUint32(out, uint32(len(k)))
		out = append(out, k...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(ctx[k])))
		out = append(out, ctx[k]...)
	}
	return out, nil
}

func blobAEAD(material, nonce []byte) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, material)
	m.Write([]byte(blobKeyLabel))
	m.Write(nonce)
	k := m.Sum(nil)
	defer clear(k)
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var zeroNonce [12]byte

func sealBlob(keyID string, version uint32, material, plaintext []byte, ctxEnc []byte) ([]byte, error) {
	idb, ok := uuidBytes(keyID)
	if !ok {
		return nil, newErr(CodeInternal, "key id %q is not a UUID", keyID)
	}
	out := make([]byte, 0, blobHeaderLen+len(plaintext)+blobTagLen)
	out = append(out, blobFormat)
	out = append(out, idb...)
	out = binary.BigEndian.AppendUint32(out, version)
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, internalErr("blob nonce", err)
	}
	out = append(out, nonce...)
	aead, err := blobAEAD(material, nonce)
	if err != nil {
		return nil, internalErr("blob cipher", err)
	}
	aad := append(out[:blobHeaderLen:blobHeaderLen], ctxEnc...)
	return aead.Seal(out, zeroNonce[:], plaintext, aad), nil
}

func openBlob(blob, material, ctxEnc []byte) ([]byte, error) {
	aead, err := blobAEAD(material, blob[21:37])
	if err != nil {
		return nil, internalErr("blob cipher", err)
	}
	aad := append(blob[:blobHeaderLen:blobHeaderLen], ctxEnc...)
	pt, err := aead.Open(nil, zeroNonce[:], blob[blobHeaderLen:], aad)
	if err != nil {
		return nil, newErr(CodeInvalidCiphertext, "the ciphertext or its encryption context is not valid (authentication failed)")
	}
	return pt, nil
}

// material returns the plaintext key material of version v of k; the
// caller clears it after use.
func (s *Store) material(k *keyRec, v uint32) ([]byte, error) {
	rec, err := s.versionRec(k, v)
	if err != nil {
		return nil, err
	}
	return s.openMaterial(rec.Sealed, materialAAD(k.ID, v))
}

// versionRec returns version v of k's material, refusing one that does not
// exist or whose imported material is gone.
func (s *Store) versionRec(k *keyRec, v uint32) (*versionRec, error) {
	if v == 0 || int(v) > len(k.Versions) {
		return nil, newErr(CodeInvalidCiphertext, "the ciphertext names key material version %d, which %s does not have", v, s.keyARN(k.ID))
	}
	rec := k.Versions[v-1]
	if rec.Sealed == nil {
		return nil, newErr(CodeInvalidState, "%s is pending import.", s.keyARN(k.ID))
	}
	return rec, nil
}

// encryptLocked wraps plaintext under the newest version of the key keyRef
// names, after authorizing op.
func (s *Store) encryptLocked(st *state, principal, op, keyRef string, plaintext []byte, encCtx map[string]string, info *opInfo) ([]byte, error) {
	ctxEnc, err := canonicalContext(encCtx)
	if err != nil {
		return nil, err
	}
	k, err := s.resolve(st, principal, keyRef)
	if err != nil {
		return nil, err
	}
	info.keyID, info.arn = k.ID, s.keyARN(k.ID)
	if err := s.authorize(k, principal, op, encCtx); err != nil {
		return nil, err
	}
	if err := s.stateErr(k); err != nil {
		return nil, err
	}
	v := uint32(len(k.Versions))
	info.version = int(v)
	m, err := s.material(k, v)
	if err != nil {
		return nil, err
	}
	defer clear(m)
	return sealBlob(k.ID, v, m, plaintext, ctxEnc)
}

// decryptLocked unwraps blob after authorizing op on the key the blob
// names; with unseal false it stops after the checks (CheckKeyAccess).
func (s *Store) decryptLocked(st *state, principal, op string, blob []byte, encCtx map[string]string, keyRef string, info *opInfo, unseal bool) ([]byte, error) {
	h, err := parseBlob(blob)
	if err != nil {
		return nil, err
	}
	info.keyID, info.version = h.keyID, int(h.version)
	ctxEnc, err := canonicalContext(encCtx)
	if err != nil {
		return nil, err
	}
	k, err := s.resolve(st, principal, h.keyID)
	if err != nil {
		return nil, err
	}
	info.arn = s.keyARN(k.ID)
	if keyRef != "" {
		want, err := s.resolve(st, principal, keyRef)
		if err != nil {
			return nil, err
		}
		if want.ID != k.ID {
			return nil, newErr(CodeIncorrectKey, "The key ID in the request does not identify a CMK that can perform this operation: the ciphertext was encrypted under %s, not %s", s.keyARN(k.ID), s.keyARN(want.ID))
		}
	}
	if info.grants, err = s.authorizeVia(k, principal, op, encCtx); err != nil {
		return nil, err
	}
	if err := s.stateErr(k); err != nil {
		return nil, err
	}
	if !unseal {
		_, err := s.versionRec(k, h.version)
		return nil, err
	}
	m, err := s.material(k, h.version)
	if err != nil {
		return nil, err
	}
	defer clear(m)
	return openBlob(blob, m, ctxEnc)
}

// opInfo collects what the audit record of a data operation names.
type opInfo struct {
	keyID   string
	arn     string
	version int
	grants  []string // the grants that admitted the call (authorizeVia)
}

// GenerateDataKey returns nBytes (1..1024) random bytes and their blob
// under the newest version of the key. The caller owns and must clear the
// plaintext.
func (s *Store) GenerateDataKey(ctx context.Context, principal, keyRef string, nBytes int, encCtx map[string]string) (plaintext, blob []byte, keyARN string, err error) {
	return s.generateDataKey(ctx, principal, OpGenerateDataKey, keyRef, nBytes, encCtx)
}

// GenerateDataKeyWithoutPlaintext is GenerateDataKey without the plaintext;
// grants must list GenerateDataKeyWithoutPlaintext for it.
func (s *Store) GenerateDataKeyWithoutPlaintext(ctx context.Context, principal, keyRef string, nBytes int, encCtx map[string]string) (blob []byte, keyARN string, err error) {
	pt, blob, arn, err := s.generateDataKey(ctx, principal, OpGenerateDataKeyWithoutPlaintext, keyRef, nBytes, encCtx)
	clear(pt)
	return blob, arn, err
}

func (s *Store) generateDataKey(ctx context.Context, principal, op, keyRef string, nBytes int, encCtx map[string]string) ([]byte, []byte, string, error) {
	var info opInfo
	var pt, blob []byte
	err := func() error {
		if nBytes < 1 || nBytes > maxDataKey {
			return validationErr("NumberOfBytes must be between 1 and %d, got %d", maxDataKey, nBytes)
		}
		pt = make([]byte, nBytes)
		if _, err := rand.Read(pt); err != nil {
			return internalErr("generate data key", err)
		}
		return s.read(ctx, func(st *state) error {
			var err error
			blob, err = s.encryptLocked(st, principal, op, keyRef, pt, encCtx, &info)
			return err
		})
	}()
	if err = s.auditData(principal, op, info, encCtx, err); err != nil {
		clear(pt)
		return nil, nil, "", err
	}
	return pt, blob, info.arn, nil
}

// Encrypt wraps up to 4096 bytes of plaintext under the newest key version.
func (s *Store) Encrypt(ctx context.Context, principal, keyRef string, plaintext []byte, encCtx map[string]string) (blob []byte, keyARN string, err error) {
	var info opInfo
	err = func() error {
		if len(plaintext) == 0 || len(plaintext) > maxPlaintext {
			return validationErr("Plaintext must be 1 to %d bytes, got %d", maxPlaintext, len(plaintext))
		}
		return s.read(ctx, func(st *state) error {
			var err error
			blob, err = s.encryptLocked(st, principal, OpEncrypt, keyRef, plaintext, encCtx, &info)
			return err
		})
	}()
	if err = s.auditData(principal, OpEncrypt, info, encCtx, err); err != nil {
		return nil, "", err
	}
	return blob, info.arn, nil
}

// Decrypt unwraps a blob made by Encrypt or GenerateDataKey. The key comes
// from the blob; keyRef, when set, must name the same key
// (IncorrectKeyException). encCtx must equal the context used to wrap.
func (s *Store) Decrypt(ctx context.Context, principal string, blob []byte, encCtx map[string]string, keyRef string) (plaintext []byte, keyARN string, err error) {
	plaintext, keyARN, _, err = s.decrypt(ctx, principal, blob, encCtx, keyRef, nil)
	return plaintext, keyARN, err
}

// DecryptKeyCheck is Decrypt made as one of a mount's periodic key checks
// (plain Decrypt when chk is nil): the same authorization and answer,
// recorded as checksummary.go says.
func (s *Store) DecryptKeyCheck(ctx context.Context, principal string, blob []byte, encCtx map[string]string, keyRef string, chk *KeyCheck) (plaintext []byte, keyARN string, err error) {
	plaintext, keyARN, _, err = s.DecryptVia(ctx, principal, blob, encCtx, keyRef, chk)
	return plaintext, keyARN, err
}

// DecryptVia is DecryptKeyCheck that also says how the call was admitted:
// grants is nil when the principal may use the key without a grant (its
// owner, an administrator, a key policy statement), else it names every
// grant that admits the call (UnnamedGrant for one without a name). A
// mount learns from it whether it holds the key only through grants that
// restrict it, such as a read-only share.
func (s *Store) DecryptVia(ctx context.Context, principal string, blob []byte, encCtx map[string]string, keyRef string, chk *KeyCheck) (plaintext []byte, keyARN string, grants []string, err error) {
	if chk != nil {
		if err := chk.validate(); err != nil {
			return nil, "", nil, err
		}
	}
	return s.decrypt(ctx, principal, blob, encCtx, keyRef, chk)
}

func (s *Store) decrypt(ctx context.Context, principal string, blob []byte, encCtx map[string]string, keyRef string, chk *KeyCheck) ([]byte, string, []string, error) {
	var info opInfo
	var plaintext []byte
	err := s.read(ctx, func(st *state) error {
		var err error
		plaintext, err = s.decryptLocked(st, principal, OpDecrypt, blob, encCtx, keyRef, &info, true)
		return err
	})
	if chk != nil {
		err = s.auditCheck(principal, *chk, info, encCtx, err)
	} else {
		err = s.auditData(principal, OpDecrypt, info, encCtx, err)
	}
	if err != nil {
		clear(plaintext)
		return nil, "", nil, err
	}
	return plaintext, info.arn, info.grants, nil
}

// ReEncrypt unwraps blob (ReEncryptFrom on its key) and wraps the plaintext
// under dstKeyRef's newest version (ReEncryptTo) without returning it.
func (s *Store) ReEncrypt(ctx context.Context, principal string, blob []byte, srcCtx map[string]string, srcKeyRef, dstKeyRef string, dstCtx map[string]string) (newBlob []byte, srcARN, dstARN string, err error) {
	var src, dst opInfo
	err = s.read(ctx, func(st *state) error {
		pt, err := s.decryptLocked(st, principal, OpReEncryptFrom, blob, srcCtx, srcKeyRef, &src, true)
		if err != nil {
			return err
		}
		defer clear(pt)
		newBlob, err = s.encryptLocked(st, principal, OpReEncryptTo, dstKeyRef, pt, dstCtx, &dst)
		return err
	})
	// One record per side, so a filter on either key finds the operation.
	srcErr := s.auditData(principal, "ReEncryptFrom", src, srcCtx, err)
	if dst.keyID != "" || err == nil {
		if aerr := s.auditData(principal, "ReEncryptTo", dst, dstCtx, err); srcErr == nil {
			srcErr = aerr
		}
	}
	if srcErr != nil {
		return nil, "", "", srcErr
	}
	return newBlob, src.arn, dst.arn, nil
}
