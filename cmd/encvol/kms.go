package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newKMSCommand) }

// newKMSCommand builds `encvol kms` and its verbs. Every verb talks to the
// KMS named by --kms (default: the configured default KMS), local or
// remote alike, and prints a table, or JSON with --json.
func newKMSCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kms",
		Short: "Manage KMS keys, aliases, grants and the audit log; run a KMS server",
		Long: `Manage the customer master keys (CMKs) that wrap volume data keys.
KEY is a key ID, a key ARN or alias/NAME. --kms NAME picks a [kms.NAME] of
the configuration (default: [defaults] kms, or the only one configured).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		kmsCreateKeyCommand(a),
		kmsDescribeKeyCommand(a),
		kmsEnableKeyCommand(a),
		kmsDisableKeyCommand(a),
		kmsRotateKeyCommand(a),
		kmsScheduleDeletionCommand(a),
		kmsCancelDeletionCommand(a),
		kmsListKeysCommand(a),
		kmsAuditCommand(a),
		kmsKeyUsageCommand(a),
		kmsCreateAliasCommand(a),
		kmsListAliasesCommand(a),
		kmsCreateGrantCommand(a),
		kmsListGrantsCommand(a),
		kmsRevokeGrantCommand(a),
		kmsImportKeyMaterialCommand(a),
		newKMSServeCommand(a),
	)
	return cmd
}

// kmsOpts are the flags every verb shares.
type kmsOpts struct {
	kms    string
	asJSON bool
}

func (o *kmsOpts) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.kms, "kms", "", "configured KMS to use ([kms.NAME]; default: the default KMS)")
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print JSON for scripts instead of a table")
}

// open resolves --kms and connects. The caller closes the Admin.
func (o *kmsOpts) open(ctx context.Context, a *app) (kmsclient.Admin, string, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, "", err
	}
	name, kc, err := cfg.KMSFor(o.kms)
	if err != nil {
		return nil, "", withCode(exitUsage, err)
	}
	adm, err := kmsclient.NewAdmin(ctx, name, kc)
	if err != nil {
		if errors.Is(err, kmsclient.ErrInvalidRequest) || !isKMSError(err) {
			return nil, name, withCode(exitUsage, fmt.Errorf("%w; fix [kms.%s] in the configuration", err, name))
		}
		return nil, name, a.withRemedy(err, "", name)
	}
	return adm, name, nil
}

// encvolCmd renders a suggested command line, carrying --config along so
// the suggestion works as printed.
func (a *app) encvolCmd(format string, args ...any) string {
	prefix := "encvol "
	if a.configPath != "" {
		prefix = "encvol --config " + a.configPath + " "
	}
	return "`" + prefix + fmt.Sprintf(format, args...) + "`"
}

func isKMSError(err error) bool {
	var ke *kmsclient.Error
	return errors.As(err, &ke)
}

// withKMS runs f with an open Admin for the verb's --kms and closes it.
func (o *kmsOpts) withKMS(cmd *cobra.Command, a *app, f func(ctx context.Context, adm kmsclient.Admin, name string) error) error {
	ctx := cmd.Context()
	adm, name, err := o.open(ctx, a)
	if err != nil {
		return err
	}
	defer adm.Close()
	return f(ctx, adm, name)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// printList prints items as a JSON array (never null) or as a table: the
// header line, then row's line for each item.
func printList[T any](w io.Writer, asJSON bool, items []T, header string, row func(tw io.Writer, item T)) error {
	if asJSON {
		if items == nil {
			items = []T{}
		}
		return printJSON(w, items)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		row(tw, it)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func printKey(w io.Writer, k kmsclient.KeyInfo) error {
	tw := newTable(w)
	rows := [][2]string{
		{"Key ID", k.KeyID}, {"ARN", k.Arn}, {"State", k.State}, {"Origin", k.Origin},
		{"Key manager", k.KeyManager}, {"Description", k.Description}, {"Created", fmtTime(k.Created)},
		{"Aliases", strings.Join(k.Aliases, ", ")},
	}
	if k.Owner != "" {
		rows = append(rows, [2]string{"Owner", k.Owner})
	}
	if k.DeletionDate != nil {
		rows = append(rows, [2]string{"Deletion date", fmtTime(*k.DeletionDate)})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], orDash(r[1]))
	}
	return tw.Flush()
}

// describeWithAliases fills in Aliases where the backend's DescribeKey
// does not report them (AWS's KeyMetadata has none).
func describeWithAliases(ctx context.Context, adm kmsclient.Admin, keyRef string) (kmsclient.KeyInfo, error) {
	k, err := adm.DescribeKey(ctx, keyRef)
	if err != nil {
		return k, err
	}
	if len(k.Aliases) == 0 {
		if as, err := adm.ListAliases(ctx, k.KeyID); err == nil {
			for _, al := range as {
				k.Aliases = append(k.Aliases, al.Name)
			}
		}
	}
	return k, nil
}

func kmsCreateKeyCommand(a *app) *cobra.Command {
	var o kmsOpts
	var alias, description, origin string
	cmd := &cobra.Command{
		Use:   "create-key [--kms NAME] [--alias alias/X] [--description D] [--origin generated|external] [--json]",
		Short: "Create a symmetric customer master key",
		Long: `Create a symmetric CMK. With --origin external the key has no material
