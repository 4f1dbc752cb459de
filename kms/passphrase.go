package kms

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/crypto/argon2"
)

// kdfParams is kdf.json: how the passphrase becomes the root secret.
type kdfParams struct {
	KDF       string `json:"kdf"` // "argon2id"
	Salt      []byte `json:"salt"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// Argon2id parameters for new stores: RFC 9106's second recommended
// option (64 MiB), with 3 passes.
var defaultKDF = kdfParams{KDF: "argon2id", Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// passphraseSecret derives the root secret from the passphrase file,
// creating kdf.json (fresh salt) when create is set.
func passphraseSecret(passFile, kdfPath string, create bool) ([]byte, error) {
	pass, err := os.ReadFile(passFile)
	if err != nil {
		return nil, fmt.Errorf("kms: read passphrase file: %w", err)
	}
	defer clear(pass)
	p := bytes.TrimSuffix(pass, []byte("\n"))
	p = bytes.TrimSuffix(p, []byte("\r"))
	if len(p) == 0 {
		return nil, fmt.Errorf("kms: passphrase file %s is empty", passFile)
	}
	var params kdfParams
	if create {
		params = defaultKDF
		params.Salt = make([]byte, 32)
		if _, err := rand.Read(params.Salt); err != nil {
			return nil, fmt.Errorf("kms: passphrase salt: %w", err)
		}
		data, err := json.MarshalIndent(params, "", " ")
		if err != nil {
			return nil, fmt.Errorf("kms: encode %s: %w", kdfPath, err)
		}
		if err := writeFileAtomic(kdfPath, data, 0o600); err != nil {
			return nil, fmt.Errorf("kms: write %s: %w", kdfPath, err)
		}
	} else {
		data, err := os.ReadFile(kdfPath)
		if err != nil {
			return nil, fmt.Errorf("kms: read passphrase parameters: %w", err)
		}
		if err := json.Unmarshal(data, &params); err != nil {
			return nil, fmt.Errorf("kms: parse %s: %w", kdfPath, err)
		}
		if params.KDF != "argon2id" || len(params.Salt) < 16 || params.Time == 0 || params.Time > 100 ||
			params.MemoryKiB < 8*1024 || params.MemoryKiB > 4*1024*1024 || params.Threads == 0 {
			return nil, fmt.Errorf("kms: %s has unsupported or implausible parameters (kdf %q, time %d, memory %d KiB, threads %d)",
				kdfPath, params.KDF, params.Time, params.MemoryKiB, params.Threads)
		}
	}
	return argon2.IDKey(p, params.Salt, params.Time, params.MemoryKiB, params.Threads, 32), nil
}
