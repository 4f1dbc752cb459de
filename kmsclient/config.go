// Package kmsclient is the one small interface a volume needs from a KMS —
// generate a wrapped data key, unwrap it, describe the key — plus the
// administrative calls behind `encvol kms <verb>`. Two backends implement
// it with the same semantics and the same error kinds: "local" (the
// embedded key store of package kms, in process) and "aws" (the AWS KMS
// JSON API through aws-sdk-go-v2, for AWS KMS itself, `encvol kms serve`
// and other compatible servers).
//
// Plaintext data keys only ever leave this package inside *keywrap.Key
// (locked, zeroizable memory); the transient slices the backends receive
// are zeroed by keywrap.NewKey.
package kmsclient

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/encvol/encvol/kms"
)

// Backend type names accepted in Config.Type.
const (
	TypeLocal = "local"
	TypeAWS   = "aws"
)

// Config is one [kms.NAME] table of the configuration file. The toml keys
// are part of the configuration contract.
type Config struct {
	// Type is "local" (embedded key store) or "aws" (AWS KMS JSON API).
	Type string `toml:"type" json:"type"`
	// Path is the key store directory (local).
	Path string `toml:"path" json:"path,omitempty"`
	// PassphraseFile, when set, protects the local store with a passphrase
	// read from this file instead of a root key file.
	PassphraseFile string `toml:"passphrase_file" json:"passphrase_file,omitempty"`
	// Endpoint is the base URL of the KMS (aws), e.g. https://kms.example:8400.
	Endpoint string `toml:"endpoint" json:"endpoint,omitempty"`
	// Region is used for request signing and, without Endpoint, to pick
	// the AWS endpoint.
	Region string `toml:"region" json:"region,omitempty"`
	// AccessKeyID, SecretAccessKey and SessionToken are static
	// credentials; when empty the usual AWS chain (environment, shared
	// files, Profile) applies.
	AccessKeyID     string `toml:"access_key_id" json:"access_key_id,omitempty"`
	SecretAccessKey string `toml:"secret_access_key" json:"-"`
	SessionToken    string `toml:"session_token" json:"-"`
	// Profile selects a profile of the shared AWS config/credentials files.
	Profile string `toml:"profile" json:"profile,omitempty"`
	// CAFile is a PEM bundle trusted for the endpoint's TLS certificate, in
	// addition to the system roots.
	CAFile string `toml:"ca_file" json:"ca_file,omitempty"`
	// InsecureHTTP allows an http:// endpoint on another machine. Without
	// it only loopback endpoints may be plain HTTP: a mount's data key
	// crosses the network in a Decrypt response.
	InsecureHTTP bool `toml:"insecure_http" json:"insecure_http,omitempty"`
	// AuditMaxSize (local) is the size at which the store's audit.jsonl
	// is rotated, e.g. "64MiB" (default kms.DefaultAuditMaxSize).
	AuditMaxSize string `toml:"audit_max_size" json:"audit_max_size,omitempty"`
	// AuditKeep (local) is how many rotated audit files are kept (default
	// kms.DefaultAuditKeep; -1 keeps them all).
	AuditKeep int `toml:"audit_keep" json:"audit_keep,omitempty"`
	// AuditSummaryInterval (local) is how often the routine key checks of
	// a mount are written as one summary record, e.g. "1h" (default
	// kms.DefaultKeyCheckSummaryInterval).
	AuditSummaryInterval string `toml:"audit_summary_interval" json:"audit_summary_interval,omitempty"`
}

// storeOptions are the kms.Options of a local store configured by c.
func (c Config) storeOptions() (kms.Options, error) {
	opt := kms.Options{PassphraseFile: c.PassphraseFile, AuditKeep: c.AuditKeep}
	if c.AuditMaxSize != "" {
		n, err := kms.ParseByteSize(c.AuditMaxSize)
		if err != nil {
			return opt, fmt.Errorf("audit_max_size: %w", err)
		}
		if n < kms.MinAuditMaxSize {
			return opt, fmt.Errorf("audit_max_size = %q is below the minimum of %d bytes", c.AuditMaxSize, kms.MinAuditMaxSize)
		}
		opt.AuditMaxSize = n
	}
	if c.AuditKeep < -1 {
		return opt, fmt.Errorf("audit_keep = %d: want a number of files, or -1 to keep them all", c.AuditKeep)
	}
	if c.AuditSummaryInterval != "" {
		d, err := time.ParseDuration(c.AuditSummaryInterval)
		if err != nil || d <= 0 {
			return opt, fmt.Errorf("audit_summary_interval = %q is not a positive duration such as \"1h\" or \"10m\"", c.AuditSummaryInterval)
		}
		opt.KeyCheckSummaryInterval = d
	}
	return opt, nil
}

// Validate checks that the configuration is complete for its type. Every
// message names the offending key.
func (c Config) Validate() error {
	switch c.Type {
	case TypeLocal:
		if strings.TrimSpace(c.Path) == "" {
			return fmt.Errorf("type = %q needs path = the key store directory", TypeLocal)
		}
		if _, err := c.storeOptions(); err != nil {
			return err
		}
		if c.InsecureHTTP {
			return fmt.Errorf("insecure_http is only valid with type = %q, not %q", TypeAWS, TypeLocal)
		}
		for _, kv := range [][2]string{
			{"endpoint", c.Endpoint}, {"region", c.Region}, {"access_key_id", c.AccessKeyID},
			{"secret_access_key", c.SecretAccessKey}, {"session_token", c.SessionToken},
			{"profile", c.Profile}, {"ca_file", c.CAFile},
		} {
			if kv[1] != "" {
				return fmt.Errorf("%s is only valid with type = %q, not %q", kv[0], TypeAWS, TypeLocal)
			}
		}
	case TypeAWS:
		if c.Endpoint == "" && c.Region == "" {
			return fmt.Errorf("type = %q needs endpoint or region", TypeAWS)
		}
		if c.Endpoint != "" {
			u, err := url.Parse(c.Endpoint)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("endpoint %q is not an http:// or https:// URL", c.Endpoint)
			}
			if u.Scheme == "http" && !loopbackHost(u.Hostname()) && !c.InsecureHTTP {
				return fmt.Errorf("endpoint %q is plain HTTP to another machine, so data keys would cross the network in the clear: "+
					"use https:// (with ca_file for a private CA, such as the ca.pem of `encvol kms serve --tls-self-signed`), or set insecure_http = true to accept that", c.Endpoint)
			}
		}
		if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
			return fmt.Errorf("access_key_id and secret_access_key must be given together")
		}
		if c.SessionToken != "" && c.AccessKeyID == "" {
			return fmt.Errorf("session_token needs access_key_id and secret_access_key")
		}
		for _, kv := range [][2]string{{"path", c.Path}, {"passphrase_file", c.PassphraseFile}} {
			if kv[1] != "" {
				return fmt.Errorf("%s is only valid with type = %q, not %q", kv[0], TypeLocal, TypeAWS)
			}
		}
		if c.AuditMaxSize != "" || c.AuditKeep != 0 || c.AuditSummaryInterval != "" {
			return fmt.Errorf("audit_max_size, audit_keep and audit_summary_interval are only valid with type = %q: a remote KMS keeps its audit log where it runs (see `encvol kms serve --help`)", TypeLocal)
		}
	case "":
		return fmt.Errorf("type is missing: want %q or %q", TypeLocal, TypeAWS)
	default:
		return fmt.Errorf("type = %q is unknown: want %q or %q", c.Type, TypeLocal, TypeAWS)
	}
	return nil
}

// loopbackHost reports whether host (a URL's host name) is this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
