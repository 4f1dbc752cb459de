package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kmsclient"
)

// The sharing benchmark: 50 volumes under one customer key, each shared
// with its own principal through a grant constrained to the volume's
// encryption context (as `encvol share` makes it), and 50 key monitors,
// one per volume, each checking its access as a sharee's mount does: a
// Decrypt of the volume's key-check blob with its encryption context,
// marked as a key check (the signed X-Encvol-Key-Check header), over TLS
// with the server's own CA, each monitor on connections of its own. Every
// request is authorized through one grant of the key's 50.
//
// The monitors sign every request afresh with SigV4 (aws-sdk-go-v2's
// signer) and send exactly what kmsclient sends for a check, but without
// the SDK's middleware stack and kmsclient's runtime/secret mode around the
// call: a mount makes one check per key_check_interval, while here 50
// monitors make thousands a second on the two cores the server runs on,
// and the client's own work would be measured instead of the server's.

const (
	shareBenchVolumes = 50
	// shareBenchCAEnv names the CA file of the server at
	// ENCVOL_KMS_BENCH_ENDPOINT (the ca.pem of --tls-self-signed).
	shareBenchCAEnv = "ENCVOL_KMS_BENCH_CA"
)

// ShareBenchPrincipal is the i-th sharee of the sharing benchmark (i from
// 1); scripts/bench-kms.sh writes the same principals for a server it
// starts. Principal 0 owns the key.
func shareBenchPrincipal(i int) Principal {
	return Principal{Name: fmt.Sprintf("bench%02d", i), AccessKeyID: fmt.Sprintf("AKIDSHAREBENCH%06d", i),
		SecretAccessKey: fmt.Sprintf("shareBenchSecret%020d", i)}
}

// shareBench is the set-up: one key monitor per volume.
type shareBench struct {
	monitors []*monitorClient
}

// monitorClient makes one volume's key checks: a Decrypt of the key-check
// blob with the volume's encryption context, marked as a key check.
type monitorClient struct {
	url     string
	creds   aws.Credentials
	hc      *http.Client
	signer  *v4.Signer
	body    []byte
	payload string // hex SHA-256 of body
	mark    string // kms.KeyCheckHeader value
}

func newMonitorClient(url string, p Principal, roots *x509.CertPool, blob []byte, encCtx map[string]string) (*monitorClient, error) {
	body, err := json.Marshal(map[string]any{"CiphertextBlob": blob, "EncryptionContext": encCtx})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	return &monitorClient{
		url: url, creds: aws.Credentials{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey},
		hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2,
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}},
		signer: v4.NewSigner(), body: body, payload: hex.EncodeToString(sum[:]),
		mark: kms.KeyCheck{Mount: kmsclient.NewMountID()}.HeaderValue(),
	}, nil
}