until you import it with import-key-material (bring your own key).

--alias names the new key. An alias that is already taken is refused before
anything is created (exit 2, naming the key it belongs to); if the KMS
refuses the alias only after creating the key, the key is scheduled for
deletion after 7 days (the shortest AWS allows), so nothing is left behind.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in kmsclient.CreateKeyInput
			in.Description = description
			switch origin {
			case "generated", "":
				in.Origin = kmsclient.OriginGenerated
			case "external":
				in.Origin = kmsclient.OriginExternal
			default:
				return usageError("--origin %q is not generated or external", origin)
			}
			if alias != "" && !strings.HasPrefix(alias, "alias/") {
				return usageError("--alias %q must start with alias/, e.g. alias/%s", alias, alias)
			}
			in.Alias = alias
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				// With an alias, the client refuses a taken one before
				// creating anything and leaves no key behind on failure.
				k, err := adm.CreateKey(ctx, in)
				if err != nil {
					return a.withRemedy(err, alias, name)
				}
				a.log.Debug().Str("op", "create-key").Str("key_id", k.Arn).Msg("key created")
				if o.asJSON {
					return printJSON(a.stdout, k)
				}
				if err := printKey(a.stdout, k); err != nil {
					return err
				}
				if k.State == "PendingImport" {
					fmt.Fprintf(a.stdout, "\nThe key has no material yet: run %s with 32 random bytes in FILE.\n", a.encvolCmd("kms import-key-material %s --material FILE --kms %s", k.KeyID, name))
				}
				return nil
			})
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&alias, "alias", "", "alias to create for the key (alias/NAME)")
	cmd.Flags().StringVar(&description, "description", "", "description of the key")
	cmd.Flags().StringVar(&origin, "origin", "generated", "key material origin: generated (by the KMS) or external (import-key-material)")
	return cmd
}

func kmsDescribeKeyCommand(a *app) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   "describe-key KEY [--kms NAME] [--json]",
		Short: "Show a key's ID, ARN, state, origin and aliases",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				k, err := describeWithAliases(ctx, adm, args[0])
				if err != nil {
					return a.withRemedy(err, args[0], name)
				}
				if o.asJSON {
					return printJSON(a.stdout, k)
				}
				return printKey(a.stdout, k)
			})
		},
	}
	o.register(cmd)
	return cmd
}

// stateChange is the report of enable/disable/rotate/cancel.
type stateChange struct {
	KeyID     string          `json:"key_id"`
	Arn       string          `json:"arn"`
	Operation string          `json:"operation"`
	State     string          `json:"state"`
	Deletion  *time.Time      `json:"deletion_date,omitempty"`
	Volumes   []volume.KeyUse `json:"volumes,omitempty"`
	Note      string          `json:"note,omitempty"`
}

