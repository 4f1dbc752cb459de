package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kms"
)

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPrincipals(t *testing.T) {
	dir := t.TempDir()
	good := `
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN0000000001"
secret_access_key = "adminSecretAdminSecret0000000001"

[[principal]]
name = "reader"
access_key_id = "AKIDREADER000000001"
secret_access_key = "readerSecretReaderSecret00000001"
`
	ps, err := LoadPrincipals(writeFile(t, dir, "good.toml", good, 0o600))
	if err != nil {
		t.Fatalf("LoadPrincipals: %v", err)
	}
	if len(ps) != 2 || ps[0] != admin || ps[1] != reader {
		t.Fatalf("LoadPrincipals = %+v", ps)
	}

	cases := []struct{ name, content, want string }{
		{"empty", "", "no [[principal]]"},
		{"unknown key", good + "[[principal]]\nname = \"x\"\naccess_key = \"AKIDX0000000000001\"\nsecret_access_key = \"xxxxxxxxxxxxxxxxxxxx\"\n", "unknown key"},
		{"duplicate name", good + "[[principal]]\nname = \"admin\"\naccess_key_id = \"AKIDOTHER0000000001\"\nsecret_access_key = \"otherSecretOtherSecret000000001\"\n", "name is used twice"},
		{"duplicate key", good + "[[principal]]\nname = \"third\"\naccess_key_id = \"AKIDADMIN0000000001\"\nsecret_access_key = \"thirdSecretThirdSecret000000001\"\n", "used twice"},
		{"short secret", "[[principal]]\nname = \"a\"\naccess_key_id = \"AKIDA000000000001\"\nsecret_access_key = \"short\"\n", "at least 16"},
		{"empty name", "[[principal]]\nname = \"\"\naccess_key_id = \"AKIDA000000000001\"\nsecret_access_key = \"longenoughsecret0001\"\n", "name is empty"},
		{"bad key id", "[[principal]]\nname = \"a\"\naccess_key_id = \"AKID/A\"\nsecret_access_key = \"longenoughsecret0001\"\n", "access_key_id"},
		{"not toml", "[[principal]\nname=", "principals file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".toml", tc.content, 0o600)
			_, err := LoadPrincipals(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("LoadPrincipals: got %v, want an error naming %s and containing %q", err, p, tc.want)
			}
		})
	}
	if _, err := LoadPrincipals(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: %v", err)
	}

}

// selfSigned writes a certificate for 127.0.0.1 and returns the paths and a
// pool trusting it.
func selfSigned(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "encvol test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath = writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o600)
	keyPath = writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

func TestTLSAndShutdown(t *testing.T) {
	store, err := kms.Open(t.TempDir(), kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := New(store, []Principal{admin}, zerolog.Nop(), Options{})
	certPath, keyPath, pool := selfSigned(t)

	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- srv.ListenAndServe(ctx, "127.0.0.1:0", certPath, keyPath, func(a net.Addr) { readyc <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-readyc:
	case err := <-done:
		t.Fatalf("TLS server did not start: %v", err)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	c := awskms.New(awskms.Options{
		Region: testRegion, Credentials: credentials.NewStaticCredentialsProvider(admin.AccessKeyID, admin.SecretAccessKey, ""),
		BaseEndpoint: aws.String("https://" + addr.String()), HTTPClient: hc, RetryMaxAttempts: 1,
	})
	if _, err := c.CreateKey(context.Background(), &awskms.CreateKeyInput{}); err != nil {
		t.Fatalf("CreateKey over TLS: %v", err)
	}
	// Plain HTTP to the TLS port is refused.
	if _, err := newClient("http://"+addr.String(), admin).ListKeys(context.Background(), &awskms.ListKeysInput{}); err == nil {
		t.Errorf("plain HTTP request to the TLS listener succeeded")
	}

	// The same port cannot be bound twice; the error says so.
	err = srv.ListenAndServe(context.Background(), addr.String(), "", "", nil)
	if err == nil || !errorsIsAddrInUse(err) {
		t.Errorf("second listener on %s: got %v, want address in use", addr, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ListenAndServe did not return after its context was cancelled")
	}
	if _, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		t.Errorf("listener still accepts connections after shutdown")
	}

	// Configuration errors come back before listening.
	if err := srv.ListenAndServe(context.Background(), "127.0.0.1:0", certPath, "", nil); err == nil {
		t.Errorf("TLS with a certificate but no key started")
	}
	if err := srv.ListenAndServe(context.Background(), "127.0.0.1:0", keyPath, certPath, nil); err == nil {
		t.Errorf("TLS with swapped certificate and key started")
	}
}

func errorsIsAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

func TestImportKeyMaterial(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	ctx := context.Background()
	ck, err := c.CreateKey(ctx, &awskms.CreateKeyInput{Origin: types.OriginTypeExternal, Description: aws.String("byok")})
	if err != nil {
		t.Fatalf("CreateKey EXTERNAL: %v", err)
	}
	if ck.KeyMetadata.KeyState != types.KeyStatePendingImport || ck.KeyMetadata.Origin != types.OriginTypeExternal {
		t.Fatalf("EXTERNAL key: state %v origin %v", ck.KeyMetadata.KeyState, ck.KeyMetadata.Origin)
	}
	var ise *types.KMSInvalidStateException
	if _, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: ck.KeyMetadata.KeyId, Plaintext: []byte("x")}); !errors.As(err, &ise) {
		t.Errorf("Encrypt under a key pending import: got %v, want KMSInvalidStateException", err)
	}
	params, err := c.GetParametersForImport(ctx, &awskms.GetParametersForImportInput{KeyId: ck.KeyMetadata.KeyId,
		WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha256, WrappingKeySpec: types.WrappingKeySpecRsa2048})
	if err != nil {
		t.Fatalf("GetParametersForImport: %v", err)
	}
	if params.ParametersValidTo == nil || time.Until(*params.ParametersValidTo) < time.Hour {
		t.Errorf("ParametersValidTo = %v", params.ParametersValidTo)
	}
	pubAny, err := x509.ParsePKIXPublicKey(params.PublicKey)
	if err != nil {
		t.Fatalf("PublicKey is not PKIX DER: %v", err)
	}
	pub, ok := pubAny.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("PublicKey is %T, want RSA", pubAny)
	}
	material := make([]byte, 32)
	if _, err := rand.Read(material); err != nil {
		t.Fatal(err)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, material, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportKeyMaterial(ctx, &awskms.ImportKeyMaterialInput{KeyId: ck.KeyMetadata.KeyId, ImportToken: params.ImportToken,
		EncryptedKeyMaterial: wrapped, ExpirationModel: types.ExpirationModelTypeKeyMaterialDoesNotExpire}); err != nil {
		t.Fatalf("ImportKeyMaterial: %v", err)
	}
	enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: ck.KeyMetadata.KeyId, Plaintext: []byte("imported")})
	if err != nil {
		t.Fatalf("Encrypt after import: %v", err)
	}
	dec, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "imported" {
		t.Fatalf("Decrypt after import: %v", err)
	}
	// Imported material cannot be rotated automatically.
	if _, err := c.EnableKeyRotation(ctx, &awskms.EnableKeyRotationInput{KeyId: ck.KeyMetadata.KeyId}); apiCode(err) != "UnsupportedOperationException" {
		t.Errorf("EnableKeyRotation on an EXTERNAL key: got %v, want UnsupportedOperationException", err)
	}
}
