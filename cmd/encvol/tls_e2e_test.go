package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Plain HTTP on an address other machines reach would put data keys on the
// network in the clear: refused unless asked for, then served with a
// warning.
func TestServePlainHTTPOnlyOnLoopback(t *testing.T) {
	e := newEnv(t, "")
	p := filepath.Join(e.dir, "principals.toml")
	if err := os.WriteFile(p, []byte("[[principal]]\nname = \"alice\"\naccess_key_id = \"AKIAALICE0001\"\nsecret_access_key = \"alice-secret-0123456789abcdef\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"kms", "serve", "--listen", "0.0.0.0:0", "--store", filepath.Join(e.dir, "store"), "--principals", p}
	r := e.runBounded(15*time.Second, args...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--insecure-http") || !strings.Contains(r.stderr, "--tls-self-signed") {
		t.Fatalf("plain HTTP on 0.0.0.0: want exit %d naming the fixes, got\n%s", exitUsage, r)
	}
	// Accepted, it serves until stopped (exit -1 from the bound).
	r = e.runBounded(3*time.Second, append(args, "--insecure-http")...)
	if r.code != -1 || !strings.Contains(r.stderr, "unencrypted") {
		t.Fatalf("--insecure-http: want a running server that warns, got\n%s", r)
	}
}

// --tls-self-signed DIR makes a CA and a server certificate on first start
// and reuses them after; a client that names DIR/ca.pem as ca_file talks
// to the server over TLS. A new --tls-host gets a new server certificate
// from the same CA, so clients keep their ca_file.
func TestServeSelfSignedTLS(t *testing.T) {
	e := newGXEnv(t, "local", "")
	e.kmsName = "corp"
	e.store = filepath.Join(e.dir, "kms-store")
	e.principals = filepath.Join(e.dir, "principals.toml")
	if err := os.WriteFile(e.principals, []byte(fmt.Sprintf("[[principal]]\nname = %q\naccess_key_id = %q\nsecret_access_key = %q\n", gxAlice.name, gxAlice.id, gxAlice.secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(e.dir, "tls")
	e.addr = gxFreeAddr(t)
	e.serveArgs = []string{"--tls-self-signed", tlsDir}
	e.startKMS()
	ca := filepath.Join(tlsDir, "ca.pem")
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatalf("no ca.pem after the first start: %v", err)
	}
	for _, f := range []string{"ca-key.pem", "server-key.pem"} {
		fi, err := os.Stat(filepath.Join(tlsDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	cfg := e.writeConfig("tls.toml", fmt.Sprintf("[kms.corp]\ntype = \"aws\"\nendpoint = \"https://%s\"\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\nca_file = %q\n",
		e.addr, gxAlice.id, gxAlice.secret, ca), "")
	e.mustWith(cfg, "kms", "create-key", "--alias", "alias/tls")
	// Without the CA the certificate is not trusted.
	untrusted := e.writeConfig("untrusted.toml", fmt.Sprintf("[kms.corp]\ntype = \"aws\"\nendpoint = \"https://%s\"\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\n",
		e.addr, gxAlice.id, gxAlice.secret), "")
	if r := e.runWith(untrusted, "kms", "list-keys"); r.code == 0 {
		t.Fatalf("a client without ca_file trusted the self-signed server:\n%s", r)
	}

	serverPEM := func() []byte {
		b, err := os.ReadFile(filepath.Join(tlsDir, "server.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := serverPEM()
	e.killKMS()
	e.startKMS()
	if b, _ := os.ReadFile(ca); !bytes.Equal(b, caPEM) {
		t.Fatal("ca.pem changed on restart")
	}
	if !bytes.Equal(serverPEM(), first) {
		t.Fatal("the server certificate was issued again although nothing changed")
	}
	e.mustWith(cfg, "kms", "describe-key", "alias/tls")

	e.killKMS()
	e.serveArgs = append(e.serveArgs, "--tls-host", "kms.example.internal")
	e.startKMS()
	if b, _ := os.ReadFile(ca); !bytes.Equal(b, caPEM) {
		t.Fatal("ca.pem changed when a host was added")
	}
	blk, _ := pem.Decode(serverPEM())
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("kms.example.internal"); err != nil {
		t.Fatalf("new --tls-host not in the server certificate: %v", err)
	}
	if err := cert.VerifyHostname(mustHost(t, e.addr)); err != nil {
		t.Fatalf("listen address not in the server certificate: %v", err)
	}
	e.mustWith(cfg, "kms", "describe-key", "alias/tls")
}

func mustHost(t *testing.T, addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