// changeKey runs change on key and returns the key as it is afterwards.
func (a *app) changeKey(ctx context.Context, adm kmsclient.Admin, key, name string, change func() error) (kmsclient.KeyInfo, error) {
	if err := change(); err != nil {
		return kmsclient.KeyInfo{}, a.withRemedy(err, key, name)
	}
	k, err := adm.DescribeKey(ctx, key)
	if err != nil {
		return k, a.withRemedy(err, key, name)
	}
	return k, nil
}

// report prints v as JSON with --json, else the sentence format makes.
func (a *app) report(o *kmsOpts, v any, format string, args ...any) error {
	if o.asJSON {
		return printJSON(a.stdout, v)
	}
	fmt.Fprintf(a.stdout, format+"\n", args...)
	return nil
}

func (a *app) reportChange(o *kmsOpts, ch stateChange, text string) error {
	if o.asJSON {
		return printJSON(a.stdout, ch)
	}
	fmt.Fprintln(a.stdout, text)
	if ch.Note != "" {
		fmt.Fprintln(a.stdout, ch.Note)
	}
	return nil
}

// stateVerb builds enable-key, rotate-key and cancel-key-deletion, which
// differ only in the call and the message.
func stateVerb(a *app, use, short string, do func(ctx context.Context, adm kmsclient.Admin, key string) error, msg func(k kmsclient.KeyInfo, name string) (string, string)) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			verb := strings.Fields(use)[0]
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				k, err := a.changeKey(ctx, adm, args[0], name, func() error { return do(ctx, adm, args[0]) })
				if err != nil {
					return err
				}
				a.log.Debug().Str("op", verb).Str("key_id", k.Arn).Str("state", k.State).Msg("key changed")
				text, note := msg(k, name)
				return a.reportChange(&o, stateChange{KeyID: k.KeyID, Arn: k.Arn, Operation: verb, State: k.State, Note: note}, text)
			})
		},
	}
	o.register(cmd)
	return cmd
}

func kmsEnableKeyCommand(a *app) *cobra.Command {
	return stateVerb(a, "enable-key KEY [--kms NAME] [--json]", "Enable a key: volumes under it can be created and mounted again",
		func(ctx context.Context, adm kmsclient.Admin, key string) error { return adm.EnableKey(ctx, key) },
		func(k kmsclient.KeyInfo, _ string) (string, string) {
			return fmt.Sprintf("Key %s is now %s.", k.KeyID, k.State), "Mounts closed by the disable reopen at their next key check."
		})
}

func kmsRotateKeyCommand(a *app) *cobra.Command {
	return stateVerb(a, "rotate-key KEY [--kms NAME] [--json]", "Rotate a key now: new data keys use new material, existing volumes keep working",
		func(ctx context.Context, adm kmsclient.Admin, key string) error { return adm.RotateKey(ctx, key) },
		func(k kmsclient.KeyInfo, _ string) (string, string) {
			return fmt.Sprintf("Key %s rotated: new data keys are wrapped with the new key material; existing volumes still open.", k.KeyID), ""
		})
}

func kmsCancelDeletionCommand(a *app) *cobra.Command {
	return stateVerb(a, "cancel-key-deletion KEY [--kms NAME] [--json]", "Cancel a scheduled deletion (the key stays disabled)",
		func(ctx context.Context, adm kmsclient.Admin, key string) error {
			return adm.CancelKeyDeletion(ctx, key)
		},
		func(k kmsclient.KeyInfo, name string) (string, string) {
			return fmt.Sprintf("Deletion of key %s cancelled; the key is %s.", k.KeyID, k.State),
				fmt.Sprintf("Run %s to use it again.", a.encvolCmd("kms enable-key %s --kms %s", k.KeyID, name))
		})
}

