package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

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
`

// newKMSServeCommand builds `encvol kms serve`, which the `encvol kms`
// parent command adds as its "serve" child.
func newKMSServeCommand(a *app) *cobra.Command {
	var (
		listen, storeDir, principalsPath string
		tlsCert, tlsKey, region          string
		accountID                        string
		passphraseFile                   string
		maxBody                          int64
		auditMaxSize                     string
		auditKeep                        int
		auditSummary                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --store DIR --principals FILE [--region R --account-id N] [--tls-cert F --tls-key F]",
		Short: "Serve a key store over the AWS KMS JSON API (SigV4-authenticated)",
		Long: `Serve the key store in --store over HTTP (HTTPS with --tls-cert/--tls-key),
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

Stops gracefully on SIGINT or SIGTERM.

Principals file (--principals), TOML, one [[principal]] table per identity:

` + samplePrincipals + `
Rules, checked at start: at least one [[principal]]; name not empty, without
control characters, unique; access_key_id 4 to 128 characters of
A-Z a-z 0-9 _ . - and unique; secret_access_key at least ` + strconv.Itoa(server.MinSecretLen) + ` bytes
long (shorter ones are refused); no other keys. The file holds every secret:
keep it mode 0600 (the server warns otherwise). A client uses the pair as
access_key_id/secret_access_key in its [kms.NAME] table.`,
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
			principals, err := server.LoadPrincipals(principalsPath)
			if err != nil {
				return usageError("%v", err)
			}
			if bad, mode, err := server.InsecurePermissions(principalsPath); err != nil {
				return usageError("%v", err)
			} else if bad {
				a.log.Warn().Str("path", principalsPath).Str("mode", fmt.Sprintf("%04o", mode)).
					Msg("principals file is accessible to other users; it holds secret access keys: chmod 600 it")
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

			srv := server.New(store, principals, a.log, server.Options{Region: signRegion, MaxBody: maxBody})
			scheme := "http"
			if tlsCert != "" {
				scheme = "https"
			}
			err = srv.ListenAndServe(cmd.Context(), listen, tlsCert, tlsKey, func(addr net.Addr) {
				a.log.Info().Str("op", "serve").Str("addr", addr.String()).Str("endpoint", scheme+"://"+addr.String()).
					Str("store", storeDir).Str("region", region).Str("account_id", accountID).
					Int("principals", len(principals)).Msg("kms server listening")
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
	f.StringVar(&region, "region", kms.DefaultRegion, "region of the key ARNs; when given, only requests signed for it are accepted (default: any signing region)")
	f.StringVar(&accountID, "account-id", kms.DefaultAccount, "12-digit account ID of the key and principal ARNs")
	f.StringVar(&passphraseFile, "passphrase-file", "", "seal the key store under a passphrase read from this file instead of a root key file")
	f.Int64Var(&maxBody, "max-body", server.DefaultMaxBody, "largest accepted request body in bytes")
	f.StringVar(&auditMaxSize, "audit-max-size", fmt.Sprintf("%dMiB", kms.DefaultAuditMaxSize>>20), "rotate the store's audit.jsonl to audit.jsonl.1 at this size")
	f.IntVar(&auditKeep, "audit-keep", kms.DefaultAuditKeep, "rotated audit files to keep (-1: all)")
	f.DurationVar(&auditSummary, "audit-summary-interval", kms.DefaultKeyCheckSummaryInterval, "write a mount's routine key checks as one audit record per this interval")
	return cmd
}
