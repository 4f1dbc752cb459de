package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newSnapshotCommand) }

func newSnapshotCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot create|list|delete|restore",
		Short: "Take, list, delete and restore point-in-time copies of a volume (ciphertext only)",
		Long: `A snapshot is a directory holding a point-in-time copy of a volume's backing
directory (ciphertext, never decrypted) and a manifest authenticated with the
volume's key. Snapshots go into the volume's snapshot directory: the
"snapshots" key of [volumes.NAME], default BACKING.snapshots beside the
backing directory. VOLUME is a [volumes.NAME] or a backing directory;
SNAPSHOT a snapshot's path (or its name in the snapshot directory).

A snapshot of a mounted volume is crash-consistent: it is copied once while
writes go on, then the mount's writes pause while what changed is copied
again (docs/operations.md, "Snapshots"). Reflinks are used where the file
system has them (XFS, btrfs), a copy elsewhere.

A snapshot mounts read-only (encvol mount SNAPSHOT MOUNTPOINT), verifies
like a volume (encvol verify SNAPSHOT), and becomes a new volume with
encvol create --backing DIR --from-snapshot SNAPSHOT.`,
	}
	cmd.AddCommand(newSnapshotCreate(a), newSnapshotList(a), newSnapshotDelete(a), newSnapshotRestore(a))
	return cmd
}

// snapshotVolume resolves VOLUME and opens a client of its KMS.
func (a *app) snapshotVolume(ctx context.Context, arg string, needKMS bool) (volume.SnapshotVolume, kmsclient.Client, error) {
	cfg, err := a.config()
	if err != nil {
		return volume.SnapshotVolume{}, nil, err
	}
	v, err := cfg.ResolveSnapshotVolume(arg)
	if err != nil {
		return v, nil, targetError(err)
	}
	if !needKMS {
		return v, nil, nil
	}
	client, err := kmsclient.New(ctx, v.KMS, v.KMSConfig)
	if err != nil {
		return v, nil, a.withRemedy(fmt.Errorf("KMS %q: %w", v.KMS, err), v.Header.KeyID, v.KMS)
	}
	return v, client, nil
}

// copyBar is the progress of a long copy on standard error: a bar on a
// terminal, plain lines elsewhere; none with --json.
func (a *app) copyBar(asJSON bool) volume.Progress {
	if asJSON {
		return nil
	}
	return newProgress(a.stderr)
}

func newSnapshotCreate(a *app) *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create VOLUME [--name N] [--json]",
		Short: "Take a snapshot of a volume, mounted or not",
		Long: `Take a snapshot of VOLUME. The volume's key must be usable: the manifest is
authenticated with it, and a disabled key or one pending deletion refuses.
--json prints {"id","path","method","paused_ms",...}: method is "reflink" or
"copy"; paused_ms is how long the mount's writes waited (0 when the volume
was not mounted read-write); paused_at is when the pause began: every
write(2) that returned before it is in the snapshot.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, client, err := a.snapshotVolume(ctx, args[0], true)
			if err != nil {
				return err
			}
			defer client.Close()
			res, err := volume.CreateSnapshot(ctx, client, volume.SnapshotOptions{
				Volume: v, Name: name, Log: a.log, Progress: a.copyBar(asJSON),
			})
			if err != nil {
				return a.withRemedy(err, v.Header.KeyID, v.KMS)
			}
			if asJSON {
				return printJSON(a.stdout, res)
			}
			printSnapshot(a.stdout, res)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the snapshot directory (default: the snapshot ID)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func printSnapshot(w io.Writer, r *volume.SnapshotResult) {
	fmt.Fprintf(w, "snapshot %s of volume %s\n  path:    %s\n  entries: %d\n", r.ID, r.VolumeID, r.Path, r.Entries)
	switch r.Method {
	case volume.MethodReflink:
		fmt.Fprintf(w, "  method:  reflink (the copy shares its blocks with the volume until either changes)\n")
	default:
		fmt.Fprintf(w, "  method:  copy (the file system has no reflinks between the volume and its snapshot directory)\n")
	}
	switch {
	case r.PausedAt != nil:
		fmt.Fprintf(w, "  mounted: on %s; writes paused for %.1f ms for the last pass (%d files copied again)\n",
			r.Mounted, r.PausedMS, r.SecondPass.Files)
	case r.Mounted != "":
		fmt.Fprintf(w, "  mounted: read-only on %s, nothing to pause\n", r.Mounted)
	default:
		fmt.Fprintf(w, "  mounted: no (locked while copied)\n")
	}
	fmt.Fprintf(w, "mount it read-only with: encvol mount %s MOUNTPOINT\n", r.Path)
}

func newSnapshotList(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list VOLUME [--json]",
		Short: "List the snapshots of a volume, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, _, err := a.snapshotVolume(cmd.Context(), args[0], false)
			if err != nil {
				return err
			}
			list, err := volume.ListSnapshots(v)
			if err != nil {
				return err
			}
			return printList(a.stdout, asJSON, list, "NAME\tCREATED\tENTRIES\tMOUNTED\tPATH", func(tw io.Writer, s volume.SnapshotInfo) {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", s.Name, fmtTime(s.Created), s.Entries, orDash(s.Mounted), s.Path)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func newSnapshotDelete(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete VOLUME SNAPSHOT",
		Short: "Delete a snapshot of a volume (refused while it is mounted)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, _, err := a.snapshotVolume(cmd.Context(), args[0], false)
			if err != nil {
				return err
			}
			s, err := volume.FindSnapshot(v, args[1])
			if err != nil {
				return targetError(err)
			}
			if err := volume.DeleteSnapshot(v, s); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "deleted snapshot %s (%s)\n", s.Manifest.Name, s.Path)
			return nil
		},
	}
}

func newSnapshotRestore(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "restore VOLUME SNAPSHOT",
		Short: "Put an unmounted volume back to a snapshot",
		Long: `Replace the backing directory of VOLUME with a copy of SNAPSHOT. The volume
must not be mounted (exit 6 otherwise). The snapshot's manifest must
authenticate under its key and name this volume. The current state is kept
until the restored copy is complete and in place; a restore that is
interrupted is finished or undone by running it again.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, client, err := a.snapshotVolume(ctx, args[0], true)
			if err != nil {
				return err
			}
			defer client.Close()
			s, err := volume.FindSnapshot(v, args[1])
			if err != nil {
				return targetError(err)
			}
			res, err := volume.RestoreSnapshot(ctx, client, v, s, a.copyBar(asJSON))
			if err != nil {
				return a.withRemedy(err, s.Header.KeyID, v.KMS)
			}
			if asJSON {
				return printJSON(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "restored volume %s (%s) to snapshot %s (%d entries, %s)\n",
				res.VolumeID, res.Backing, s.Manifest.Name, res.Copied.Entries, res.Method)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