// refuseKMSManaged refuses, before any warning about the volumes a key
// protects, a change that the KMS would refuse anyway because it manages
// the key itself (the service key alias/encvol/default). what completes
// "it cannot be ...".
func (a *app) refuseKMSManaged(ctx context.Context, adm kmsclient.Admin, key, name, what string) error {
	k, err := adm.DescribeKey(ctx, key)
	if err != nil {
		return a.withRemedy(err, key, name)
	}
	if !k.ManagedByKMS() {
		return nil
	}
	// Only the refusal names the aliases: list them just for it.
	if k, err = describeWithAliases(ctx, adm, key); err != nil {
		return a.withRemedy(err, key, name)
	}
	which := k.KeyID
	if len(k.Aliases) > 0 {
		which += " (" + strings.Join(k.Aliases, ", ") + ")"
	}
	return usageError("key %s is managed by the KMS itself (the encvol service key): it cannot be %s; protect volumes you may need to revoke with a customer key (%s, then %s)",
		which, what, a.encvolCmd("kms create-key --alias alias/NAME --kms %s", name), a.encvolCmd("create --backing DIR --key alias/NAME"))
}

func kmsDisableKeyCommand(a *app) *cobra.Command {
	var o kmsOpts
	var force bool
	cmd := &cobra.Command{
		Use:   "disable-key KEY [--kms NAME] [--force] [--json]",
		Short: "Disable a key: mounted volumes under it stop serving I/O at their next key check",
		Long: `Disable a key. Volumes whose data key it wraps can no longer be mounted,
and running mounts refuse I/O within their key_check_interval. enable-key
undoes it.

` + keyGuardHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				if err := a.refuseKMSManaged(ctx, adm, key, name, "disabled"); err != nil {
					return err
				}
				uses, note, err := a.guardKeyChange(ctx, adm, key, name, volume.GuardDisable, force)
				if err != nil {
					return err
				}
				k, err := a.changeKey(ctx, adm, key, name, func() error { return adm.DisableKey(ctx, key) })
				if err != nil {
					return err
				}
				a.log.Debug().Str("op", "disable-key").Str("key_id", k.Arn).Msg("key disabled")
				return a.reportChange(&o, stateChange{KeyID: k.KeyID, Arn: k.Arn, Operation: "disable-key", State: k.State, Volumes: uses, Note: note},
					fmt.Sprintf("Key %s is now %s; undo with %s.", k.KeyID, k.State, a.encvolCmd("kms enable-key %s --kms %s", k.KeyID, name)))
			})
		},
	}
	o.register(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "disable the key although it protects volumes in use")
	return cmd
}

func kmsScheduleDeletionCommand(a *app) *cobra.Command {
	var o kmsOpts
	var days int
	var force bool
	cmd := &cobra.Command{
		Use:   "schedule-key-deletion KEY --days N [--kms NAME] [--force] [--json]",
		Short: "Schedule a key for deletion after 7 to 30 days (it is unusable from now on)",
		Long: `Schedule a key for deletion after a waiting period of 7 to 30 days. From
now on the key cannot wrap or unwrap data keys; when the period ends, every
volume under it is lost for good. cancel-key-deletion undoes it until then.

` + keyGuardHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("days") {
				return usageError("--days N is required: the waiting period of 7 to 30 days before the key is deleted")
			}
			if days < 7 || days > 30 {
				return usageError("--days %d is outside the allowed waiting period of 7 to 30 days", days)
			}
			key := args[0]
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				if err := a.refuseKMSManaged(ctx, adm, key, name, "scheduled for deletion"); err != nil {
					return err
				}
				uses, note, err := a.guardKeyChange(ctx, adm, key, name, volume.GuardDeletion, force)
				if err != nil {
					return err
				}
				var when time.Time
				k, err := a.changeKey(ctx, adm, key, name, func() (err error) {
					when, err = adm.ScheduleKeyDeletion(ctx, key, days)
					return err
				})
				if err != nil {
					return err
				}
				a.log.Debug().Str("op", "schedule-key-deletion").Str("key_id", k.Arn).Time("deletion_date", when).Msg("key deletion scheduled")
				return a.reportChange(&o, stateChange{KeyID: k.KeyID, Arn: k.Arn, Operation: "schedule-key-deletion", State: k.State, Deletion: &when, Volumes: uses, Note: note},
					fmt.Sprintf("Key %s will be deleted on %s; cancel with %s.", k.KeyID, fmtTime(when), a.encvolCmd("kms cancel-key-deletion %s --kms %s", k.KeyID, name)))
			})
		},
	}
	o.register(cmd)
	cmd.Flags().IntVar(&days, "days", 0, "waiting period in days before the key is deleted (7 to 30)")
	cmd.Flags().BoolVar(&force, "force", false, "schedule the deletion although the key protects volumes in use")
	return cmd
}

