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

// FuzzKeyPolicy hands the policy parser arbitrary documents. It refuses
// with MalformedPolicyDocumentException or LimitExceededException, never
// panics, and whatever it accepts keeps the owner an administrator and
// names only principals with a name.
func FuzzKeyPolicy(f *testing.F) {
	s := openTest(f, f.TempDir(), nil)
	owner := "alice"
	f.Add(policyWith(aliceAdmin, bobDecrypt))
	f.Add(policyWith(aliceAdmin, `{"Effect":"Allow","Principal":{"AWS":["bob","carol"]},"Action":["kms:GenerateDataKey*","kms:ReEncrypt*"],"Resource":"*",`+
		`"Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["a"]},"StringEquals":{"kms:EncryptionContext:a":["1","2"]}}}`))
	f.Add(`{"Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"*","Resource":"*"}}`)
	f.Add(`{"Statement":[]}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, doc string) {
		var p *policyRec
		err := s.read(bg, func(st *state) error {
			var err error
			p, err = s.parsePolicy(st, &keyRec{ID: "00000000-0000-4000-8000-000000000000", Owner: owner, Manager: KeyManagerCustomer}, doc)
			return err
		})
		if err != nil {
			if code := ErrorCode(err); code != CodeMalformedPolicy && code != CodeLimitExceeded {
				t.Fatalf("document %q: %v (code %q)", doc, err, code)
			}
			return
		}
		if !p.isAdmin(owner) {
			t.Fatalf("accepted document %q without the owner's administration", doc)
		}
		for _, r := range p.Rules {
			for _, name := range r.Principals {
				if name == "" {
					t.Fatalf("accepted document %q names an empty principal", doc)
				}
			}
		}
	})
}
