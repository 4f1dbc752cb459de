package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kms/server"
)

// samplePrincipals is the principals file shown in `kms serve --help`; a
// test loads it with the server's own loader.
const samplePrincipals = `  [[principal]]
  name = "alice"
  access_key_id = "AKIDALICE00000000001"
  secret_access_key = "q7Rx2mVb9LpT4wZc8NfH3sKd6YgJ1aEu"

  [[principal]]
  name = "backup"
  access_key_id = "AKIDBACKUP0000000001"
  secret_access_key = "Wm5tPz8Hc2Qv7Lr4Xn9Bd3Fk6Sg1Ja0Y"

  [[group]]
  name = "ops"
  members = ["alice", "backup"]
`

// newKMSServeCommand builds `encvol kms serve`, which the `encvol kms`
// parent command adds as its "serve" child.
func newKMSServeCommand(a *app) *cobra.Command {
	var (
		listen, storeDir, principalsPath string
		tlsCert, tlsKey, region          string
		tlsSelfSigned                    string
		tlsHosts                         []string
		insecureHTTP                     bool
		accountID                        string
		passphraseFile                   string
		maxBody                          int64
		auditMaxSize                     string
		auditKeep                        int
		auditSummary                     time.Duration
		rateLimit                        float64
		maxConns, maxConnsPerAddr        int
	)
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --store DIR --principals FILE [--region R --account-id N] [--tls-cert F --tls-key F | --tls-self-signed DIR] [--insecure-http]",
		Short: "Serve a key store over the AWS KMS JSON API (SigV4-authenticated)",
		Long: `Serve the key store in --store over HTTPS (--tls-cert/--tls-key, or
--tls-self-signed DIR for a CA of its own whose DIR/ca.pem clients trust) or,
on a loopback address (or with --insecure-http), plain HTTP,
speaking the AWS KMS JSON protocol, so AWS SDKs, awscli and encvol's own
"aws" KMS type can use it. Every request must be signed (SigV4) with an
access key from the principals file. A key belongs to the principal that
created it; others need a key policy statement or a grant. A principal named
"local" administers every key, as encvol's local KMS does in the same store.

Identity: key ARNs read arn:aws:kms:REGION:ACCOUNT:key/ID and principals are
arn:aws:iam::ACCOUNT:user/NAME, with --region (default "` + kms.DefaultRegion + `", requests
signed for any region accepted) and --account-id (default ` + kms.DefaultAccount + `,
the local KMS's). With --region, only requests signed for that region are
accepted, as on AWS. ARNs the store handed out under an earlier region or
account keep resolving, so volumes keep mounting after a change.

Requests: the signature must cover X-Amz-Target, Content-Type and
X-Amz-Date (AWS SDKs and awscli sign them); the key, date and signed headers
are checked before the body is read. A signed state-changing request
(CreateKey, DisableKey, grants, aliases, ...) is accepted once: a replay
inside the 5-minute clock-skew window is refused. Reads and data key
operations may repeat. Each principal may send --rate-limit requests per
second (and as many at once); the server accepts --max-conns connections,
--max-conns-per-addr from one IP address. Beyond a limit the answer is
ThrottlingException, which AWS SDKs retry with backoff.

Stops gracefully on SIGINT or SIGTERM.

Principals file (--principals), TOML, one [[principal]] table per identity:

` + samplePrincipals + `
Rules, checked at start and at every reload: at least one [[principal]];
name not empty, without control characters, ':' or '/', unique;
access_key_id 4 to 128 characters of A-Z a-z 0-9 _ . - and unique;
secret_access_key at least ` + strconv.Itoa(server.MinSecretLen) + ` bytes long (shorter ones are refused);
[[group]] names unique, members principals of the file; no other keys. The
file holds every secret: keep it mode 0600 (a file that other users can
read is refused). A client uses the pair as access_key_id/secret_access_key
in its [kms.NAME] table. A grant to group:NAME (an IAM group ARN on the
wire) admits the group's members as it is at each request.

The server watches the file and reloads it within a second of a change
(encvol kms principal / group edit it atomically), and at once on SIGHUP: a
removed principal is refused from its next request. A file that does not
load keeps the principals loaded before in force, with an error in the log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if storeDir == "" {
				return usageError("--store DIR is required: the key store directory to serve")
			}
			if principalsPath == "" {
				return usageError("--principals FILE is required: a TOML file of [[principal]] tables with name, access_key_id, secret_access_key")
			}
			if (tlsCert == "") != (tlsKey == "") {
				return usageError("--tls-cert and --tls-key go together: give both for HTTPS, or neither for plain HTTP")
			}
			if tlsSelfSigned != "" && tlsCert != "" {
				return usageError("--tls-self-signed makes its own certificate: leave out --tls-cert and --tls-key, or --tls-self-signed")
			}
			plain := tlsCert == "" && tlsSelfSigned == ""
			if plain && !server.IsLoopback(listen) {
				if !insecureHTTP {
					return usageError("--listen %s accepts connections from other machines, and without TLS the data keys would cross the network in the clear: "+
						"add --tls-self-signed DIR (clients then name DIR/%s as ca_file) or --tls-cert/--tls-key, listen on 127.0.0.1, or pass --insecure-http to accept that", listen, server.CAFile)
				}
				a.log.Warn().Str("listen", listen).Msg("serving plain HTTP on a non-loopback address (--insecure-http): data keys and credentials cross the network unencrypted")
			}
			if err := kms.CheckRegion(region); err != nil {
				return usageError("--region: %v", err)
			}
			if err := kms.CheckAccount(accountID); err != nil {
				return usageError("--account-id: %v", err)
			}
			// Without --region any signing region is accepted, as before
			// the flag named the ARNs' region too.
			signRegion := ""
			if cmd.Flags().Changed("region") {
				signRegion = region
			}
			maxSize, err := kms.ParseByteSize(auditMaxSize)
			if err != nil || maxSize < kms.MinAuditMaxSize {
				return usageError("--audit-max-size %q: want a size of at least 1KiB, such as 64MiB", auditMaxSize)
			}
			if auditKeep < -1 || auditKeep == 0 {
				return usageError("--audit-keep %d: want a number of rotated files to keep, or -1 to keep them all", auditKeep)
			}
			if auditSummary <= 0 {
				return usageError("--audit-summary-interval %s: want a positive duration such as 1h", auditSummary)
			}
			if rateLimit < 0 || maxConns < 0 || maxConnsPerAddr < 0 {
				return usageError("--rate-limit, --max-conns and --max-conns-per-addr take a number of at least 0 (0 turns the limit off)")
			}
			principals, err := server.LoadPrivatePrincipals(principalsPath)
			if err != nil {
				return usageError("%v", err)
			}
			// The server holds every key store secret in memory.
			if err := keywrap.DisableCoreDumps(); err != nil {
				a.log.Warn().Err(err).Msg("cannot disable core dumps")
			}
			if !keywrap.SecretMemory {
				a.log.Warn().Msg(keywrap.SecretOff + ": AES key schedules and other temporaries of key computations are not erased from memory; rebuild with CGO_ENABLED=0 GOEXPERIMENT=runtimesecret")
			}

			// A long-running server with a small heap: collect less often
			// (GOGC in the environment still wins).
			defer server.TuneGC()()

			store, err := kms.Open(storeDir, kms.Options{PassphraseFile: passphraseFile, Region: region, Account: accountID,
				AuditMaxSize: maxSize, AuditKeep: auditKeep, KeyCheckSummaryInterval: auditSummary})
			if err != nil {
				return fmt.Errorf("open key store %s: %w", storeDir, err)
			}
			defer store.Close()

			if tlsSelfSigned != "" {
				ss, err := server.EnsureSelfSigned(tlsSelfSigned, server.TLSHosts(listen, tlsHosts))
				if err != nil {
					return err
				}
				tlsCert, tlsKey = ss.CertFile, ss.KeyFile
				ev := a.log.Info().Str("ca_file", ss.CAFile)
				if ss.Issued != "" {
					ev = ev.Str("issued", ss.Issued)
				}
				ev.Msg("self-signed TLS: clients name this ca_file")
			}
			srv := server.New(store, principals.Principal, a.log, server.Options{Region: signRegion, MaxBody: maxBody,
				RateLimit: offIfZero(rateLimit), MaxConns: offIfZero(maxConns), MaxConnsPerAddr: offIfZero(maxConnsPerAddr)})
			srv.SetPrincipals(principals)
			// The principals file is edited while the server runs (`encvol
			// kms principal ...`, or by hand followed by SIGHUP).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			watchCtx, stopWatch := context.WithCancel(cmd.Context())
			defer stopWatch()
			go srv.WatchPrincipals(watchCtx, principalsPath, server.DefaultWatchInterval, hup)
			scheme := "http"
			if tlsCert != "" {
				scheme = "https"
			}
			err = srv.ListenAndServe(cmd.Context(), listen, tlsCert, tlsKey, func(addr net.Addr) {
				a.log.Info().Str("op", "serve").Str("addr", addr.String()).Str("endpoint", scheme+"://"+addr.String()).
					Str("store", storeDir).Str("region", region).Str("account_id", accountID).
					Int("principals", len(principals.Principal)).Int("groups", len(principals.Group)).Msg("kms server listening")
			})
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					return fmt.Errorf("%w: another process is listening on %s; stop it or pick another --listen address", err, listen)
				}
				return err
			}
			a.log.Info().Str("op", "serve").Msg("kms server stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8400", "address to listen on (HOST:PORT; port 0 picks a free port)")
	f.StringVar(&storeDir, "store", "", "key store directory (created on first use)")
	f.StringVar(&principalsPath, "principals", "", "TOML file of [[principal]] tables: name, access_key_id, secret_access_key")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate file; serves HTTPS together with --tls-key")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	f.StringVar(&tlsSelfSigned, "tls-self-signed", "", "serve HTTPS with a CA and certificate of its own kept in this directory (made on first start, reused after); clients name DIR/"+server.CAFile+" as ca_file")
	f.StringArrayVar(&tlsHosts, "tls-host", nil, "another name or address the self-signed certificate covers (repeatable; the --listen host and loopback are always in)")
	f.BoolVar(&insecureHTTP, "insecure-http", false, "allow plain HTTP on an address other machines can reach (logs a warning)")
	f.StringVar(&region, "region", kms.DefaultRegion, "region of the key ARNs; when given, only requests signed for it are accepted (default: any signing region)")
	f.StringVar(&accountID, "account-id", kms.DefaultAccount, "12-digit account ID of the key and principal ARNs")
	f.StringVar(&passphraseFile, "passphrase-file", "", "seal the key store under a passphrase read from this file instead of a root key file")
	f.Int64Var(&maxBody, "max-body", server.DefaultMaxBody, "largest accepted request body in bytes")
	f.Float64Var(&rateLimit, "rate-limit", server.DefaultRateLimit, "requests per second each principal may send on average, and at once (ThrottlingException beyond; 0: no limit)")
	f.IntVar(&maxConns, "max-conns", server.DefaultMaxConns, "open connections the server accepts (ThrottlingException beyond; 0: no limit)")
	f.IntVar(&maxConnsPerAddr, "max-conns-per-addr", server.DefaultMaxConnsPerAddr, "open connections from one remote IP address (ThrottlingException beyond; 0: no limit)")
	f.StringVar(&auditMaxSize, "audit-max-size", fmt.Sprintf("%dMiB", kms.DefaultAuditMaxSize>>20), "rotate the store's audit.jsonl to audit.jsonl.1 at this size")
	f.IntVar(&auditKeep, "audit-keep", kms.DefaultAuditKeep, "rotated audit files to keep (-1: all)")
	f.DurationVar(&auditSummary, "audit-summary-interval", kms.DefaultKeyCheckSummaryInterval, "write a mount's routine key checks as one audit record per this interval")
	return cmd
}

// offIfZero maps a limit flag, where 0 means "no limit", to server.Options,
// where 0 means the default and a negative value no limit.
func offIfZero[T int | float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
