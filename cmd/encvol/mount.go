package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// envReadyFD tells a re-executed `encvol mount` that it is the daemon and
// which inherited descriptor carries its readiness report to the parent.
const envReadyFD = "ENCVOL_MOUNT_READY_FD"

// unlockTimeout bounds the pre-mount unwrap so an unusable key or a dead
// KMS is reported promptly.
const unlockTimeout = 20 * time.Second

// readyTimeout bounds how long the parent waits for the daemon.
const readyTimeout = 2 * time.Minute

func init() { subcommands = append(subcommands, newMountCommand) }

func newMountCommand(a *app) *cobra.Command {
	var foreground, allowSwap bool
	var opts []string
	cmd := &cobra.Command{
		Use:   "mount (NAME | BACKING MOUNTPOINT) [-f] [-o OPTS]",
		Short: "Unlock a volume with its KMS key and mount it",
		Long: `Mount a volume: NAME is a [volumes.NAME] table of the configuration, or give
the backing directory and the mountpoint. A snapshot directory (encvol
snapshot create) mounts read-only in place of a backing directory. The data key is unwrapped before
anything is mounted; an unusable key fails at once (exit 3, or 4 when the
KMS cannot be reached). By default the mount runs as a background daemon and
this command returns once the mount answers; -f keeps it in the foreground
(SIGINT/SIGTERM unmount).

Options (-o, comma separated, repeatable): config=FILE, kms=NAME,
key_check_interval=DUR, offline_grace=DUR, on_revoke=eio|hang,
cache_timeout=DUR (how long the kernel keeps names and attributes; default
1m, 0s..1h, 0s asks every time), ro, rw,
allow_other, debug, foreground; the mount flags noexec, noatime, nodiratime,
nosymfollow, sync (and exec, atime, diratime, relatime, symfollow, async);
noxattr to refuse extended attributes, so the kernel stops asking for them
(fewer round trips for ls -l and untar; stored ones stay, unseen);
nonempty to mount over a directory that holds files (refused otherwise);
allow_swap (or --allow-swap) to mount although the keys cannot be locked in
memory (refused otherwise: they could be written to swap).
Mounts are always nosuid,nodev: suid and dev are refused, since a
set-user-ID file or device node in a volume others can write would grant
whoever planted it its rights. What mount(8), fstab and systemd pass for
themselves (defaults, noauto, nofail, _netdev, user, x-*, comment=, ...) is
accepted; any other option, or one encvol cannot honour (strictatime,
dirsync, lazytime, ...), is refused by name.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if allowSwap {
				opts = append(opts, "allow_swap")
			}
			return a.runMount(cmd.Context(), args, strings.Join(opts, ","), foreground)
		},
	}
	cmd.Flags().BoolVarP(&foreground, "foreground", "f", false, "stay in the foreground")
	cmd.Flags().StringArrayVarP(&opts, "options", "o", nil, "mount options (see above)")
	cmd.Flags().BoolVar(&allowSwap, "allow-swap", false, "mount even if the keys cannot be locked in memory (they could be written to swap)")
	return cmd
}

func (a *app) runMount(ctx context.Context, args []string, optString string, foreground bool) error {
	readyFD := -1
	if v := os.Getenv(envReadyFD); v != "" {
		fd, err := strconv.Atoi(v)
		if err != nil || fd < 3 {
			return usageError("bad %s=%q", envReadyFD, v)
		}
		readyFD = fd
		// Hook commands and anything else we start must not see it.
		os.Unsetenv(envReadyFD)
	}
	var ready *os.File
	if readyFD >= 0 {
		ready = os.NewFile(uintptr(readyFD), "ready")
		defer ready.Close()
	}
	err := a.mount(ctx, args, optString, foreground, ready)
	if err != nil && ready != nil {
		// The parent prints this; our stderr is the log file.
		fmt.Fprintf(ready, "err %d\n%s\n", exitCode(err), a.explain(err))
	}
	return err
}

func (a *app) mount(ctx context.Context, args []string, optString string, foreground bool, ready *os.File) error {
	o, err := volume.ParseMountOptions(optString)
	if err != nil {
		return withCode(exitUsage, err)
	}
	if o.Config != "" && a.configPath == "" {
		a.configPath = o.Config
	}
	cfg, err := a.config()
	if err != nil {
		return err
	}
	spec, err := cfg.ResolveMount(args, o)
	if err != nil {
		return targetError(err)
	}
	spec.Foreground = spec.Foreground || foreground
	if err := keywrap.DisableCoreDumps(); err != nil {
		a.log.Warn().Err(err).Msg("cannot disable core dumps")
	}
	if ready == nil {
		// Refused here before the key is tried; a daemon leaves the
		// check to MountVolume, its parent did this one.
		if err := volume.CheckMountTarget(spec.Backing, spec.Mountpoint, spec.NonEmpty); err != nil {
			return err
		}
	}

	if ready == nil && !spec.Foreground {
		// Parent: prove the key works before starting anything, so the
		// common failures are reported here, promptly, with the right
		// exit code. A disabled key is news even when the volume is
		// mounted elsewhere, so the lock is tried after it. With a
		// key-check blob the KMS is asked without sending the data key,
		// which then crosses the network once, to the daemon (whose
		// errors, a tampered header included, come back through the
		// ready pipe); a version 1 header is unlocked here as well.
		if err := a.probeKey(ctx, spec); err != nil {
			return err
		}
		if err := volume.CheckNotInUse(spec.Backing); err != nil {
			return err
		}
		return a.daemonize(spec, args, optString)
	}
	return a.serve(ctx, spec, ready)
}

// probeKey asks the volume's KMS whether the mount could unwrap its key
// (volume.ProbeKey). A version 1 header is unlocked for that, so its MAC,
// pin and key memory are checked here too.
func (a *app) probeKey(ctx context.Context, spec volume.MountSpec) error {
	ctx, cancel := context.WithTimeout(ctx, unlockTimeout)
	defer cancel()
	client, err := kmsclient.New(ctx, spec.KMS, spec.KMSConfig)
	if err != nil {
		return fmt.Errorf("KMS %q: %w", spec.KMS, err)
	}
	defer client.Close()
	if len(spec.Header.KeyCheck) > 0 {
		if err := volume.ProbeKey(ctx, client, spec.KMS, spec.Backing, spec.Header); err != nil {
			return a.withRemedy(err, spec.Header.KeyID, spec.KMS)
		}
		return nil
	}
	u, err := volume.UnlockHeader(ctx, client, spec.KMS, spec.Backing, spec.Header)
	if err != nil {
		return a.withRemedy(err, spec.Header.KeyID, spec.KMS)
	}
	defer u.Close()
	a.recordPin(spec)
	// Reported here once; the daemon logs its own allow_swap warning.
	return volume.CheckKeyMemory(u, spec.AllowSwap, zerolog.Nop())
}

// serve mounts in this process and serves until unmounted.
func (a *app) serve(ctx context.Context, spec volume.MountSpec, ready *os.File) error {
	log := a.log
	logFile := ""
	if ready != nil {
		// Daemon: our stderr is the log file the parent opened; JSON
		// lines are what log shippers want.
		lvl := a.log.GetLevel()
		log = zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Int("pid", os.Getpid()).Logger()
		logFile = volume.LogPath(spec.Mountpoint)
	}
	uctx, cancel := context.WithTimeout(ctx, unlockTimeout)
	client, err := kmsclient.New(uctx, spec.KMS, spec.KMSConfig)
	if err != nil {
		cancel()
		return fmt.Errorf("KMS %q: %w", spec.KMS, err)
	}
	u, err := volume.UnlockHeader(uctx, client, spec.KMS, spec.Backing, spec.Header)
	cancel()
	if err != nil {
		client.Close()
		return a.withRemedy(err, spec.Header.KeyID, spec.KMS)
	}
	a.recordPin(spec)
	if d, ok := client.(kmsclient.SealKeyDropper); ok && len(spec.Header.KeyCheck) > 0 {
		// The key checks read key states from here on; a version 1
		// header's checks unwrap the data key and keep the seal key.
		d.DropSealKey()
	}
	// Opt-in (ENCVOL_CPUPROFILE / ENCVOL_MEMPROFILE): for tuning the daemon.
	stopProfiling := fusefs.StartProfiling(log)
	defer stopProfiling()
	spec.OwnProcess = true // this process serves the one mount and nothing else
	m, err := volume.MountVolume(context.Background(), spec, client, u, log, logFile)
	if err != nil {
		client.Close()
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if ready != nil {
		fmt.Fprintf(ready, "ok\n%s\n", spec.Header.VolumeID)
		ready.Close()
	} else {
		fmt.Fprintf(a.stderr, "mounted %s on %s (volume %s); Ctrl-C or `encvol umount %s` unmounts\n",
			spec.Source(), spec.Mountpoint, spec.Header.VolumeID, spec.Mountpoint)
	}
	for {
		select {
		case <-m.Done():
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				continue // a closed terminal is no reason to drop a volume
			}
			log.Info().Str("signal", s.String()).Msg("unmounting on signal")
			if err := m.Unmount(); err != nil {
				log.Error().Err(err).Msg("unmount failed; still serving (close the files that keep it busy and retry)")
			}
		}
	}
}

// daemonize starts `encvol mount` again as a detached daemon and waits for
// it to report the mount answering (or its error).
func (a *app) daemonize(spec volume.MountSpec, args []string, optString string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if _, err := volume.EnsureSocketDir(); err != nil {
		return err
	}
	logPath := volume.LogPath(spec.Mountpoint)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()

	// The daemon runs in / so it keeps no directory busy; every path it
	// gets is absolute.
	var childArgs []string
	if a.configPath != "" {
		abs, err := filepath.Abs(a.configPath)
		if err != nil {
			pw.Close()
			return err
		}
		childArgs = append(childArgs, "--config", abs)
	}
	if a.readableConfig {
		childArgs = append(childArgs, "--allow-readable-config")
	}
	childArgs = append(childArgs, "--log-level", a.logLevel, "mount")
	switch {
	case len(args) == 1:
		childArgs = append(childArgs, args[0])
	case spec.Snapshot != "":
		childArgs = append(childArgs, spec.Snapshot, spec.Mountpoint)
	default:
		childArgs = append(childArgs, spec.Backing, spec.Mountpoint)
	}
	if optString != "" {
		childArgs = append(childArgs, "-o", optString)
	}
	cmd := exec.Command(exe, childArgs...)
	cmd.Dir = "/"
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	cmd.Env = append(os.Environ(), envReadyFD+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start mount daemon: %w", err)
	}
	pw.Close()
	pid := cmd.Process.Pid
	// Reap the child if it dies early; once it is the daemon it outlives us.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	type report struct {
		lines []string
		err   error
	}
	got := make(chan report, 1)
	go func() {
		b, err := io.ReadAll(bufio.NewReader(pr))
		got <- report{strings.Split(strings.TrimRight(string(b), "\n"), "\n"), err}
	}()
	var r report
	select {
	case r = <-got:
	case <-time.After(readyTimeout):
		return fmt.Errorf("the mount daemon (pid %d) did not report the mount within %s; see %s", pid, readyTimeout, logPath)
	}
	switch {
	case len(r.lines) > 0 && r.lines[0] == "ok":
		id := ""
		if len(r.lines) > 1 {
			id = r.lines[1]
		}
		fmt.Fprintf(a.stdout, "mounted %s on %s (volume %s, daemon pid %d, log %s)\n", spec.Source(), spec.Mountpoint, id, pid, logPath)
		return nil
	case len(r.lines) > 1 && strings.HasPrefix(r.lines[0], "err "):
		code, _ := strconv.Atoi(strings.TrimPrefix(r.lines[0], "err "))
		if code == 0 {
			code = exitFailure
		}
		<-exited
		return withCode(code, errors.New(strings.Join(r.lines[1:], "\n")))
	}
	werr := <-exited
	return fmt.Errorf("the mount daemon exited (%v) before the mount appeared; see %s%s", werr, logPath, tail(logPath))
}

// tail returns the last lines of the daemon log for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return ":\n  " + strings.Join(lines, "\n  ")
}

// withRemedy adds what to do about a KMS failure (unless the error already
// says it) and points the suggested commands at the same configuration.
func (a *app) withRemedy(err error, keyRef, kmsName string) error {
	var ke *volume.KeyError
	if !errors.As(err, &ke) && !errors.Is(err, keywrap.ErrHeaderCorrupt) {
		if fix := kmsclient.Remedy(err, keyRef, kmsName); fix != "" {
			err = fmt.Errorf("%w; %s", err, fix)
		}
	}
	return a.withConfigFlag(err)
}

// withConfigFlag carries --config into the commands err suggests, so they
// work as printed.
func (a *app) withConfigFlag(err error) error {
	if a.configPath == "" || err == nil {
		return err
	}
	return &reworded{msg: strings.ReplaceAll(err.Error(), "`encvol ", "`encvol --config "+a.configPath+" "), err: err}
}

// reworded changes an error's text but keeps what errors.Is/As see.
type reworded struct {
	msg string
	err error
}

func (r *reworded) Error() string { return r.msg }
func (r *reworded) Unwrap() error { return r.err }

// explain is the text the parent prints for a daemon failure.
func (a *app) explain(err error) string { return err.Error() }

// recordPin pins the volume's ID and key for its backing directory once
// its header has passed the MAC check (see volume/pin.go). A pin that
// cannot be written weakens a later check but must not stop the mount.
func (a *app) recordPin(spec volume.MountSpec) {
	cfg, err := a.config()
	if err == nil {
		err = cfg.RecordPin(spec.Backing, spec.Header)
	}
	if err != nil {
		a.log.Warn().Err(err).Str("backing", spec.Backing).Msg("cannot record the volume's pin; a replaced header will not be noticed at the next mount")
	}
}