func kmsListKeysCommand(a *app) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   "list-keys [--kms NAME] [--json]",
		Short: "List the keys with their state, origin and aliases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				keys, err := adm.ListKeys(ctx)
				if err != nil {
					return a.withRemedy(err, "", name)
				}
				// Aliases come from one ListAliases call for backends whose
				// key descriptions do not carry them.
				if aliases, err := adm.ListAliases(ctx, ""); err == nil {
					byKey := map[string][]string{}
					for _, al := range aliases {
						byKey[al.TargetKeyID] = append(byKey[al.TargetKeyID], al.Name)
					}
					for i := range keys {
						if len(keys[i].Aliases) == 0 {
							keys[i].Aliases = byKey[keys[i].KeyID]
						}
					}
				}
				sort.SliceStable(keys, func(i, j int) bool { return keys[i].Created.Before(keys[j].Created) })
				return printList(a.stdout, o.asJSON, keys, "KEY ID\tSTATE\tORIGIN\tMANAGER\tCREATED\tALIASES\tDESCRIPTION", func(tw io.Writer, k kmsclient.KeyInfo) {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.KeyID, orDash(k.State), orDash(k.Origin), orDash(k.KeyManager),
						fmtTime(k.Created), orDash(strings.Join(k.Aliases, ",")), orDash(k.Description))
				})
			})
		},
	}
	o.register(cmd)
	return cmd
}

