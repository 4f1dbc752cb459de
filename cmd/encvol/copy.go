package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newCopyCommand) }

func newCopyCommand(a *app) *cobra.Command {
	var f targetFlags
	cmd := &cobra.Command{
		Use:   "copy (VOLUME | SNAPSHOT) (NAME | --backing DIR) [--kms NAME] [--key KEY] [--resume] [--json]",
		Short: "Copy a volume or snapshot into a new volume under another key (re-encrypting everything)",
		Long: `Copy a volume (a [volumes.NAME] or a backing directory) or a snapshot into a
new volume with its own data key under KEY, possibly in another configured
KMS. Every sector, name, symlink target and attribute is decrypted with the
source's key and encrypted again, at the sector level and without a mount;
the copy is never less encrypted than the source. The source must not be
mounted (copy a snapshot of a volume in use); it is held against mounts
while it is read, and never changed.

The work runs in parallel on every core and shows progress. It can be
stopped at any time (or run out of space): the target then carries a marker
that keeps it from being mounted, and running the same command again (or
with --resume) finishes it. When done, every file is read back and compared
with the source and the copy is mounted once; a difference fails the
command and names the file.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && f.opt.Backing == "" {
				return usageError("give a volume NAME or --backing DIR for the copy of %s", args[0])
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return a.runCopy(cmd.Context(), args[0], name, &f)
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) runCopy(ctx context.Context, source, name string, f *targetFlags) error {
	defer a.profile()()
	opt, cfg, err := a.resolveTarget(name, f)
	if err != nil {
		return err
	}
	src, err := cfg.ResolveVerify(source)
	if err != nil {
		return targetError(err)
	}
	srcClient, err := kmsclient.New(ctx, src.KMS, src.KMSConfig)
	if err != nil {
		return a.withRemedy(fmt.Errorf("KMS %q of %s: %w", src.KMS, src.Backing, err), src.Header.KeyID, src.KMS)
	}
	defer srcClient.Close()
	client, topt, err := a.targetOptions(ctx, cfg, opt, f.resume, a.transferProgress())
	if err != nil {
		return err
	}
	defer client.Close()
	rep, err := volume.CopyVolume(ctx, client, volume.CopyOptions{Source: src.Backing, SourceClient: srcClient, TargetOptions: topt})
	var inUse *volume.InUseError
	if errors.As(err, &inUse) && inUse.Mountpoint != "" {
		rep, err = a.copyMounted(ctx, cfg, source, srcClient, client, topt)
	}
	if err != nil {
		return a.withRemedy(err, opt.KeyRef, topt.Target.KMSName)
	}
	if f.asJSON {
		return printJSON(a.stdout, rep)
	}
	printTransfer(a.stdout, rep, mountHint(name, rep.Backing))
	return nil
}
