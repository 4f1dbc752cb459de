package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newRekeyCommand) }

func newRekeyCommand(a *app) *cobra.Command {
	var key, kmsName string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rekey VOLUME --key KEY [--kms NAME] [--json]",
		Short: "Move a volume to another key without rewriting its data",
		Long: `Rewrap the volume's data key under KEY and rewrite its header atomically:
no data is rewritten, so it takes seconds at any size. VOLUME is a
[volumes.NAME] of the configuration or a backing directory. --kms names
another configured KMS (default: the one the volume is on); within one KMS
the KMS rewraps the key itself (ReEncrypt), across KMSes the data key is
unwrapped from the old one and wrapped by the new one. A mounted volume
follows at once: from then on its mount checks KEY, so disabling the old
key no longer affects it and disabling KEY closes it. KEY must be an
Enabled symmetric key; [policy] require_customer_key refuses the service
key. The KMS audit log records the rewrap (ReEncryptFrom/ReEncryptTo, or
Decrypt and Encrypt).

A header backup taken before the rekey still opens the volume with the old
key: take a new one (encvol header backup) once the rekey is done.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return usageError("--key KEY is required: the key (ID, ARN or alias/NAME) to move the volume to")
			}
			res, err := a.rekey(cmd.Context(), args[0], key, kmsName)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, res)
			}
			a.printRekey(res)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the new key: key ID, ARN or alias/NAME")
	cmd.Flags().StringVar(&kmsName, "kms", "", "configured KMS of the new key (default: the KMS the volume is on)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (a *app) rekey(ctx context.Context, arg, key, kmsFlag string) (*volume.RekeyResult, error) {
	cfg, backing, err := a.volumeArg(arg)
	if err != nil {
		return nil, err
	}
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		return nil, targetError(fmt.Errorf("volume %s: %w", backing, err))
	}
	srcName, srcCfg, err := cfg.HeaderKMS(h)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	dstName, dstCfg := srcName, srcCfg
	if kmsFlag != "" {
		if dstName, dstCfg, err = cfg.KMSFor(kmsFlag); err != nil {
			return nil, withCode(exitUsage, err)
		}
	}
	if err := cfg.CheckCustomerKey(dstName, key); err != nil {
		return nil, err
	}
	src, err := a.openRekeyClient(ctx, srcName, srcCfg)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst := src
	if dstName != srcName {
		if dst, err = a.openRekeyClient(ctx, dstName, dstCfg); err != nil {
			return nil, err
		}
		defer dst.Close()
	}
	res, err := volume.Rekey(ctx, volume.RekeyOptions{
		Backing: backing, Src: src, SrcKMS: srcName, Dst: dst, DstKMS: dstName, DstConfig: dstCfg, KeyRef: key,
		Policy: cfg,
	})
	if err != nil {
		return nil, a.withRemedy(err, key, dstName)
	}
	a.log.Debug().Str("op", "rekey").Str("volume", res.VolumeID).Str("old_key_id", res.OldKeyID).Str("key_id", res.KeyID).
		Str("method", res.Method).Msg("volume rekeyed")
	return res, nil
}

// openRekeyClient connects to a configured KMS for a rekey.
func (a *app) openRekeyClient(ctx context.Context, name string, kc kmsclient.Config) (volume.RekeyClient, error) {
	adm, err := kmsclient.NewAdmin(ctx, name, kc)
	if err != nil {
		return nil, a.withRemedy(fmt.Errorf("KMS %q: %w", name, err), "", name)
	}
	rc, ok := adm.(volume.RekeyClient)
	if !ok {
		adm.Close()
		return nil, fmt.Errorf("KMS %q: this backend cannot rewrap data keys", name)
	}
	return rc, nil
}

func (a *app) printRekey(r *volume.RekeyResult) {
	if r.Unchanged {
		fmt.Fprintf(a.stdout, "volume %s (%s) is already wrapped under %s (KMS %q); nothing rewritten\n", r.VolumeID, r.Backing, r.KeyID, r.KMS)
	} else {
		fmt.Fprintf(a.stdout, "volume %s (%s) rekeyed by %s\n  old key: %s (KMS %q)\n  new key: %s (KMS %q)\n",
			r.VolumeID, r.Backing, r.Method, r.OldKeyID, r.OldKMS, r.KeyID, r.KMS)
	}
	if r.Mountpoint != "" {
		fmt.Fprintf(a.stdout, "the mount on %s now checks the new key\n", r.Mountpoint)
	}
	if !r.Unchanged {
		fmt.Fprintf(a.stdout, "header backups taken before this still open the volume with the old key: take a new one with %s\n",
			a.encvolCmd("header backup %s FILE", r.Backing))
	}
}