func kmsAuditCommand(a *app) *cobra.Command {
	var o kmsOpts
	var key string
	var limit int
	var volumes bool
	cmd := &cobra.Command{
		Use:   "audit [--key KEY] [--kms NAME] [--json]",
		Short: "Show the audit log of key use and key changes (local key stores)",
		Long: `Show the KMS audit log: every data-key operation and state change with
time, principal, operation, key, encryption context and result, read across
the rotated files (audit.jsonl.N ... audit.jsonl.1, audit.jsonl). A mount's
periodic key checks are shown as its first and last check, every change of
result, and summaries that count the checks in between that repeat a
result (KEY CHECK column; "checks" in --json). With --volumes, show
which volumes used the key instead. The log lives with the key store: for a
remote KMS, run this on the server host with --kms naming a local KMS whose
path is the store that ` + "`encvol kms serve --store`" + ` uses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError("--limit %d is negative", limit)
			}
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				recs, err := adm.Audit(ctx, kmsclient.AuditFilter{KeyRef: key})
				if err != nil {
					return a.withRemedy(err, key, name)
				}
				if limit > 0 && len(recs) > limit {
					recs = recs[len(recs)-limit:]
				}
				if volumes {
					return printList(a.stdout, o.asJSON, kmsclient.VolumesUsingKey(recs, time.Time{}), "VOLUME\tUSES\tLAST USED\tLAST OPERATION\tPRINCIPAL", func(tw io.Writer, u kmsclient.VolumeUse) {
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", u.VolumeID, u.Uses, fmtTime(u.LastUsed), u.LastOp, u.Principal)
					})
				}
				return printList(a.stdout, o.asJSON, recs, "TIME\tPRINCIPAL\tOPERATION\tKEY\tVERSION\tCONTEXT\tRESULT\tKEY CHECK", func(tw io.Writer, r kmsclient.AuditRecord) {
					ver := "-"
					if r.KeyVersion > 0 {
						ver = fmt.Sprint(r.KeyVersion)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(r.Time), orDash(r.Principal), r.Operation,
						orDash(r.KeyID), ver, orDash(formatContext(r.EncryptionContext)), r.Result, formatKeyCheck(r.KeyCheck))
				})
			})
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&key, "key", "", "only records of this key")
	cmd.Flags().IntVar(&limit, "limit", 0, "only the last N records (0 = all)")
	cmd.Flags().BoolVar(&volumes, "volumes", false, "summarize which volumes used the key(s) instead of listing records")
	return cmd
}

// formatKeyCheck shows which checks of which mount a record stands for.
func formatKeyCheck(c *kmsclient.AuditKeyCheck) string {
	switch {
	case c == nil:
		return "-"
	case c.Event == kms.CheckSummary:
		return fmt.Sprintf("%s: %d checks since %s (%s)", c.Event, c.Checks, fmtTime(c.From), c.Mount)
	}
	return fmt.Sprintf("%s (%s)", c.Event, c.Mount)
}

func formatContext(ec map[string]string) string {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+ec[k])
	}
	return strings.Join(parts, ",")
}

func kmsCreateAliasCommand(a *app) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   "create-alias ALIAS KEY [--kms NAME] [--json]",
		Short: "Give a key a name (alias/NAME) to use wherever KEY is expected",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			alias, key := args[0], args[1]
			if !strings.HasPrefix(alias, "alias/") {
				return usageError("alias %q must start with alias/, e.g. alias/%s", alias, alias)
			}
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				if err := adm.CreateAlias(ctx, alias, key); err != nil {
					return a.withRemedy(err, key, name)
				}
				k, err := adm.DescribeKey(ctx, alias)
				if err != nil {
					return a.withRemedy(err, alias, name)
				}
				return a.report(&o, kmsclient.AliasInfo{Name: alias, TargetKeyID: k.KeyID}, "Alias %s now names key %s.", alias, k.KeyID)
			})
		},
	}
	o.register(cmd)
	return cmd
}

func kmsListAliasesCommand(a *app) *cobra.Command {
	var o kmsOpts
	var key string
	cmd := &cobra.Command{
		Use:   "list-aliases [--key KEY] [--kms NAME] [--json]",
		Short: "List aliases and the keys they name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				as, err := adm.ListAliases(ctx, key)
				if err != nil {
					return a.withRemedy(err, key, name)
				}
				return printList(a.stdout, o.asJSON, as, "ALIAS\tKEY ID", func(tw io.Writer, al kmsclient.AliasInfo) {
					fmt.Fprintf(tw, "%s\t%s\n", al.Name, orDash(al.TargetKeyID))
				})
			})
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&key, "key", "", "only aliases of this key")
	return cmd
}

func kmsCreateGrantCommand(a *app) *cobra.Command {
	var o kmsOpts
	var in kmsclient.GrantInput
	cmd := &cobra.Command{
		Use:   "create-grant KEY --grantee PRINCIPAL --operations Decrypt,DescribeKey,... [--kms NAME] [--json]",
		Short: "Allow another principal to use a key for the listed operations",
		Long: `Allow PRINCIPAL (a name from the KMS server's principals file) to use KEY
for the listed operations: Decrypt, Encrypt, GenerateDataKey,
GenerateDataKeyWithoutPlaintext, ReEncryptFrom, ReEncryptTo, DescribeKey,
CreateGrant, RetireGrant. To mount a volume the grantee needs Decrypt and
DescribeKey. revoke-grant takes it back; the grantee's mounts stop at their
next key check.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.KeyRef = args[0]
			if in.Grantee == "" {
				return usageError("--grantee PRINCIPAL is required")
			}
			var ops []string
			for _, op := range in.Operations {
				if op = strings.TrimSpace(op); op != "" {
					ops = append(ops, op)
				}
			}
			if len(ops) == 0 {
				return usageError("--operations is required, e.g. --operations Decrypt,DescribeKey")
			}
			in.Operations = ops
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				id, err := adm.CreateGrant(ctx, in)
				if err != nil {
					return a.withRemedy(err, in.KeyRef, name)
				}
				a.log.Debug().Str("op", "create-grant").Str("key_id", in.KeyRef).Str("grant_id", id).Msg("grant created")
				return a.report(&o, map[string]any{"grant_id": id, "key": in.KeyRef, "grantee": in.Grantee, "operations": in.Operations},
					"Grant %s lets %s use key %s for %s.", id, in.Grantee, in.KeyRef, strings.Join(in.Operations, ", "))
			})
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&in.Grantee, "grantee", "", "principal that receives the permissions")
	cmd.Flags().StringSliceVar(&in.Operations, "operations", nil, "comma-separated operations to allow")
	cmd.Flags().StringVar(&in.RetiringPrincipal, "retiring-principal", "", "principal allowed to retire the grant")
	cmd.Flags().StringVar(&in.Name, "name", "", "name of the grant")
	return cmd
}

