package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// keyGuardHelp explains the key-usage guard in the help of the verbs it
// guards.
const keyGuardHelp = `The command first looks for the volumes the key protects: mounted on this
host, configured in a [volumes.NAME] table whose header names the key, or
seen unwrapping their data key under it in the KMS audit log within
[policy] key_in_use_window (default 720h; local KMS only, a remote KMS keeps
its log on its own host). When there are any, it lists them and refuses
(exit 7) unless --force is given. One exception: disable-key of the only
customer key of the KMS proceeds with the warning, since there is no other
key it could have been meant for (disabling is the kill switch, and
enable-key undoes it). ` + "`encvol kms key-usage KEY`" + ` shows the same list.`

func kmsKeyUsageCommand(a *app) *cobra.Command {
	var o kmsOpts
	cmd := &cobra.Command{
		Use:   "key-usage KEY [--kms NAME] [--json]",
		Short: "List the volumes a key protects: mounted here, configured, or in the audit log",
		Long: `List the volumes KEY protects, as disable-key and schedule-key-deletion
see them: mounted on this host (their mounts report the key they check),
configured in a [volumes.NAME] table whose header names the key, or seen
unwrapping their data key under it in the KMS audit log within [policy]
key_in_use_window (local KMS only). Aliases are resolved to the key first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withKMS(cmd, a, func(ctx context.Context, adm kmsclient.Admin, name string) error {
				u, err := a.keyUsage(ctx, adm, args[0], name)
				if err != nil {
					return err
				}
				if o.asJSON {
					return printJSON(a.stdout, u)
				}
				if len(u.Volumes) == 0 {
					fmt.Fprintf(a.stdout, "key %s protects no volume that is mounted here, configured, or in the audit log of the last %s\n", u.Arn, u.Window)
				} else {
					fmt.Fprintf(a.stdout, "key %s protects %d volume(s):\n", u.Arn, len(u.Volumes))
					printKeyUses(a.stdout, u.Volumes)
				}
				if u.AuditNote != "" {
					fmt.Fprintf(a.stdout, "note: %s\n", u.AuditNote)
				}
				return nil
			})
		},
	}
	o.register(cmd)
	return cmd
}

func (a *app) keyUsage(ctx context.Context, adm kmsclient.Admin, key, name string) (*volume.KeyUsage, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	u, err := volume.FindKeyUsage(ctx, cfg, name, adm, key)
	if err != nil {
		return nil, a.withRemedy(err, key, name)
	}
	return u, nil
}

// guardKeyChange runs the key-usage guard before op: it refuses, listing
// the volumes on stderr, or returns them (warned about on stderr) and the
// note for the report.
func (a *app) guardKeyChange(ctx context.Context, adm kmsclient.Admin, key, name, op string, force bool) ([]volume.KeyUse, string, error) {
	u, err := a.keyUsage(ctx, adm, key, name)
	if err != nil {
		return nil, "", err
	}
	why, err := u.Guard(op, force)
	if len(u.Volumes) > 0 {
		head := "warning: key %s protects %d volume(s); proceeding (%s):\n"
		if err != nil {
			head = "key %s protects %d volume(s)%s:\n"
		}
		fmt.Fprintf(a.stderr, head, u.Arn, len(u.Volumes), why)
		printKeyUses(a.stderr, u.Volumes)
	}
	if err != nil {
		return nil, "", err
	}
	return u.Volumes, u.AuditNote, nil
}

func printKeyUses(w io.Writer, uses []volume.KeyUse) {
	tw := newTable(w)
	fmt.Fprintln(tw, "  VOLUME\tFOUND\tWHERE\tLAST UNWRAP")
	for _, v := range uses {
		last := "-"
		if v.LastUsed != nil {
			last = fmt.Sprintf("%s (%s by %s)", fmtTime(*v.LastUsed), v.LastOp, orDash(v.Principal))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.VolumeID, v.Sources(), v.Where(), last)
	}
	_ = tw.Flush()
}
