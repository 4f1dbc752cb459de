package kmsclient_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kms/server"
	"github.com/encvol/encvol/kmsclient"
)

// backend is one way of reaching a KMS that the contract suite runs against.
type backend struct {
	name string
	// open returns a fresh, empty KMS seen through an Admin.
	open func(t testing.TB) kmsclient.Admin
	// remote backends cannot read the audit log.
	remote bool
}

func backends() []backend {
	return []backend{
		{name: "local", open: openLocal},
		{name: "local-passphrase", open: openLocalPassphrase},
		{name: "aws-to-encvol-server", open: func(t testing.TB) kmsclient.Admin { return startServer(t, "").admin(t, "alice") }, remote: true},
	}
}

func openLocal(t testing.TB) kmsclient.Admin {
	t.Helper()
	ctx := context.Background()
	a, err := kmsclient.NewAdmin(ctx, "local", kmsclient.Config{Type: "local", Path: filepath.Join(t.TempDir(), "kms")})
	if err != nil {
		t.Fatalf("open local KMS: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// openLocalPassphrase is the local backend with key material sealed under
// a passphrase instead of a root key file; it is reopened once so the
// suite runs on a store that was read back from disk.
func openLocalPassphrase(t testing.TB) kmsclient.Admin {
	t.Helper()
	dir := t.TempDir()
	pass := filepath.Join(dir, "passphrase")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := kmsclient.Config{Type: "local", Path: filepath.Join(dir, "kms"), PassphraseFile: pass}
	ctx := context.Background()
	first, err := kmsclient.NewAdmin(ctx, "local", cfg)
	if err != nil {
		t.Fatalf("open passphrase store: %v", err)
	}
	k := mustCreateKey(t, first, "")
	blob := roundTrip(t, first, k.KeyID, volCtx("vol-reopen"))
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := kmsclient.NewAdmin(ctx, "local", cfg)
	if err != nil {
		t.Fatalf("reopen passphrase store: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	dk, err := a.Decrypt(ctx, k.KeyID, blob, volCtx("vol-reopen"))
	if err != nil {
		t.Fatalf("Decrypt after reopening the passphrase store: %v", err)
	}
	dk.Close()
	return a
}

// testServer is `encvol kms serve` in process on a loopback listener.
type testServer struct {
	endpoint string
	caFile   string
	secrets  map[string][2]string // principal -> access key id, secret
	storeDir string               // the store it serves, for reading its audit log
}

var testPrincipals = []server.Principal{
	{Name: "alice", AccessKeyID: "AKIAALICE0000000001", SecretAccessKey: "alice-secret-0123456789"},
	{Name: "bob", AccessKeyID: "AKIABOB00000000000002", SecretAccessKey: "bob-secret-0123456789"},
}

// startServer runs the KMS server on 127.0.0.1 with a fresh store; with a
// non-empty tlsDir it serves TLS with a certificate made for the test.
func startServer(t testing.TB, tlsDir string) *testServer {
	t.Helper()
	storeDir := filepath.Join(t.TempDir(), "store")
	store, err := kms.Open(storeDir, kms.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	srv := server.New(store, testPrincipals, zerolog.Nop(), server.Options{})
	ts := &testServer{secrets: map[string][2]string{}, storeDir: storeDir}
	for _, p := range testPrincipals {
		ts.secrets[p.Name] = [2]string{p.AccessKeyID, p.SecretAccessKey}
	}
	var certFile, keyFile string
	scheme := "http"
	if tlsDir != "" {
		certFile, keyFile = writeTestCert(t, tlsDir)
		ts.caFile = certFile
		scheme = "https"
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- srv.ListenAndServe(ctx, "127.0.0.1:0", certFile, keyFile, func(a net.Addr) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		ts.endpoint = scheme + "://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("KMS server did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("KMS server did not start within 10s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("KMS server: %v", err)
		}
		if err := store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return ts
}

func (ts *testServer) config(principal string) kmsclient.Config {
	s := ts.secrets[principal]
	return kmsclient.Config{Type: "aws", Endpoint: ts.endpoint, Region: "us-east-1",
		AccessKeyID: s[0], SecretAccessKey: s[1], CAFile: ts.caFile}
}

func (ts *testServer) admin(t testing.TB, principal string) kmsclient.Admin {
	t.Helper()
	a, err := kmsclient.NewAdmin(context.Background(), "corp", ts.config(principal))
	if err != nil {
		t.Fatalf("open aws KMS client for %s: %v", principal, err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func writeTestCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "encvol test KMS"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func volCtx(id string) map[string]string { return map[string]string{kmsclient.VolumeContextKey: id} }

func mustCreateKey(t testing.TB, a kmsclient.Admin, origin string) kmsclient.KeyInfo {
	t.Helper()
	k, err := a.CreateKey(context.Background(), kmsclient.CreateKeyInput{Description: "contract test", Origin: origin})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return k
}

// roundTrip wraps a fresh DK under key and unwraps it, failing the test on
// any error or mismatch; it returns the blob.
func roundTrip(t testing.TB, c kmsclient.Client, key string, ec map[string]string) []byte {
	t.Helper()
	ctx := context.Background()
	dk, blob, _, err := c.GenerateDataKey(ctx, key, ec)
	if err != nil {
		t.Fatalf("GenerateDataKey(%s): %v", key, err)
	}
	defer dk.Close()
	got, err := c.Decrypt(ctx, key, blob, ec)
	if err != nil {
		t.Fatalf("Decrypt(%s): %v", key, err)
	}
	defer got.Close()
	if !bytes.Equal(dk.Bytes(), got.Bytes()) {
		t.Fatal("Decrypt returned a different data key than GenerateDataKey")
	}
	return blob
}

func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: got error %v, want kind %q", what, err, kind)
	}
	var ke *kmsclient.Error
	if !errors.As(err, &ke) {
		t.Fatalf("%s: error %T is not a *kmsclient.Error", what, err)
	}
}

func wantState(t *testing.T, a kmsclient.Admin, key, state string) kmsclient.KeyInfo {
	t.Helper()
	info, err := a.DescribeKey(context.Background(), key)
	if err != nil {
		t.Fatalf("DescribeKey(%s): %v", key, err)
	}
	if info.State != state {
		t.Fatalf("DescribeKey(%s).State = %q, want %q", key, info.State, state)
	}
	return info
}

// TestContract runs the same cases against every backend: the semantics
// a volume relies on must not depend on where the KMS lives.
func TestContract(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			a := b.open(t)
			ctx := context.Background()

			t.Run("RoundTrip", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				if k.State != "Enabled" || !k.Enabled || k.Arn == "" || k.KeyID == "" {
					t.Fatalf("new key = %+v, want enabled with ID and ARN", k)
				}
				ec := volCtx("vol-00000000000000000000000000000001")
				dk, blob, arn, err := a.GenerateDataKey(ctx, k.KeyID, ec)
				if err != nil {
					t.Fatalf("GenerateDataKey: %v", err)
				}
				defer dk.Close()
				if dk.Len() != kmsclient.DataKeySize {
					t.Fatalf("data key is %d bytes, want %d", dk.Len(), kmsclient.DataKeySize)
				}
				if arn != k.Arn {
					t.Fatalf("GenerateDataKey key ARN = %q, want %q", arn, k.Arn)
				}
				if bytes.Contains(blob, dk.Bytes()) {
					t.Fatal("the blob contains the plaintext data key")
				}
				// The blob names its key: Decrypt without a key reference works.
				got, err := a.Decrypt(ctx, "", blob, ec)
				if err != nil {
					t.Fatalf("Decrypt without key ref: %v", err)
				}
				defer got.Close()
				if !bytes.Equal(got.Bytes(), dk.Bytes()) {
					t.Fatal("Decrypt returned a different data key")
				}
				// By ARN too.
				roundTrip(t, a, k.Arn, ec)
				// Two data keys differ.
				dk2, _, _, err := a.GenerateDataKey(ctx, k.KeyID, ec)
				if err != nil {
					t.Fatal(err)
				}
				defer dk2.Close()
				if bytes.Equal(dk2.Bytes(), dk.Bytes()) {
					t.Fatal("two GenerateDataKey calls returned the same data key")
				}
			})

			t.Run("ContextMismatch", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				other := mustCreateKey(t, a, "")
				ec := volCtx("vol-aaaa")
				_, blob, _, err := a.GenerateDataKey(ctx, k.KeyID, ec)
				if err != nil {
					t.Fatal(err)
				}
				_, err = a.Decrypt(ctx, k.KeyID, blob, volCtx("vol-bbbb"))
				wantKind(t, "Decrypt with another volume's context", err, kmsclient.ErrInvalidCiphertext)
				_, err = a.Decrypt(ctx, k.KeyID, blob, nil)
				wantKind(t, "Decrypt without context", err, kmsclient.ErrInvalidCiphertext)
				_, err = a.Decrypt(ctx, k.KeyID, blob, map[string]string{kmsclient.VolumeContextKey: "vol-aaaa", "extra": "x"})
				wantKind(t, "Decrypt with a superset context", err, kmsclient.ErrInvalidCiphertext)
				_, err = a.Decrypt(ctx, other.KeyID, blob, ec)
				wantKind(t, "Decrypt naming another key", err, kmsclient.ErrInvalidCiphertext)
				bad := bytes.Clone(blob)
				bad[len(bad)-1] ^= 1
				_, err = a.Decrypt(ctx, k.KeyID, bad, ec)
				wantKind(t, "Decrypt of a tampered blob", err, kmsclient.ErrInvalidCiphertext)
			})

			t.Run("DisableEnable", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				ec := volCtx("vol-disable")
				blob := roundTrip(t, a, k.KeyID, ec)
				if err := a.DisableKey(ctx, k.KeyID); err != nil {
					t.Fatalf("DisableKey: %v", err)
				}
				info := wantState(t, a, k.KeyID, "Disabled")
				if info.Enabled {
					t.Fatal("disabled key reports Enabled = true")
				}
				_, err := a.Decrypt(ctx, k.KeyID, blob, ec)
				wantKind(t, "Decrypt under a disabled key", err, kmsclient.ErrDisabled)
				if !strings.Contains(err.Error(), k.KeyID) {
					t.Errorf("error %q does not name the key %s", err, k.KeyID)
				}
				_, err = a.Decrypt(ctx, "", blob, ec)
				wantKind(t, "Decrypt (no key ref) under a disabled key", err, kmsclient.ErrDisabled)
				_, _, _, err = a.GenerateDataKey(ctx, k.KeyID, ec)
				wantKind(t, "GenerateDataKey under a disabled key", err, kmsclient.ErrDisabled)
				if err := a.EnableKey(ctx, k.KeyID); err != nil {
					t.Fatalf("EnableKey: %v", err)
				}
				wantState(t, a, k.KeyID, "Enabled")
				got, err := a.Decrypt(ctx, k.KeyID, blob, ec)
				if err != nil {
					t.Fatalf("Decrypt after re-enable: %v", err)
				}
				got.Close()
			})

			t.Run("PendingDeletion", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				ec := volCtx("vol-pd")
				blob := roundTrip(t, a, k.KeyID, ec)
				_, err := a.ScheduleKeyDeletion(ctx, k.KeyID, 3)
				wantKind(t, "ScheduleKeyDeletion with a 3-day window", err, kmsclient.ErrInvalidRequest)
				when, err := a.ScheduleKeyDeletion(ctx, k.KeyID, 7)
				if err != nil {
					t.Fatalf("ScheduleKeyDeletion: %v", err)
				}
				if d := time.Until(when); d < 6*24*time.Hour || d > 8*24*time.Hour {
					t.Fatalf("deletion date %v is not about 7 days away", when)
				}
				info := wantState(t, a, k.KeyID, "PendingDeletion")
				if info.DeletionDate == nil {
					t.Fatal("PendingDeletion key has no DeletionDate")
				}
				_, err = a.Decrypt(ctx, k.KeyID, blob, ec)
				wantKind(t, "Decrypt under a key pending deletion", err, kmsclient.ErrPendingDeletion)
				_, _, _, err = a.GenerateDataKey(ctx, k.KeyID, ec)
				wantKind(t, "GenerateDataKey under a key pending deletion", err, kmsclient.ErrPendingDeletion)
				if err := a.CancelKeyDeletion(ctx, k.KeyID); err != nil {
					t.Fatalf("CancelKeyDeletion: %v", err)
				}
				wantState(t, a, k.KeyID, "Disabled")
				err = a.CancelKeyDeletion(ctx, k.KeyID)
				wantKind(t, "CancelKeyDeletion of a key not pending deletion", err, kmsclient.ErrInvalidState)
				if err := a.EnableKey(ctx, k.KeyID); err != nil {
					t.Fatalf("EnableKey: %v", err)
				}
				roundTrip(t, a, k.KeyID, ec)
			})

			t.Run("UnknownKey", func(t *testing.T) {
				for _, ref := range []string{"11111111-2222-3333-4444-555555555555", "alias/no-such-alias"} {
					_, err := a.DescribeKey(ctx, ref)
					wantKind(t, "DescribeKey "+ref, err, kmsclient.ErrNotFound)
					_, _, _, err = a.GenerateDataKey(ctx, ref, volCtx("vol-x"))
					wantKind(t, "GenerateDataKey "+ref, err, kmsclient.ErrNotFound)
					err = a.DisableKey(ctx, ref)
					wantKind(t, "DisableKey "+ref, err, kmsclient.ErrNotFound)
				}
			})

			t.Run("Rotation", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				ec := volCtx("vol-rot")
				old := roundTrip(t, a, k.KeyID, ec)
				for i := 0; i < 2; i++ {
					if err := a.RotateKey(ctx, k.KeyID); err != nil {
						t.Fatalf("RotateKey #%d: %v", i+1, err)
					}
				}
				got, err := a.Decrypt(ctx, k.KeyID, old, ec)
				if err != nil {
					t.Fatalf("Decrypt of a pre-rotation blob: %v", err)
				}
				got.Close()
				_, err = a.Decrypt(ctx, k.KeyID, old, volCtx("vol-other"))
				wantKind(t, "Decrypt of a pre-rotation blob with a wrong context", err, kmsclient.ErrInvalidCiphertext)
				newBlob := roundTrip(t, a, k.KeyID, ec)
				if bytes.Equal(newBlob, old) {
					t.Fatal("post-rotation blob equals pre-rotation blob")
				}
			})

			t.Run("ImportedKey", func(t *testing.T) {
				k := mustCreateKey(t, a, kmsclient.OriginExternal)
				if k.State != "PendingImport" || k.Origin != kmsclient.OriginExternal {
					t.Fatalf("external key = state %q origin %q, want PendingImport EXTERNAL", k.State, k.Origin)
				}
				_, _, _, err := a.GenerateDataKey(ctx, k.KeyID, volCtx("vol-imp"))
				wantKind(t, "GenerateDataKey under a key pending import", err, kmsclient.ErrPendingImport)
				err = kmsclient.ImportRawKeyMaterial(ctx, a, k.KeyID, make([]byte, 16))
				wantKind(t, "import of 16-byte material", err, kmsclient.ErrInvalidRequest)
				material := make([]byte, 32)
				if _, err := rand.Read(material); err != nil {
					t.Fatal(err)
				}
				if err := kmsclient.ImportRawKeyMaterial(ctx, a, k.KeyID, material); err != nil {
					t.Fatalf("ImportRawKeyMaterial: %v", err)
				}
				wantState(t, a, k.KeyID, "Enabled")
				roundTrip(t, a, k.KeyID, volCtx("vol-imp"))
				err = a.RotateKey(ctx, k.KeyID)
				if err == nil {
					t.Fatal("on-demand rotation of imported material succeeded")
				}
			})

			t.Run("Aliases", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				alias := "alias/contract-" + b.name
				if err := a.CreateAlias(ctx, alias, k.KeyID); err != nil {
					t.Fatalf("CreateAlias: %v", err)
				}
				info, err := a.DescribeKey(ctx, alias)
				if err != nil {
					t.Fatalf("DescribeKey(%s): %v", alias, err)
				}
				if info.KeyID != k.KeyID {
					t.Fatalf("alias resolves to %s, want %s", info.KeyID, k.KeyID)
				}
				roundTrip(t, a, alias, volCtx("vol-alias"))
				list, err := a.ListAliases(ctx, k.KeyID)
				if err != nil {
					t.Fatalf("ListAliases: %v", err)
				}
				if len(list) != 1 || list[0].Name != alias {
					t.Fatalf("ListAliases(%s) = %+v, want just %s", k.KeyID, list, alias)
				}
				err = a.CreateAlias(ctx, "not-an-alias", k.KeyID)
				wantKind(t, "CreateAlias without alias/ prefix", err, kmsclient.ErrInvalidRequest)
			})

			t.Run("CreateKeyWithAlias", func(t *testing.T) {
				alias := "alias/with-key-" + b.name
				k, err := a.CreateKey(ctx, kmsclient.CreateKeyInput{Alias: alias})
				if err != nil {
					t.Fatalf("CreateKey with alias: %v", err)
				}
				if info, err := a.DescribeKey(ctx, alias); err != nil || info.KeyID != k.KeyID {
					t.Fatalf("alias %s resolves to %+v, %v; want key %s", alias, info, err, k.KeyID)
				}
				usable := func() int {
					keys, err := a.ListKeys(ctx)
					if err != nil {
						t.Fatalf("ListKeys: %v", err)
					}
					n := 0
					for _, x := range keys {
						if x.State != "PendingDeletion" {
							n++
						}
					}
					return n
				}
				before := usable()
				// A taken alias is refused before anything is created,
				// naming the key that holds it.
				_, err = a.CreateKey(ctx, kmsclient.CreateKeyInput{Alias: alias})
				wantKind(t, "CreateKey with a taken alias", err, kmsclient.ErrAlreadyExists)
				var taken *kmsclient.AliasTakenError
				if !errors.As(err, &taken) || taken.TargetKeyID != k.KeyID {
					t.Fatalf("CreateKey with a taken alias: %v does not name key %s", err, k.KeyID)
				}
				// An alias the KMS refuses leaves no usable key behind.
				_, err = a.CreateKey(ctx, kmsclient.CreateKeyInput{Alias: "alias/aws/reserved-" + b.name})
				wantKind(t, "CreateKey with a reserved alias", err, kmsclient.ErrInvalidRequest)
				if after := usable(); after != before {
					t.Fatalf("failed CreateKey calls left %d usable key(s) behind", after-before)
				}
			})

			t.Run("ListKeys", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				keys, err := a.ListKeys(ctx)
				if err != nil {
					t.Fatalf("ListKeys: %v", err)
				}
				found := false
				for _, x := range keys {
					if x.KeyID == k.KeyID {
						found = x.State == "Enabled" && x.Arn == k.Arn
					}
				}
				if !found {
					t.Fatalf("ListKeys does not list %s as Enabled: %+v", k.KeyID, keys)
				}
			})

			t.Run("Grants", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				id, err := a.CreateGrant(ctx, kmsclient.GrantInput{KeyRef: k.KeyID, Grantee: "bob", Operations: []string{"Decrypt", "DescribeKey"}})
				if err != nil {
					t.Fatalf("CreateGrant: %v", err)
				}
				grants, err := a.ListGrants(ctx, k.KeyID)
				if err != nil {
					t.Fatalf("ListGrants: %v", err)
				}
				if len(grants) != 1 || grants[0].GrantID != id || grants[0].Grantee != "arn:aws:iam::000000000000:user/bob" || len(grants[0].Operations) != 2 {
					t.Fatalf("ListGrants = %+v, want the one grant %s to arn:aws:iam::000000000000:user/bob", grants, id)
				}
				if err := a.RevokeGrant(ctx, k.KeyID, id); err != nil {
					t.Fatalf("RevokeGrant: %v", err)
				}
				if grants, err = a.ListGrants(ctx, k.KeyID); err != nil || len(grants) != 0 {
					t.Fatalf("ListGrants after revoke = %+v, %v; want none", grants, err)
				}
				err = a.RevokeGrant(ctx, k.KeyID, id)
				wantKind(t, "RevokeGrant of a revoked grant", err, kmsclient.ErrNotFound)
			})

			t.Run("Audit", func(t *testing.T) {
				k := mustCreateKey(t, a, "")
				roundTrip(t, a, k.KeyID, volCtx("vol-audit-1"))
				roundTrip(t, a, k.KeyID, volCtx("vol-audit-2"))
				recs, err := a.Audit(ctx, kmsclient.AuditFilter{KeyRef: k.KeyID})
				if b.remote {
					wantKind(t, "Audit on a remote KMS", err, kmsclient.ErrUnsupported)
					return
				}
				if err != nil {
					t.Fatalf("Audit: %v", err)
				}
				uses := kmsclient.VolumesUsingKey(recs, time.Time{})
				if len(uses) != 2 {
					t.Fatalf("VolumesUsingKey = %+v, want vol-audit-1 and vol-audit-2", uses)
				}
				for _, u := range uses {
					if u.Uses != 2 || u.Principal != kms.LocalPrincipal {
						t.Fatalf("volume use %+v, want 2 uses by %s", u, kms.LocalPrincipal)
					}
				}
			})

			t.Run("DefaultKey", func(t *testing.T) {
				arn, err := a.DefaultKey(ctx)
				if b.remote {
					// The remote server has no alias/encvol/default until someone creates it.
					wantKind(t, "DefaultKey on a fresh remote KMS", err, kmsclient.ErrNotFound)
					if !strings.Contains(err.Error(), "--key") || !strings.Contains(err.Error(), kmsclient.DefaultKeyAlias) {
						t.Fatalf("DefaultKey error %q does not say how to fix it", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("DefaultKey: %v", err)
				}
				again, err := a.DefaultKey(ctx)
				if err != nil || again != arn {
					t.Fatalf("second DefaultKey = %q, %v; want %q", again, err, arn)
				}
				info, err := a.DescribeKey(ctx, kmsclient.DefaultKeyAlias)
				if err != nil || info.Arn != arn || info.KeyManager != "AWS" {
					t.Fatalf("DescribeKey(%s) = %+v, %v; want service key %s", kmsclient.DefaultKeyAlias, info, err, arn)
				}
				roundTrip(t, a, arn, volCtx("vol-default"))
				err = a.DisableKey(ctx, arn)
				if err == nil {
					t.Fatal("disabling the service key succeeded")
				}
			})
		})
	}
}

