package kms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"hash"
	"testing"
	"time"
)

func wrapMaterial(t *testing.T, p ImportParams, h hash.Hash, material []byte) []byte {
	t.Helper()
	pub, err := x509.ParsePKIXPublicKey(p.PublicKeyDER)
	if err != nil {
		t.Fatalf("parse import public key: %v", err)
	}
	ct, err := rsa.EncryptOAEP(h, rand.Reader, pub.(*rsa.PublicKey), material, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func TestImportKeyMaterialRoundTrip(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openTest(t, t.TempDir(), clk)
	md, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{Origin: OriginExternal, Description: "byok"})
	if err != nil {
		t.Fatal(err)
	}
	if md.KeyState != StatePendingImport || md.Enabled || md.CurrentVersion != 0 {
		t.Fatalf("new EXTERNAL key: %+v", md)
	}
	_, _, _, err = s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, nil)
	wantCode(t, err, CodeInvalidState)
	wantCode(t, s.EnableKey(bg, LocalPrincipal, md.KeyID), CodeInvalidState)

	normal := mustKey(t, s, LocalPrincipal)
	_, err = s.GetParametersForImport(bg, LocalPrincipal, normal.KeyID, WrapRSAOAEPSHA256, "RSA_2048")
	wantCode(t, err, CodeUnsupportedOperation)
	_, err = s.GetParametersForImport(bg, LocalPrincipal, md.KeyID, "RSA_AES_KEY_WRAP_SHA_1", "RSA_2048")
	wantCode(t, err, CodeValidation)
	_, err = s.GetParametersForImport(bg, LocalPrincipal, md.KeyID, WrapRSAOAEPSHA256, "RSA_1024")
	wantCode(t, err, CodeValidation)
	_, err = s.GetParametersForImport(bg, "mallory", md.KeyID, WrapRSAOAEPSHA256, "RSA_2048")
	wantCode(t, err, CodeAccessDenied)

	material := make([]byte, 32)
	rand.Read(material)
	for _, tc := range []struct {
		alg string
		h   func() hash.Hash
	}{{WrapRSAOAEPSHA1, sha1.New}, {WrapRSAOAEPSHA256, sha256.New}} {
		p, err := s.GetParametersForImport(bg, LocalPrincipal, md.Arn, tc.alg, "RSA_2048")
		if err != nil {
			t.Fatal(err)
		}
		if !p.ValidTo.Equal(clk.Now().Add(24 * time.Hour)) {
			t.Fatalf("ValidTo %v", p.ValidTo)
		}
		// Wrong length, wrong hash and a foreign token are refused.
		wantCode(t, s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, tc.h(), material[:16]), nil), CodeIncorrectKeyMaterial)
		other := sha256.New
		if tc.alg == WrapRSAOAEPSHA256 {
			other = sha1.New
		}
		wantCode(t, s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, other(), material), nil), CodeInvalidCiphertext)
		badTok := bytes.Clone(p.ImportToken)
		badTok[len(badTok)-1] ^= 1
		wantCode(t, s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, badTok, wrapMaterial(t, p, tc.h(), material), nil), CodeInvalidImportToken)

		validTo := clk.Now().Add(48 * time.Hour)
		if err := s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, tc.h(), material), &validTo); err != nil {
			t.Fatalf("ImportKeyMaterial (%s): %v", tc.alg, err)
		}
	}
	got, _ := s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	if got.KeyState != StateEnabled || got.ExpirationModel != ExpirationModelExpires || got.ValidTo == nil || got.CurrentVersion != 1 {
		t.Fatalf("after import: %+v", got)
	}

	// The imported material really is the key: a blob made with it by an
	// independent computation decrypts.
	ectx := map[string]string{"encvol:volume-id": "vol-byok"}
	ctxEnc, _ := canonicalContext(ectx)
	blob, err := sealBlob(md.KeyID, 1, material, []byte("outside"), ctxEnc)
	if err != nil {
		t.Fatal(err)
	}
	pt, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, "")
	if err != nil || string(pt) != "outside" {
		t.Fatalf("Decrypt of externally sealed blob: %q %v", pt, err)
	}
	dk, dblob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}

	// Expiry: the key falls back to PendingImport; only the same material
	// restores it.
	clk.Advance(48 * time.Hour)
	_, _, err = s.Decrypt(bg, LocalPrincipal, dblob, ectx, "")
	wantCode(t, err, CodeInvalidState)
	got, _ = s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	if got.KeyState != StatePendingImport {
		t.Fatalf("after expiry state %s", got.KeyState)
	}
	p, err := s.GetParametersForImport(bg, LocalPrincipal, md.KeyID, WrapRSAOAEPSHA256, "RSA_3072")
	if err != nil {
		t.Fatal(err)
	}
	otherMat := make([]byte, 32)
	rand.Read(otherMat)
	wantCode(t, s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, sha256.New(), otherMat), nil), CodeIncorrectKeyMaterial)
	past := clk.Now().Add(-time.Hour)
	wantCode(t, s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, sha256.New(), material), &past), CodeValidation)
	if err := s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, sha256.New(), material), nil); err != nil {
		t.Fatal(err)
	}
	back, _, err := s.Decrypt(bg, LocalPrincipal, dblob, ectx, "")
	if err != nil || !bytes.Equal(back, dk) {
		t.Fatalf("Decrypt after re-import: %v", err)
	}
	got, _ = s.DescribeKey(bg, LocalPrincipal, md.KeyID)
	if got.ExpirationModel != ExpirationModelDoesNotExpire || got.ValidTo != nil {
		t.Fatalf("after non-expiring re-import: %+v", got)
	}

	// Import tokens expire after 24 hours.
	clk.Advance(25 * time.Hour)
	wantCode(t, s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, sha256.New(), material), nil), CodeExpiredImportToken)
}
