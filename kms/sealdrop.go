package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"

	"github.com/encvol/encvol/keywrap"
)

// A process that needs the store only to learn key states (a mount on
// the local KMS, once its data key is unwrapped) drops the seal key, which
// unseals the material of every key of the store, and keeps the state MAC
// key, which only authenticates keys.json: reading Disabled, a deletion or
// an expiry still works, and nothing it holds decrypts another volume.
// RestoreSealKey derives the seal key again from the root key file or
// passphrase file when the data key must be unwrapped again.

// errSealDropped is the refusal of an operation that needs key material
// after ForgetSealKey.
var errSealDropped = newErr(CodeInternal, "this process dropped the key store's seal key (it only checks key states); key material is not available to it")

func sealCipher(secret []byte) (cipher.AEAD, error) {
	sealKey, err := hkdf.Key(sha256.New, secret, nil, labelSeal, 32)
	if err != nil {
		return nil, fmt.Errorf("kms: derive seal key: %w", err)
	}
	blk, err := aes.NewCipher(sealKey)
	clear(sealKey)
	if err != nil {
		return nil, fmt.Errorf("kms: seal cipher: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("kms: seal cipher: %w", err)
	}
	return aead, nil
}

// ForgetSealKey drops the seal key: operations that need key material
// fail until RestoreSealKey; key states, metadata and CheckKeyAccess keep
// working. The key schedule was made under runtime/secret, which erases it
// once the garbage collector finds it unreachable (the caller runs
// runtime.GC); a build without runtimesecret leaves the freed memory as
// it is.
func (s *Store) ForgetSealKey() {
	s.rw.Lock()
	s.seal = nil
	s.rw.Unlock()
}

// RestoreSealKey derives the seal key again from the store's root key file
// or passphrase file.
func (s *Store) RestoreSealKey() error {
	s.rw.Lock()
	defer s.rw.Unlock()
	if s.seal != nil {
		return nil
	}
	var err error
	keywrap.Secretly(func() {
		var secret []byte
		if secret, err = s.rootSecret(s.passphraseFile); err != nil {
			return
		}
		s.seal, err = sealCipher(secret)
		clear(secret)
	})
	return err
}

// CheckKeyAccess answers whether principal could Decrypt blob now, without
// unsealing key material: the same key reference, authorization, key state
// and material version checks as DecryptVia, and the same audit record of
// a key check (chk), but the blob itself is not opened. A mount uses it
// for its key checks on the local KMS, where the blob is its own
// MAC-covered header field and only the key's state is in question.
func (s *Store) CheckKeyAccess(ctx context.Context, principal string, blob []byte, encCtx map[string]string, keyRef string, chk *KeyCheck) (grants []string, err error) {
	if chk != nil {
		if err := chk.validate(); err != nil {
			return nil, err
		}
	}
	var info opInfo
	err = s.read(ctx, func(st *state) error {
		_, err := s.decryptLocked(st, principal, OpDecrypt, blob, encCtx, keyRef, &info, false)
		return err
	})
	if chk != nil {
		err = s.auditCheck(principal, *chk, info, encCtx, err)
	} else {
		err = s.auditData(principal, OpDecrypt, info, encCtx, err)
	}
	return info.grants, err
}