// TestAWSGrantRevocation: a second principal needs a grant, and loses
// access the moment it is revoked.
func TestAWSGrantRevocation(t *testing.T) {
	ts := startServer(t, "")
	alice, bob := ts.admin(t, "alice"), ts.admin(t, "bob")
	ctx := context.Background()
	k := mustCreateKey(t, alice, "")
	ec := volCtx("vol-shared")
	_, blob, _, err := alice.GenerateDataKey(ctx, k.KeyID, ec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.Decrypt(ctx, k.KeyID, blob, ec)
	wantKind(t, "bob's Decrypt without a grant", err, kmsclient.ErrAccessDenied)
	_, err = bob.DescribeKey(ctx, k.KeyID)
	wantKind(t, "bob's DescribeKey without a grant", err, kmsclient.ErrAccessDenied)

	id, err := alice.CreateGrant(ctx, kmsclient.GrantInput{KeyRef: k.KeyID, Grantee: "bob", Operations: []string{"Decrypt", "DescribeKey"}})
	if err != nil {
		t.Fatalf("CreateGrant: %v", err)
	}
	got, err := bob.Decrypt(ctx, k.KeyID, blob, ec)
	if err != nil {
		t.Fatalf("bob's Decrypt with a grant: %v", err)
	}
	got.Close()
	if _, err := bob.DescribeKey(ctx, k.Arn); err != nil {
		t.Fatalf("bob's DescribeKey with a grant: %v", err)
	}
	_, _, _, err = bob.GenerateDataKey(ctx, k.Arn, ec)
	wantKind(t, "bob's GenerateDataKey (not granted)", err, kmsclient.ErrAccessDenied)
	err = bob.DisableKey(ctx, k.Arn)
	wantKind(t, "bob's DisableKey", err, kmsclient.ErrAccessDenied)

	if err := alice.RevokeGrant(ctx, k.KeyID, id); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	_, err = bob.Decrypt(ctx, k.KeyID, blob, ec)
	wantKind(t, "bob's Decrypt after revoke", err, kmsclient.ErrAccessDenied)
}

// TestAWSBadCredentials: a wrong secret is access denied, not "unreachable".
func TestAWSBadCredentials(t *testing.T) {
	ts := startServer(t, "")
	cfg := ts.config("alice")
	cfg.SecretAccessKey = "wrong-secret"
	a, err := kmsclient.NewAdmin(context.Background(), "corp", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = a.ListKeys(context.Background())
	wantKind(t, "ListKeys with a wrong secret", err, kmsclient.ErrAccessDenied)
	cfg = ts.config("alice")
	cfg.AccessKeyID = "AKIANOBODY0000000000"
	b, err := kmsclient.NewAdmin(context.Background(), "corp", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.DescribeKey(context.Background(), "alias/x")
	wantKind(t, "DescribeKey with an unknown access key", err, kmsclient.ErrAccessDenied)
}

// TestAWSUnreachable: nothing listening, or a peer that never answers,
// must be reported as ErrUnreachable quickly, never as a key state.
func TestAWSUnreachable(t *testing.T) {
	ctx := context.Background()
	// A port that was just free: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	a, err := kmsclient.NewAdmin(ctx, "corp", kmsclient.Config{Type: "aws", Endpoint: "http://" + closedAddr,
		Region: "us-east-1", AccessKeyID: "AKIAX", SecretAccessKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	start := time.Now()
	_, err = a.Decrypt(ctx, "alias/x", []byte("blob"), volCtx("vol-x"))
	wantKind(t, "Decrypt against a closed port", err, kmsclient.ErrUnreachable)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("unreachable KMS took %v to report, want < 3s", d)
	}
	if !strings.Contains(err.Error(), closedAddr) {
		t.Errorf("error %q does not name the endpoint", err)
	}

	// A peer that accepts and never answers: the caller's deadline wins.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	s, err := kmsclient.NewAdmin(ctx, "corp", kmsclient.Config{Type: "aws", Endpoint: "http://" + silent.Addr().String(),
		Region: "us-east-1", AccessKeyID: "AKIAX", SecretAccessKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = s.DescribeKey(cctx, "alias/x")
	wantKind(t, "DescribeKey against a silent peer", err, kmsclient.ErrUnreachable)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("silent KMS took %v to report with a 300ms deadline", d)
	}
}

// TestAWSTLS: TLS to the server works with ca_file, and without it the
// failure says the certificate is not trusted.
func TestAWSTLS(t *testing.T) {
	ts := startServer(t, t.TempDir())
	a := ts.admin(t, "alice")
	k := mustCreateKey(t, a, "")
	roundTrip(t, a, k.KeyID, volCtx("vol-tls"))

	cfg := ts.config("alice")
	cfg.CAFile = ""
	b, err := kmsclient.NewAdmin(context.Background(), "corp", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.DescribeKey(context.Background(), k.KeyID)
	wantKind(t, "DescribeKey without the CA", err, kmsclient.ErrUnreachable)
	if !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("TLS error %q does not point at ca_file", err)
	}
}

// unwrapper wraps one data key under a fresh key of be and returns a call
// that unwraps it again, as a mount does at unlock and on key checks.
func unwrapper(b *testing.B, be backend) func(ctx context.Context) error {
	a := be.open(b)
	k := mustCreateKey(b, a, "")
	ec := volCtx("vol-bench")
	blob := roundTrip(b, a, k.KeyID, ec)
	return func(ctx context.Context) error {
		dk, err := a.Decrypt(ctx, k.KeyID, blob, ec)
		if err != nil {
			return err
		}
		dk.Close()
		return nil
	}
}

// BenchmarkDecrypt measures one data-key unwrap per operation through each
// backend (the aws one over loopback HTTP with SigV4), 16 goroutines.
func BenchmarkDecrypt(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			unwrap := unwrapper(b, be)
			ctx := context.Background()
			b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := unwrap(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decrypts/s")
		})
	}
}

// TestLocalSharedStore: a mount keeps its local client open while the CLI
// disables the key through another one; the mount's next call must see it.
func TestLocalSharedStore(t *testing.T) {
	ctx := context.Background()
	cfg := kmsclient.Config{Type: "local", Path: filepath.Join(t.TempDir(), "kms")}
	mount, err := kmsclient.NewAdmin(ctx, "local", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mount.Close()
	k := mustCreateKey(t, mount, "")
	ec := volCtx("vol-shared-store")
	blob := roundTrip(t, mount, k.KeyID, ec)

	cli, err := kmsclient.NewAdmin(ctx, "local", cfg)
	if err != nil {
		t.Fatalf("second client on the same store: %v", err)
	}
	if err := cli.DisableKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = mount.Decrypt(ctx, k.KeyID, blob, ec)
	wantKind(t, "Decrypt after another client disabled the key", err, kmsclient.ErrDisabled)
}

// BenchmarkDecryptSerial is the latency of one unwrap, one caller at a time
// (what a mount pays at unlock and on every key check).
func BenchmarkDecryptSerial(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			unwrap := unwrapper(b, be)
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if err := unwrap(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