func kmsListGrantsCommand(a *app) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   "list-grants KEY [--kms NAME] [--json]",
		Short: "List the grants on a key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				gs, err := adm.ListGrants(ctx, args[0])
				if err != nil {
					return a.withRemedy(err, args[0], name)
				}
				return printList(a.stdout, o.asJSON, gs, "GRANT ID\tGRANTEE\tOPERATIONS\tCREATED\tNAME", func(tw io.Writer, g kmsclient.GrantInfo) {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.GrantID, g.Grantee, strings.Join(g.Operations, ","), fmtTime(g.Created), orDash(g.Name))
				})
			})
		},
	}
	o.register(cmd)
	return cmd
}

func kmsRevokeGrantCommand(a *app) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   "revoke-grant KEY GRANT_ID [--kms NAME] [--json]",
		Short: "Take a grant back; the grantee's mounts stop at their next key check",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, id := args[0], args[1]
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				if err := adm.RevokeGrant(ctx, key, id); err != nil {
					return a.withRemedy(err, key, name)
				}
				return a.report(&o, map[string]string{"grant_id": id, "key": key, "operation": "revoke-grant"}, "Grant %s on key %s revoked.", id, key)
			})
		},
	}
	o.register(cmd)
	return cmd
}

func kmsImportKeyMaterialCommand(a *app) *cobra.Command {
	var o kmsOpts
	var materialPath string
	cmd := &cobra.Command{
		Use:   "import-key-material KEY --material FILE [--kms NAME] [--json]",
		Short: "Import your own 32-byte key material into a key created with --origin external",
		Long: `Import key material (bring your own key). FILE holds exactly 32 raw
random bytes. encvol fetches the KMS's RSA wrapping key, wraps the material
with RSAES-OAEP-SHA-256 locally and imports it; the material does not
expire. Keep FILE safe and offline: if the key's material is ever deleted,
only the same material brings its volumes back.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if materialPath == "" {
				return usageError("--material FILE is required: a file of exactly 32 random bytes")
			}
			material, err := os.ReadFile(materialPath)
			if err != nil {
				return withCode(exitUsage, fmt.Errorf("read key material: %w", err))
			}
			defer clear(material)
			if len(material) != kmsclient.DataKeySize {
				return usageError("key material file %s holds %d bytes, want exactly %d raw bytes (e.g. `head -c 32 /dev/urandom > %s`)",
					materialPath, len(material), kmsclient.DataKeySize, materialPath)
			}
			key := args[0]
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				k, err := a.changeKey(ctx, adm, key, name, func() error { return kmsclient.ImportRawKeyMaterial(ctx, adm, key, material) })
				if err != nil {
					return err
				}
				a.log.Debug().Str("op", "import-key-material").Str("key_id", k.Arn).Msg("key material imported")
				return a.reportChange(&o, stateChange{KeyID: k.KeyID, Arn: k.Arn, Operation: "import-key-material", State: k.State},
					fmt.Sprintf("Key material imported into key %s; the key is %s.", k.KeyID, k.State))
			})
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&materialPath, "material", "", "file holding exactly 32 raw bytes of key material")
	return cmd
}
