package kms

import (
	"bytes"
	"testing"
)

// FuzzDecryptBlob hands Decrypt arbitrary ciphertext blobs and contexts.
// Only the blob the store produced, with its own context, may decrypt, and
// then only to its own plaintext; everything else is refused with a client
// error (never an internal one, never a panic).
func FuzzDecryptBlob(f *testing.F) {
	s := openTest(f, f.TempDir(), nil)
	md, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{Description: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	plain := []byte("the fuzzed data key")
	const ctxKey, ctxVal = "volume", "vol-1"
	blob, _, err := s.Encrypt(bg, LocalPrincipal, md.KeyID, plain, map[string]string{ctxKey: ctxVal})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob, ctxVal)
	f.Add(blob, "vol-2")
	f.Add(blob[:blobHeaderLen+blobTagLen], ctxVal)
	f.Add([]byte{blobFormat}, "")
	f.Add([]byte{}, ctxVal)
	flipped := bytes.Clone(blob)
	flipped[len(flipped)-1] ^= 1
	f.Add(flipped, ctxVal)

	f.Fuzz(func(t *testing.T, b []byte, val string) {
		pt, _, err := s.Decrypt(bg, LocalPrincipal, b, map[string]string{ctxKey: val}, "")
		if err != nil {
			if code := ErrorCode(err); code == CodeInternal || code == "" {
				t.Fatalf("blob %x: %v (code %q)", b, err, code)
			}
			return
		}
		if !bytes.Equal(b, blob) || val != ctxVal {
			t.Fatalf("a blob or context the store never produced decrypted: blob %x context %q", b, val)
		}
		if !bytes.Equal(pt, plain) {
			t.Fatalf("decrypted to %q, want %q", pt, plain)
		}
	})
}
