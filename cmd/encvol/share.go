package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() {
	subcommands = append(subcommands, newShareCommand, newUnshareCommand, newSharesCommand)
}

const shareTargetHelp = `VOLUME is a [volumes.NAME] of the configuration or a backing directory;
SNAPSHOT is a snapshot directory. A snapshot carries its volume's ID and
data key, so sharing either opens both to the sharee (where the sharee can
read their files): share a copy (encvol copy ... --key KEY) to share one
without the other.`

func newShareCommand(a *app) *cobra.Command {
	var with string
	var readOnly, asJSON bool
	cmd := &cobra.Command{
		Use:   "share (VOLUME | SNAPSHOT) --with (PRINCIPAL | group:NAME) [--read-only] [--json]",
		Short: "Let another principal of the KMS server mount a volume or snapshot",
		Long: `Grant PRINCIPAL (a principal of the encvol kms serve the volume's key lives
on), or every member of group:NAME (a [[group]] of its principals file, as
it is at each request), the use of the volume's key for this volume only:
a grant for Decrypt and DescribeKey constrained with EncryptionContextEquals
to the volume's encryption context, named after the volume. The sharee
names the server in a [kms.NAME] of type "aws" with its own access key,
and mounts the backing directory (or a copy of it) like its own; it can
unwrap no other volume under the key. Only the key's owner (or an
administrator its key policy names) may share.

--read-only makes the sharee's mounts read-only: the mount learns from the
KMS that it holds the key only through read-only shares. That is
cooperative: the data key could also write, so a sharee running other
software could write to its copy; keep the backing directory itself
read-only to the sharee to make it binding. Sharing again with the other
mode replaces the share; a read-write mount whose share turns read-only
closes its gate until it is mounted again.

Volumes under the service key (alias/encvol/default) are never shared:
the refusal prints the encvol copy command that makes a shareable copy.
The embedded (local) KMS has a single principal and cannot share: serve
its key store with encvol kms serve. Sharing again is harmless.

` + shareTargetHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if with == "" {
				return usageError("--with is required: the principal (bob) or group (group:team) to share with")
			}
			if err := volume.CheckGrantee(with); err != nil {
				return withCode(exitUsage, err)
			}
			return a.runShare(cmd.Context(), args[0], asJSON, func(ctx context.Context, cfg *volume.Config, adm kmsclient.Admin, t volume.ShareTarget) (volume.ShareReport, error) {
				return cfg.ShareVolume(ctx, adm, t, with, readOnly)
			}, func(r volume.ShareReport) { a.printShare(r, readOnly) })
		},
	}
	cmd.Flags().StringVar(&with, "with", "", "principal of the KMS server, or group:NAME")
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "the sharee mounts read-only (enforced by the sharee's mount)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newUnshareCommand(a *app) *cobra.Command {
	var with string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "unshare (VOLUME | SNAPSHOT) --with (PRINCIPAL | group:NAME) [--json]",
		Short: "Take back a share: the sharee's mounts close at their next key check",
		Long: `Revoke the grants by which encvol share shared the volume with PRINCIPAL
(or group:NAME). From the next request on the KMS refuses the sharee the
volume's key: its running mounts refuse I/O within their
key_check_interval, new mounts fail, and the owner's mounts go on. Grants
made otherwise (encvol kms create-grant) stay; encvol shares lists them.
Nothing to revoke is no error.

` + shareTargetHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if with == "" {
				return usageError("--with is required: the principal (bob) or group (group:team) to unshare from")
			}
			if err := volume.CheckGrantee(with); err != nil {
				return withCode(exitUsage, err)
			}
			return a.runShare(cmd.Context(), args[0], asJSON, func(ctx context.Context, cfg *volume.Config, adm kmsclient.Admin, t volume.ShareTarget) (volume.ShareReport, error) {
				return cfg.UnshareVolume(ctx, adm, t, with)
			}, func(r volume.ShareReport) { a.printUnshare(r, with) })
		},
	}
	cmd.Flags().StringVar(&with, "with", "", "principal of the KMS server, or group:NAME")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newSharesCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "shares (VOLUME | SNAPSHOT) [--json]",
		Short: "List who may mount a volume through grants",
		Long: `List the shares of the volume (grantee, read-only or read-write, grant ID)
and any other grant on its key that admits unwrapping this volume's data
key (marked "other grant"; encvol kms revoke-grant removes it). Besides
them, the key's owner and the administrators its key policy names have
access.

` + shareTargetHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runShare(cmd.Context(), args[0], asJSON, func(ctx context.Context, cfg *volume.Config, adm kmsclient.Admin, t volume.ShareTarget) (volume.ShareReport, error) {
				return cfg.ListShares(ctx, adm, t)
			}, a.printShares)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the shares as JSON")
	return cmd
}