// check makes one key check and fails unless the KMS admits it.
func (m *monitorClient) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.url+"/", bytes.NewReader(m.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Target", targetPrefix+"Decrypt")
	req.Header.Set(kms.KeyCheckHeader, m.mark)
	if err := m.signer.SignHTTP(ctx, m.creds, req, m.payload, signingService, testRegion, time.Now()); err != nil {
		return err
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(out, []byte(`"Plaintext"`)) {
		return fmt.Errorf("key check: HTTP %d: %s", resp.StatusCode, out)
	}
	return nil
}

func setupShareBench(b *testing.B) *shareBench {
	b.Helper()
	url, ca := os.Getenv(benchEndpointEnv), os.Getenv(shareBenchCAEnv)
	if url == "" {
		url, ca = startTLSServer(b)
	} else if ca == "" {
		b.Fatalf("%s is set: %s must name the server's CA file", benchEndpointEnv, shareBenchCAEnv)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		b.Fatalf("%s holds no certificate", ca)
	}
	ctx := context.Background()
	owner := newKMSClient(b, url, ca, shareBenchPrincipal(0))
	info, err := owner.CreateKey(ctx, kmsclient.CreateKeyInput{Description: "sharing benchmark"})
	if err != nil {
		b.Fatalf("CreateKey: %v", err)
	}
	sb := &shareBench{}
	for i := 1; i <= shareBenchVolumes; i++ {
		vol := fmt.Sprintf("vol-sharebench%02d", i)
		encCtx := map[string]string{kmsclient.VolumeContextKey: vol}
		pt, err := keywrap.NewKey(keywrap.KeyCheckPlaintext(vol))
		if err != nil {
			b.Fatal(err)
		}
		blob, _, err := owner.(kmsclient.Rewrapper).EncryptKey(ctx, info.Arn, pt, encCtx)
		pt.Close()
		if err != nil {
			b.Fatalf("key-check blob of %s: %v", vol, err)
		}
		p := shareBenchPrincipal(i)
		if _, err := owner.CreateGrant(ctx, kmsclient.GrantInput{KeyRef: info.Arn, Grantee: p.Name, Name: "encvol-share:" + vol,
			Operations:  []string{kms.OpDecrypt, kms.OpDescribeKey},
			Constraints: &kmsclient.GrantConstraints{EncryptionContextEquals: encCtx}}); err != nil {
			b.Fatalf("CreateGrant for %s: %v", vol, err)
		}
		m, err := newMonitorClient(url, p, roots, blob, encCtx)
		if err != nil {
			b.Fatal(err)
		}
		// Warm up: the TLS handshake is not measured.
		if err := m.check(ctx); err != nil {
			b.Fatalf("first check of %s by %s: %v", vol, p.Name, err)
		}
		sb.monitors = append(sb.monitors, m)
	}
	return sb
}

// newKMSClient opens kmsclient's remote backend as p, trusting ca.
func newKMSClient(b *testing.B, url, ca string, p Principal) kmsclient.Admin {
	b.Helper()
	c, err := kmsclient.NewAdmin(context.Background(), "bench", kmsclient.Config{Type: kmsclient.TypeAWS, Endpoint: url,
		Region: testRegion, AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey, CAFile: ca})
	if err != nil {
		b.Fatalf("open a client as %s: %v", p.Name, err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// startTLSServer serves a fresh store over TLS with a CA of its own (as
// --tls-self-signed makes it) to the owner and the sharees.
func startTLSServer(b *testing.B) (url, ca string) {
	b.Helper()
	dir := b.TempDir()
	store, err := kms.Open(dir+"/store", kms.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ss, err := EnsureSelfSigned(dir+"/tls", TLSHosts("127.0.0.1:0", nil))
	if err != nil {
		b.Fatal(err)
	}
	ps := make([]Principal, 0, shareBenchVolumes+1)
	for i := 0; i <= shareBenchVolumes; i++ {
		ps = append(ps, shareBenchPrincipal(i))
	}
	srv := New(store, ps, zerolog.New(&syncBuffer{}), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- srv.ListenAndServe(ctx, "127.0.0.1:0", ss.CertFile, ss.KeyFile, func(a net.Addr) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		url = "https://" + a.String()
	case err := <-done:
		b.Fatalf("server did not start: %v", err)
	}
	b.Cleanup(func() {
		cancel()
		<-done
		store.Close()
	})
	return url, ss.CAFile
}

func (sb *shareBench) run(b *testing.B, rate float64) {
	ctx := context.Background()
	b.ResetTimer()
	all, elapsed, err := runLoad(len(sb.monitors), b.N, rate, func(i int) error { return sb.monitors[i].check(ctx) })
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportLatencies(b, all, elapsed)
}

// BenchmarkShareMonitorsTLSAt2000: the 50 monitors offer 2,000 checks per
// second in all (40 each: the load of 10,000 mounts at the default 5 s
// key_check_interval), an open loop (see runLoad).
func BenchmarkShareMonitorsTLSAt2000(b *testing.B) { setupShareBench(b).run(b, 2000) }

// BenchmarkShareMonitorsTLS: the 50 monitors in a closed loop, each
// checking again as soon as its last check returned: the server's limit
// for this load (the clients share the machine).
func BenchmarkShareMonitorsTLS(b *testing.B) { setupShareBench(b).run(b, 0) }
