package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newCreateCommand) }

func newCreateCommand(a *app) *cobra.Command {
	var flags volume.CreateOptions
	var asJSON bool
	var fromSnapshot string
	cmd := &cobra.Command{
		Use:   "create (NAME | --backing DIR) [--kms NAME] [--key KEY] [--sector-size N] [--plaintext-names] [--from-snapshot SNAPSHOT] [--json]",
		Short: "Create a new encrypted volume with its own data key from the KMS",
		Long: `Create a new volume in an empty (or missing) backing directory. The KMS
generates a data key under KEY (default: the KMS's service key
alias/encvol/default); only its wrapped form is stored, in the volume header.
NAME refers to a [volumes.NAME] table of the configuration.

With --from-snapshot SNAPSHOT the new volume starts as the snapshot's copy,
with a volume ID of its own. Under the snapshot's key (no --key, or --key
naming that key) the files are reflinked or copied as they are and the
snapshot's data key is rewrapped by the KMS for the new volume ID: the two
share the data key, as cloud disks made from one snapshot do. Sector size
and name mode are the snapshot's.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
				if flags.Backing != "" {
					return usageError("give either a volume name or --backing, not both")
				}
			}
			var snap *volume.Snapshot
			var opt volume.CreateOptions
			var kc kmsclient.Config
			if fromSnapshot != "" {
				if flags.SectorSize != 0 || flags.PlaintextNames {
					return usageError("--sector-size and --plaintext-names do not go with --from-snapshot: the new volume keeps the snapshot's")
				}
				if snap, err = volume.OpenSnapshot(fromSnapshot); err != nil {
					return targetError(err)
				}
				opt, kc, err = cfg.ResolveCreateFrom(name, flags, snap)
			} else {
				opt, kc, err = cfg.ResolveCreate(name, flags)
			}
			if err != nil {
				return withCode(exitUsage, err)
			}
			if err := cfg.CheckCustomerKey(opt.KMSName, opt.KeyRef); err != nil {
				return err
			}
			ctx := cmd.Context()
			client, err := kmsclient.New(ctx, opt.KMSName, kc)
			if err != nil {
				return fmt.Errorf("KMS %q: %w", opt.KMSName, err)
			}
			defer client.Close()
			if err := cfg.CheckKeyWithKMS(ctx, client, opt.KMSName, opt.KeyRef); err != nil {
				return a.withRemedy(err, opt.KeyRef, opt.KMSName)
			}
			var h *keywrap.Header
			if snap != nil {
				h, err = volume.CreateFromSnapshot(ctx, client, opt, snap, a.copyBar(asJSON))
				if errors.Is(err, volume.ErrNeedsCopy) {
					h, err = a.reencryptSnapshot(ctx, cfg, snap, opt, false)
				}
			} else {
				h, err = volume.Create(ctx, client, opt)
			}
			if err != nil {
				return a.withRemedy(err, opt.KeyRef, opt.KMSName)
			}
			a.log.Debug().Str("volume", h.VolumeID).Str("key_id", h.KeyID).Str("path", opt.Backing).Msg("volume created")
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{
					"volume_id": h.VolumeID, "backing": opt.Backing, "kms": h.KMS, "key_id": h.KeyID,
					"sector_size": h.SectorSize, "name_mode": h.NameMode, "cipher": h.Cipher, "created": h.Created,
				})
			}
			fmt.Fprintf(a.stdout, "created volume %s in %s\n  key:         %s (KMS %q)\n  sector size: %d\n  names:       %s\n",
				h.VolumeID, opt.Backing, h.KeyID, h.KMS, h.SectorSize, h.NameMode)
			if name != "" {
				fmt.Fprintf(a.stdout, "mount it with: encvol mount %s\n", name)
			} else {
				fmt.Fprintf(a.stdout, "mount it with: encvol mount %s MOUNTPOINT\n", opt.Backing)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&flags.Backing, "backing", "", "backing directory (new or empty)")
	f.StringVar(&flags.KMSName, "kms", "", "configured KMS to use ([kms.NAME]; default: [defaults] kms or the only one)")
	f.StringVar(&flags.KeyRef, "key", "", "CMK: key ID, ARN or alias/NAME (default: the service key alias/encvol/default)")
	f.IntVar(&flags.SectorSize, "sector-size", 0, "plaintext sector size, a power of two from 512 to 65536 (default 4096)")
	f.BoolVar(&flags.PlaintextNames, "plaintext-names", false, "store file names unencrypted (debugging only)")
	f.StringVar(&fromSnapshot, "from-snapshot", "", "start the volume as a copy of this snapshot (a snapshot directory)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
