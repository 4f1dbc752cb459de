package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newHeaderCommand) }

func newHeaderCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "header",
		Short: "Back up and restore a volume header",
		Long: `The volume header holds the only copy of the wrapped data key: losing it
loses the volume. Back it up (it holds no plaintext key, only the KMS's
wrapping) and restore it when the header in the backing directory is
destroyed or damaged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(headerBackupCommand(a), headerRestoreCommand(a))
	return cmd
}

func headerBackupCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backup VOLUME FILE [--json]",
		Short: "Copy the volume header to FILE (mode 0600, atomically)",
		Long: `Copy the header of VOLUME (a [volumes.NAME] or a backing directory) to
FILE, atomically and with mode 0600. The header is checked first (its data
key unwrapped, its MAC verified), so a damaged header never replaces a good
backup; when the key cannot be used right now the backup is still written
and reported as not verified. FILE is replaced only if it holds a header of
the same volume. Take a new backup after every rekey: an old one opens the
volume with the old key.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, backing, err := a.volumeArg(args[0])
			if err != nil {
				return err
			}
			rep, err := cfg.BackupHeader(cmd.Context(), backing, args[1])
			if err != nil {
				return a.withRemedy(err, "", "")
			}
			if asJSON {
				return printJSON(a.stdout, rep)
			}
			fmt.Fprintf(a.stdout, "header of volume %s (%s) backed up to %s\n  wrapped under: %s (KMS %q)\n", rep.VolumeID, rep.Backing, rep.File, rep.KeyID, rep.KMS)
			if !rep.Verified {
				fmt.Fprintf(a.stderr, "warning: the header could not be verified now (%s); it was backed up as it is\n", rep.NotVerified)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func headerRestoreCommand(a *app) *cobra.Command {
	var asJSON, force bool
	cmd := &cobra.Command{
		Use:   "restore VOLUME FILE [--force] [--json]",
		Short: "Replace the volume header with a backup of it",
		Long: `Replace the header of VOLUME (unmounted) with the backup in FILE. FILE must be
a header of this volume: its data key is unwrapped and its MAC verified,
and then it must match the current header (same volume ID and data key).
When the current header is missing or damaged, its volume ID proves
nothing: the volume's own files must open under FILE's data key (an
encrypted name or a sector that authenticates). A header of another volume
is refused. --force restores only when nothing can be checked (a damaged
header over an empty volume).

The output names the key FILE is wrapped under and warns when that differs
from the header it replaces: a backup taken before a rekey opens the volume
with the old key again.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, backing, err := a.volumeArg(args[0])
			if err != nil {
				return err
			}
			rep, err := cfg.RestoreHeader(cmd.Context(), backing, args[1], force)
			if err != nil {
				return a.withRemedy(err, "", "")
			}
			if rep.KeyChanged {
				fmt.Fprintf(a.stderr, "warning: %s is wrapped under key %s (KMS %q), the header it replaced under %s (KMS %q): the volume opens with %s again; move it back with %s\n",
					rep.File, rep.KeyID, rep.KMS, rep.OldKeyID, rep.OldKMS, rep.KeyID, a.encvolCmd("rekey %s --key %s", rep.Backing, rep.OldKeyID))
			}
			if asJSON {
				return printJSON(a.stdout, rep)
			}
			fmt.Fprintf(a.stdout, "header of volume %s (%s) restored from %s\n  wrapped under: %s (KMS %q)\n  checked: %s\n",
				rep.VolumeID, rep.Backing, rep.File, rep.KeyID, rep.KMS, rep.Proof)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "restore even when nothing can prove FILE belongs to the volume")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// volumeArg loads the configuration and resolves a VOLUME argument (a
// [volumes.NAME] or a backing directory).
func (a *app) volumeArg(arg string) (*volume.Config, string, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, "", err
	}
	backing, err := cfg.VolumeBacking(arg)
	if err != nil {
		return nil, "", withCode(exitUsage, err)
	}
	return cfg, backing, nil
}