type shareFunc func(ctx context.Context, cfg *volume.Config, adm kmsclient.Admin, t volume.ShareTarget) (volume.ShareReport, error)

// runShare resolves the target, opens its KMS and runs f, then prints.
func (a *app) runShare(ctx context.Context, arg string, asJSON bool, f shareFunc, print func(volume.ShareReport)) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	t, err := cfg.ResolveShare(arg)
	if err != nil {
		return targetError(err)
	}
	// The refusals print the commands that make a shareable volume as they
	// are (scripts and the docs look for them): no --config is inserted.
	if err := t.CheckKMS(); err != nil {
		return err
	}
	adm, err := kmsclient.NewAdmin(ctx, t.KMS, t.KMSConfig)
	if err != nil {
		return a.withRemedy(fmt.Errorf("KMS %q: %w", t.KMS, err), "", t.KMS)
	}
	defer adm.Close()
	rep, err := f(ctx, cfg, adm, t)
	if errors.Is(err, volume.ErrNotShareable) {
		return err
	}
	if err != nil {
		return a.withConfigFlag(err)
	}
	if asJSON {
		return printJSON(a.stdout, rep)
	}
	print(rep)
	return nil
}

func shareMode(readOnly bool) string {
	if readOnly {
		return "read-only"
	}
	return "read-write"
}

func (a *app) printShare(r volume.ShareReport, readOnly bool) {
	what := "volume " + r.VolumeID
	if r.Snapshot != "" {
		what = "snapshot " + r.Snapshot + " of volume " + r.VolumeID
	}
	s := r.Shares[0]
	if r.Unchanged {
		fmt.Fprintf(a.stdout, "%s is already shared %s with %s (grant %s on key %s)\n", what, shareMode(readOnly), s.Grantee, s.GrantID, r.KeyID)
		return
	}
	fmt.Fprintf(a.stdout, "shared %s %s with %s: grant %s on key %s, for this volume's encryption context only\n",
		what, shareMode(readOnly), s.Grantee, s.GrantID, r.KeyID)
	for _, old := range r.Revoked {
		fmt.Fprintf(a.stdout, "replaced the %s share (grant %s revoked)\n", shareMode(old.ReadOnly), old.GrantID)
	}
	who := s.Grantee + " mounts"
	if group, ok := strings.CutPrefix(s.Grantee, "group:"); ok {
		who = "every member of group " + group + " mounts"
	}
	fmt.Fprintf(a.stdout, "%s it with a [kms.NAME] of type \"aws\" for KMS %q's endpoint and its own access key: `encvol mount BACKING MOUNTPOINT`\n", who, r.KMS)
}

func (a *app) printUnshare(r volume.ShareReport, with string) {
	if len(r.Revoked) == 0 {
		fmt.Fprintf(a.stdout, "volume %s is not shared with %s: nothing revoked\n", r.VolumeID, with)
		return
	}
	ids := make([]string, len(r.Revoked))
	for i, s := range r.Revoked {
		ids[i] = s.GrantID
	}
	fmt.Fprintf(a.stdout, "unshared volume %s from %s (revoked grant %s); its mounts refuse I/O from their next key check\n",
		r.VolumeID, r.Revoked[0].Grantee, strings.Join(ids, ", "))
}

func (a *app) printShares(r volume.ShareReport) {
	if len(r.Shares) == 0 {
		fmt.Fprintf(a.stdout, "volume %s (key %s) is shared with nobody\n", r.VolumeID, r.KeyID)
		return
	}
	fmt.Fprintf(a.stdout, "volume %s, key %s:\n", r.VolumeID, r.KeyID)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GRANTEE\tACCESS\tGRANT ID\tCREATED")
	for _, s := range r.Shares {
		access := shareMode(s.ReadOnly)
		if s.Other {
			access = "other grant (" + strings.Join(s.Operations, ",") + ")"
		}
		created := "-"
		if !s.Created.IsZero() {
			created = s.Created.UTC().Format("2006-01-02T15:04:05Z")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Grantee, access, s.GrantID, created)
	}
	tw.Flush()
}
