package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newFsckCommand) }

func newFsckCommand(a *app) *cobra.Command {
	var repair, asJSON bool
	var workers int
	cmd := &cobra.Command{
		Use:   "fsck (VOLUME | SNAPSHOT) [--repair] [--json]",
		Short: "Check every sector, name and attribute of an unmounted volume or snapshot; --repair moves what cannot be read into lost+found",
		Long: `Check a volume (a [volumes.NAME] or a backing directory) or a snapshot
with its data key, which the KMS unwraps: every stored sector is read and
authenticated, every name, symlink target (in format version 4 bound to its
symlink) and extended attribute decrypted, every directory's ID file, stored mode and owner, and hard-link count
checked, and leftovers of interrupted writes (temporary files, long-name
side files without their entry) found. The volume must not be mounted; it
is locked while it is checked. Files are checked on one worker per CPU.

The report names each damaged file by its plaintext path (the backing path
when its name does not decrypt) with the numbers of its failing sectors;
--json prints it as JSON with the actions, counts, duration and throughput.

--repair never destroys evidence. What cannot be read moves into the
volume's lost+found directory with its ciphertext kept: a file with damaged
sectors (its readable sectors still read through the mount), an entry whose
name does not decrypt (its content and, for a directory, everything in it
become readable again under the new name; in format version 4 a symlink
whose name does not decrypt is removed instead, as its target is bound to
that name). A directory whose ID file is
missing or damaged gets a new one. Attributes, stored modes and symlink
targets that do not decrypt are removed after their bytes are written to a
repair log in lost+found (encrypted like every file of the volume).
Temporary files and orphaned side files are removed after they are
reported. Every action is reported. A file quarantined in lost+found is
reported as quarantined by later checks as long as its damage does not
change; it no longer counts as an error.

Exit status (as e2fsck's; they add up, so 5 is "some corrected, some left"):
  0   no errors
  1   errors were found and all corrected
  4   errors were left uncorrected (run again with --repair)
  8   operational error: the check could not be done (the volume is mounted,
      its key is unusable, the KMS cannot be reached, I/O)
  16  usage error
  32  cancelled (Ctrl-C)`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return withCode(volume.FsckUsage, fmt.Errorf("fsck takes one volume or snapshot, got %d arguments; see `encvol fsck --help`", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runFsck(cmd.Context(), args[0], volume.FsckOptions{Repair: repair, Workers: workers}, asJSON)
		},
	}
	// Usage problems exit 16 here, the shared setup's (a bad --config,
	// --log-level) included.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(volume.FsckUsage, err) })
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		if err := c.Root().PersistentPreRunE(c, args); err != nil {
			return fsckError(err)
		}
		return nil
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "move what cannot be read into lost+found, remove leftovers, fix what can be fixed")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().IntVar(&workers, "workers", 0, "files checked in parallel (default: one per CPU)")
	return cmd
}

func (a *app) runFsck(ctx context.Context, arg string, opt volume.FsckOptions, asJSON bool) error {
	cfg, err := a.config()
	if err != nil {
		return withCode(volume.FsckUsage, err)
	}
	target, err := cfg.ResolveVerify(arg)
	if err != nil {
		return fsckError(targetError(err))
	}
	if err := keywrap.DisableCoreDumps(); err != nil {
		a.log.Warn().Err(err).Msg("cannot disable core dumps")
	}
	// Refused before the KMS is asked: a mounted volume cannot be checked.
	if err := volume.CheckNotInUse(target.Backing); err != nil {
		return fsckError(inUseForFsck(err))
	}
	kctx, cancel := context.WithTimeout(ctx, unlockTimeout)
	client, err := kmsclient.New(kctx, target.KMS, target.KMSConfig)
	cancel()
	if err != nil {
		return fsckError(a.withRemedy(fmt.Errorf("KMS %q: %w", target.KMS, err), target.Header.KeyID, target.KMS))
	}
	defer client.Close()
	opt.UnlockTimeout = unlockTimeout
	opt.Progress = newProgress(a.stderr)
	stopProfile := a.profile()
	rep, err := volume.FsckVolume(ctx, client, target.KMS, target.Backing, target.Header, opt)
	stopProfile()
	if err != nil {
		return fsckError(a.withRemedy(inUseForFsck(err), target.Header.KeyID, target.KMS))
	}
	if asJSON {
		if err := printJSON(a.stdout, rep); err != nil {
			return withCode(volume.FsckOperational, err)
		}
	} else {
		printFsckReport(a.stdout, rep)
	}
	switch {
	case rep.ExitCode == volume.FsckClean:
		return nil
	case rep.ExitCode&volume.FsckUncorrected != 0:
		fix := fmt.Sprintf("run `encvol fsck %s --repair` to quarantine them", arg)
		if opt.Repair {
			fix = "see the failed actions in the report"
		}
		return withCode(rep.ExitCode, fmt.Errorf("volume %s: %d problem(s) left uncorrected; %s", rep.Backing, rep.Counts.Uncorrected, fix))
	}
	return withCode(rep.ExitCode, errQuiet)
}

// inUseForFsck says why a volume that is in use cannot be checked and
// what to do; other errors pass.
func inUseForFsck(err error) error {
	var ie *volume.InUseError
	if !errors.As(err, &ie) {
		return err
	}
	if ie.Mountpoint != "" {
		return fmt.Errorf("volume %s is mounted on %s: fsck checks only unmounted volumes; unmount it with `encvol umount %s` (or check a snapshot of it) and run fsck again", ie.Backing, ie.Mountpoint, ie.Mountpoint)
	}
	holder := "another encvol process"
	if ie.PID != 0 {
		holder = fmt.Sprintf("process %d", ie.PID)
	}
	return fmt.Errorf("volume %s is in use by %s: fsck needs it to itself; wait for that to finish and run fsck again", ie.Backing, holder)
}

func printFsckReport(w io.Writer, r *volume.FsckReport) {
	fmt.Fprintf(w, "fsck of volume %s (%s), %s names\n", r.VolumeID, r.Backing, r.NameMode)
	fmt.Fprintf(w, "checked %d entries (%d files, %d directories, %d symlinks, %d other): %s authenticated in %.2f s (%s/s, %d workers)\n",
		r.Entries, r.Files, r.Dirs, r.Symlinks, r.Others, volume.HumanBytes(r.Bytes), r.Duration, volume.HumanBytes(int64(r.Throughput)), r.Workers)
	if len(r.Findings) > 0 {
		fmt.Fprintln(w)
	}
	for _, f := range r.Findings {
		fixed := ""
		if f.Fixed {
			fixed = " [fixed]"
		}
		fmt.Fprintf(w, "%-11s %s: %s%s\n", strings.ToUpper(f.Severity), f.Where(), f.Detail, fixed)
	}
	if len(r.Actions) > 0 {
		fmt.Fprintln(w, "\nrepair:")
		for _, a := range r.Actions {
			fmt.Fprintf(w, "  %s\n", a.String())
		}
	}
	c := r.Counts
	fmt.Fprintln(w)
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "clean: no problems found")
		return
	}
	fmt.Fprintf(w, "%d error(s), %d leftover(s), %d warning(s), %d quarantined earlier: %d corrected, %d left uncorrected\n",
		c.Errors, c.Leftovers, c.Warnings, c.Quarantined, c.Corrected, c.Uncorrected)
}
