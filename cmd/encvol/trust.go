package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newTrustCommand) }

func newTrustCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "trust (NAME | BACKING)",
		Short: "Accept a volume's current header as its pinned volume ID and key",
		Long: `A mount refuses a volume whose header names another volume ID or key than
the one this machine recorded for its backing directory at the first mount
(the known-volumes file, known-volumes.json beside the configuration): a
replaced header could make the mount write under someone else's key. When
you changed it yourself (restored another volume or an old header there),
trust records the current header instead. It first unwraps the header's data
key through the KMS and checks the header's MAC, so only a header that your
key access can open is accepted. Rekey and header restore update the pin
themselves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			t, err := cfg.ResolveVerify(args[0])
			if err != nil {
				return withCode(exitUsage, err)
			}
			plan, err := cfg.PlanTrust(t)
			if err != nil {
				return withCode(exitUsage, err)
			}
			if err := a.proveHeader(cmd.Context(), t); err != nil {
				return err
			}
			if err := cfg.RecordPin(t.Backing, t.Header); err != nil {
				return err
			}
			if plan.Had {
				fmt.Fprintf(a.stdout, "%s: pin changed from volume %s under %s to volume %s under %s (%s)\n",
					t.Backing, plan.Old.VolumeID, plan.Old.KeyID, t.Header.VolumeID, t.Header.KeyID, plan.PinsFile)
			} else {
				fmt.Fprintf(a.stdout, "%s: pinned volume %s under %s (%s)\n", t.Backing, t.Header.VolumeID, t.Header.KeyID, plan.PinsFile)
			}
			return nil
		},
	}
}

// proveHeader unwraps t's data key and checks the header MAC, then drops
// the keys: proof that the header is a real one under a key we can use.
func (a *app) proveHeader(ctx context.Context, t volume.VerifyTarget) error {
	ctx, cancel := context.WithTimeout(ctx, unlockTimeout)
	defer cancel()
	client, err := kmsclient.New(ctx, t.KMS, t.KMSConfig)
	if err != nil {
		return fmt.Errorf("KMS %q: %w", t.KMS, err)
	}
	defer client.Close()
	u, err := volume.UnlockHeader(ctx, client, t.KMS, t.Backing, t.Header)
	if err != nil {
		return a.withRemedy(err, t.Header.KeyID, t.KMS)
	}
	u.Close()
	return nil
}
