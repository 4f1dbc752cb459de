package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/encvol/encvol/kms"
)

// Files of a self-signed TLS directory (--tls-self-signed DIR). Clients
// name CAFile as their ca_file; the rest never leaves the server.
const (
	CAFile        = "ca.pem"
	caKeyFile     = "ca-key.pem"
	ServerCert    = "server.pem"
	serverKeyFile = "server-key.pem"
)

// Validity of what EnsureSelfSigned issues. The CA outlives many server
// certificates, so clients keep their ca_file when the server certificate
// is renewed.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 397 * 24 * time.Hour
	// renewBefore: a server certificate closer than this to its end is
	// issued again at start.
	renewBefore = 30 * 24 * time.Hour
)

// SelfSigned is a TLS setup made by EnsureSelfSigned.
type SelfSigned struct {
	CertFile, KeyFile, CAFile string
	// Issued names what this start created: "ca and server certificate",
	// "server certificate" or "" (everything reused).
	Issued string
}

// EnsureSelfSigned gives a server TLS without a PKI: on first start it
// creates dir/ca.pem (a CA of its own) and a server certificate signed by
// it for hosts; later starts reuse both, and issue a new server
// certificate from the same CA when hosts changed or the certificate is
// about to expire, so clients that trust ca.pem keep working. Private keys
// are written 0600, atomically.
func EnsureSelfSigned(dir string, hosts []string) (SelfSigned, error) {
	out := SelfSigned{CertFile: filepath.Join(dir, ServerCert), KeyFile: filepath.Join(dir, serverKeyFile), CAFile: filepath.Join(dir, CAFile)}
	// Others may read ca.pem (clients copy it); the keys are 0600.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return out, fmt.Errorf("TLS directory %s: %w", dir, err)
	}
	caCert, caKey, err := loadPair(out.CAFile, filepath.Join(dir, caKeyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if caCert, caKey, err = newCA(dir); err != nil {
			return out, err
		}
		out.Issued = "ca and server certificate"
	case err != nil:
		return out, fmt.Errorf("TLS directory %s: %w (remove the directory to start over; clients then need the new %s)", dir, err, CAFile)
	}
	cert, _, err := loadPair(out.CertFile, out.KeyFile)
	if err == nil && cert.CheckSignatureFrom(caCert) == nil && covers(cert, hosts) && time.Until(cert.NotAfter) > renewBefore {
		return out, nil
	}
	if err := issueServer(dir, caCert, caKey, hosts); err != nil {
		return out, err
	}
	if out.Issued == "" {
		out.Issued = "server certificate"
	}
	return out, nil
}

// TLSHosts are the names a self-signed server certificate covers: the
// host of the listen address (every local name and address when it is a
// wildcard), the loopback names, and extra (--tls-host).
func TLSHosts(listen string, extra []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if name, err := os.Hostname(); err == nil {
			hosts = append(hosts, name)
		}
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
	} else {
		hosts = append(hosts, host)
	}
	hosts = append(hosts, extra...)
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func newCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	name, _ := os.Hostname()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "encvol kms serve CA " + name, Organization: []string{"encvol"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := writePair(dir, CAFile, caKeyFile, tmpl, nil, key, nil)
	return cert, key, err
}

func issueServer(dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0], Organization: []string{"encvol"}},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(serverValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	_, err = writePair(dir, ServerCert, serverKeyFile, tmpl, ca, key, caKey)
	return err
}

// writePair signs tmpl (self-signed when parent is nil) and writes the
// certificate and its key; the key first, so a certificate on disk always
// has its key.
func writePair(dir, certName, keyName string, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, fmt.Errorf("create certificate %s: %w", certName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key %s: %w", keyName, err)
	}
	if err := kms.WriteFileAtomic(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", filepath.Join(dir, keyName), err)
	}
	if err := kms.WriteFileAtomic(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", filepath.Join(dir, certName), err)
	}
	return x509.ParseCertificate(der)
}

// loadPair reads a certificate and its ECDSA key; fs.ErrNotExist when
// either file is missing.
func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		for _, f := range []string{certFile, keyFile} {
			if _, serr := os.Stat(f); errors.Is(serr, fs.ErrNotExist) {
				return nil, nil, serr
			}
		}
		return nil, nil, fmt.Errorf("load %s: %w", certFile, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("load %s: the key is not an ECDSA key", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", certFile, err)
	}
	return cert, key, nil
}

// IsLoopback reports whether the listen address addr (HOST:PORT) only
// accepts connections from this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
