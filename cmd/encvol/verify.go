package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newVerifyCommand) }

func newVerifyCommand(a *app) *cobra.Command {
	var drill, asJSON bool
	cmd := &cobra.Command{
		Use:   "verify (NAME | BACKING) [--drill] [--json]",
		Short: "Prove a volume is encrypted (canary scan, randomness) and, with --drill, that revoking its key stops I/O",
		Long: `Verify that a volume is encrypted. A random canary file is written through
the volume's mount (the running one, found through its control socket, or a
temporary mount made for the check), synced, and every backing file is then
searched for any 32-byte run of its content, its marker and its name; the
payload of the backing sector files is tested for randomness (chi-square
over byte frequencies, entropy, deflate ratio). The canary is removed.

--drill additionally disables the volume's key (customer keys only; the
service key is refused), measures how long the mount keeps serving the
canary, checks that a fresh mount fails, re-enables the key, measures how
long until reads resume without a remount and checks the canary reads back
intact. The key is re-enabled on every way out, including Ctrl-C.

Exit status: 0 when every check passes, 1 when one fails.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runVerify(cmd.Context(), args[0], drill, asJSON)
		},
	}
	cmd.Flags().BoolVar(&drill, "drill", false, "also disable and re-enable the key, measuring the gate (needs permission to disable the key)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON with every measurement")
	return cmd
}

func (a *app) runVerify(ctx context.Context, arg string, drill, asJSON bool) error {
	// The drill disables a key and may hold a temporary mount: a closed
	// terminal or a reader that went away (`| head`) must end in the same
	// clean-up as Ctrl-C, not in a kill by SIGHUP or SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	cfg, err := a.config()
	if err != nil {
		return err
	}
	target, err := cfg.ResolveVerify(arg)
	if err != nil {
		return targetError(err)
	}
	h := target.Header
	if err := keywrap.DisableCoreDumps(); err != nil {
		a.log.Warn().Err(err).Msg("cannot disable core dumps")
	}
	if target.Snapshot != "" {
		if drill {
			return usageError("%s is a snapshot: the drill needs a volume that takes writes; run it on the volume (`encvol verify VOLUME --drill`)", target.Snapshot)
		}
		return a.verifySnapshot(ctx, cfg, target, asJSON)
	}

	opt := volume.VerifyOptions{Backing: target.Backing, Header: h, KMS: target.KMS, Drill: drill, Log: a.log}
	// By backing directory, not volume ID: a snapshot of the volume, which
	// carries the same ID, may be mounted too.
	st, err := volume.FindMountOf(ctx, target.Backing)
	if err != nil {
		return err
	}
	kmsName, kmsCfg := target.KMS, target.KMSConfig
	if st != nil {
		if st.Gate != "open" {
			return fmt.Errorf("volume %s is mounted on %s but its key gate is closed (%s); fix the key first", h.VolumeID, st.Mountpoint, st.GateCause)
		}
		if st.ReadOnly {
			return fmt.Errorf("volume %s is mounted read-only on %s, so no canary can be written; unmount it (`encvol umount %s`) and verify again", h.VolumeID, st.Mountpoint, st.Mountpoint)
		}
		opt.Mountpoint = st.Mountpoint
		opt.OnRevoke = st.OnRevoke
		opt.KeyCheckInterval, _ = time.ParseDuration(st.KeyCheckInterval)
		sock := st.Socket
		opt.Status = func(ctx context.Context) (*volume.Status, error) { return volume.QueryStatus(ctx, sock) }
		if st.KMS != "" && st.KMS != kmsName {
			if n, c, err := cfg.KMSFor(st.KMS); err == nil {
				kmsName, kmsCfg = n, c
			}
		}
	} else {
		spec, m, done, err := a.temporaryMount(ctx, cfg, target)
		if err != nil {
			return err
		}
		defer done()
		opt.Mountpoint, opt.Temporary = spec.Mountpoint, true
		opt.OnRevoke, opt.KeyCheckInterval = spec.OnRevoke, spec.KeyCheckInterval
		opt.Status = func(context.Context) (*volume.Status, error) { s := m.Status(); return &s, nil }
		kmsName, kmsCfg = spec.KMS, spec.KMSConfig
	}
	opt.KMS = kmsName

	if drill {
		adm, err := kmsclient.NewAdmin(ctx, kmsName, kmsCfg)
		if err != nil {
			return a.withRemedy(fmt.Errorf("KMS %q: %w", kmsName, err), h.KeyID, kmsName)
		}
		defer adm.Close()
		opt.Admin = adm
		opt.FreshMount = func(ctx context.Context) error { return a.freshMount(ctx, target.Backing) }
	}
	if !asJSON && isTerminal(a.stdout) {
		opt.Progress = newProgress(a.stderr)
	}

	rep, err := volume.Verify(ctx, opt)
	if err != nil {
		if errors.Is(err, volume.ErrServiceKey) {
			return withCode(exitUsage, err)
		}
		return a.withRemedy(err, h.KeyID, kmsName)
	}
	return a.printVerify(rep, asJSON)
}

// printVerify prints a report and fails when a check failed.
func (a *app) printVerify(rep *volume.VerifyReport, asJSON bool) error {
	if asJSON {
		if err := printJSON(a.stdout, rep); err != nil {
			return err
		}
	} else {
		printVerifyReport(a.stdout, rep)
	}
	if !rep.Pass {
		return withCode(exitFailure, fmt.Errorf("verification of volume %s failed: %s", rep.VolumeID, strings.Join(rep.Failed(), ", ")))
	}
	return nil
}

// verifySnapshot verifies a snapshot through a temporary read-only mount.
func (a *app) verifySnapshot(ctx context.Context, cfg *volume.Config, target volume.VerifyTarget, asJSON bool) error {
	snap, err := volume.OpenSnapshot(target.Snapshot)
	if err != nil {
		return targetError(err)
	}
	st, err := volume.FindMountOf(ctx, target.Backing)
	if err != nil {
		return err
	}
	var opt volume.SnapshotVerifyOptions
	if st != nil {
		// Mounted already (read-only, as every snapshot): check that mount.
		opt = volume.SnapshotVerifyOptions{Mountpoint: st.Mountpoint, KMS: st.KMS,
			OnRevoke: st.OnRevoke, KeyCheckInterval: parseDuration(st.KeyCheckInterval)}
	} else {
		spec, _, done, err := a.temporaryMount(ctx, cfg, target)
		if err != nil {
			return err
		}
		defer done()
		opt = volume.SnapshotVerifyOptions{Mountpoint: spec.Mountpoint, Temporary: true, KMS: spec.KMS,
			OnRevoke: spec.OnRevoke, KeyCheckInterval: spec.KeyCheckInterval}
	}
	opt.Snapshot = snap
	if !asJSON && isTerminal(a.stdout) {
		opt.Progress = newProgress(a.stderr)
	}
	rep, err := volume.VerifySnapshot(ctx, opt)
	if err != nil {
		return err
	}
	return a.printVerify(rep, asJSON)
}

// temporaryMount mounts target on a new temporary directory in this
// process; done unmounts it and removes the directory.
func (a *app) temporaryMount(ctx context.Context, cfg *volume.Config, target volume.VerifyTarget) (volume.MountSpec, *volume.Mount, func(), error) {
	mnt, err := os.MkdirTemp("", "encvol-verify-")
	if err != nil {
		return volume.MountSpec{}, nil, nil, fmt.Errorf("temporary mountpoint: %w", err)
	}
	spec, err := cfg.TemporaryMountSpec(target, mnt)
	if err != nil {
		os.Remove(mnt)
		return spec, nil, nil, err
	}
	// The mount's own transition lines would interleave with the report;
	// they are warnings only at debug level.
	mlog := a.log
	if a.log.GetLevel() > zerolog.DebugLevel {
		mlog = a.log.Level(zerolog.ErrorLevel)
	}
	m, err := volume.MountTemporary(ctx, spec, mlog)
	if err != nil {
		os.Remove(mnt)
		return spec, nil, nil, a.withRemedy(err, target.Header.KeyID, spec.KMS)
	}
	done := func() {
		if err := volume.UnmountTemporary(m); err != nil {
			a.log.Error().Err(err).Str("path", mnt).Msg("temporary mount could not be unmounted")
		}
		os.Remove(mnt)
	}
	return spec, m, done, nil
}

func parseDuration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// freshMount runs `encvol mount BACKING TMP` as a separate process, exactly
// as a user would, and returns its error message. Should it succeed, the
// mount is undone at once.
func (a *app) freshMount(ctx context.Context, backing string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	mnt, err := os.MkdirTemp("", "encvol-verify-fresh-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	var args []string
	if a.configPath != "" {
		abs, err := filepath.Abs(a.configPath)
		if err != nil {
			return err
		}
		args = append(args, "--config", abs)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, exe, append(args, "mount", backing, mnt)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out.String()), "encvol: "))
		if msg == "" {
			msg = err.Error()
		}
		return errors.New(msg)
	}
	um := exec.Command(exe, append(args, "umount", mnt)...)
	if b, err := um.CombinedOutput(); err != nil {
		a.log.Error().Err(err).Str("path", mnt).Str("output", string(b)).Msg("could not unmount the fresh mount")
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func printVerifyReport(w io.Writer, r *volume.VerifyReport) {
	mount := r.Mountpoint
	if r.TemporaryMount {
		mount += " (temporary mount)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "volume\t%s\n", r.VolumeID)
	fmt.Fprintf(tw, "backing\t%s\n", r.Backing)
	fmt.Fprintf(tw, "mount\t%s\n", mount)
	fmt.Fprintf(tw, "key\t%s (KMS %q)\n", r.KeyID, r.KMS)
	fmt.Fprintf(tw, "format\t%s, %d-byte sectors, %s names\n", r.Cipher, r.SectorSize, r.NameMode)
	fmt.Fprintf(tw, "gate\ton_revoke %s, key_check_interval %s\n", r.OnRevoke, time.Duration(r.KeyCheckInterval*float64(time.Millisecond)))
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		fmt.Fprintf(tw, "%s\t%s\n", k, r.Extra[k])
	}
	c := r.Canary
	if c.Name != "" {
		fmt.Fprintf(tw, "canary\t%s, %d bytes, marker %s, sha256 %.16s…, written + fsynced in %.0f ms\n", c.Name, c.Size, c.Marker, c.SHA256, c.WriteMS)
	}
	if c.BackingFile != "" {
		fmt.Fprintf(tw, "stored as\t%s (%d bytes)\n", c.BackingFile, c.BackingSize)
	}
	if d := r.Drill; d != nil {
		fmt.Fprintf(tw, "drill\tdisable-key %.0f ms, closed after %.0f ms (%d reads), fresh mount refused in %.0f ms, enable-key %.0f ms, reopened after %.0f ms, total %.0f ms\n",
			d.DisableCallMS, d.CloseMS, d.ProbesClosing, d.FreshMountMS, d.EnableCallMS, d.ReopenMS, d.TotalMS)
		if d.GateCause != "" {
			fmt.Fprintf(tw, "gate cause\t%s\n", d.GateCause)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, ch := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(ch.Result), ch.Name, ch.Detail)
	}
	tw.Flush()
	for _, h := range r.Scan.Hits {
		if h.Offset < 0 {
			fmt.Fprintf(w, "  found %s in the name of %s\n", h.Kind, h.Path)
		} else {
			fmt.Fprintf(w, "  found canary %s at offset %d of %s\n", h.Kind, h.Offset, h.Path)
		}
	}
	if r.Drill != nil && r.Drill.Error != "" {
		fmt.Fprintf(w, "  drill: %s\n", r.Drill.Error)
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n%s: %d checks, %d failed, %.1f s\n", verdict, len(r.Checks), len(r.Failed()), r.DurationMS/1000)
}
