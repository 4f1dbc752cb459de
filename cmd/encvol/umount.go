package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/volume"
)

// umountWait bounds how long umount waits for the daemon to finish after
// the kernel mount is gone (it zeroizes keys and removes its socket).
const umountWait = 15 * time.Second

func init() { subcommands = append(subcommands, newUmountCommand) }

func newUmountCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a volume: flush, zeroize its keys and stop its daemon",
		Long: `Ask the daemon serving MOUNTPOINT to unmount; it flushes, zeroizes the keys
and exits, and this command returns once the mount is gone. When no daemon
answers (it was killed), the stale mount is removed with umount(2) as root or
fusermount3 -u otherwise.

Only encvol mounts (type fuse.encvol in /proc/self/mountinfo) are touched:
any other file system at MOUNTPOINT is refused (exit 2), and a MOUNTPOINT
where nothing is mounted exits 5.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mp, err := volume.CanonicalMountpoint(args[0])
			if err != nil {
				return withCode(exitUsage, err)
			}
			sock := volume.SocketPath(mp)
			if fstype, err := encvolMountAt(mp, "", umountHint); err != nil {
				if fstype == "" {
					// A socket nobody answers on is left from a dead daemon;
					// one that answers belongs to a mount being set up.
					if _, qerr := volume.QueryStatus(cmd.Context(), sock); volume.IsStale(qerr) {
						_ = os.Remove(sock)
					}
				}
				return err
			}
			err = volume.RequestUnmount(cmd.Context(), sock)
			if err == nil {
				return a.waitGone(mp, sock)
			}
			if !volume.IsStale(err) {
				if errors.Is(err, syscall.EACCES) {
					return fmt.Errorf("control socket %s: %w (the mount belongs to another user; run as that user or root)", sock, err)
				}
				return fmt.Errorf("unmount %s: %w (if files are open on it, close them: `fuser -vm %s`)", mp, err, mp)
			}
			// No daemon: the mount is stale. Look again right before
			// removing it, so only an encvol mount is ever removed.
			if _, err := encvolMountAt(mp, "", umountHint); err != nil {
				return err
			}
			how, uerr := forceUnmount(mp)
			if uerr != nil {
				return fmt.Errorf("no encvol daemon answers for %s and %s failed: %w", mp, how, uerr)
			}
			_ = os.Remove(sock)
			fmt.Fprintf(a.stdout, "no encvol daemon answered for %s; removed the stale mount with %s\n", mp, how)
			return nil
		},
	}
}

// umountHint follows the refusal of a mount of another type.
const umountHint = "encvol umount only unmounts encvol mounts (use umount(8) for others)"

// encvolMountAt returns the type of the topmost mount at mp, and refuses
// any but an encvol mount: nothing there (exit 5; notMounted, if given,
// says more) or another type (exit 2, naming it; hint, if given, after).
func encvolMountAt(mp, notMounted, hint string) (string, error) {
	fstype, err := volume.MountType(mp)
	switch {
	case err != nil:
		return fstype, err
	case fstype == volume.FSType:
		return fstype, nil
	case fstype == "":
		msg := mp + " is not mounted"
		if notMounted != "" {
			msg += ": " + notMounted
		}
		return fstype, withCode(exitNotMounted, errors.New(msg))
	}
	msg := fmt.Sprintf("%s is a %s mount, not an encvol volume", mp, fstype)
	if hint != "" {
		msg += "; " + hint
	}
	return fstype, withCode(exitUsage, errors.New(msg))
}

// waitGone polls until the encvol mount and the daemon's socket are gone.
// What was mounted below it may stay: only the encvol mount counts.
func (a *app) waitGone(mp, sock string) error {
	deadline := time.Now().Add(umountWait)
	for {
		fstype, err := volume.MountType(mp)
		if err != nil {
			return err
		}
		mounted := fstype == volume.FSType
		_, serr := os.Stat(sock)
		if !mounted && errors.Is(serr, os.ErrNotExist) {
			fmt.Fprintf(a.stdout, "unmounted %s\n", mp)
			return nil
		}
		if time.Now().After(deadline) {
			if mounted {
				return fmt.Errorf("%s is still mounted %s after the daemon accepted the unmount", mp, umountWait)
			}
			return fmt.Errorf("%s is unmounted but its daemon has not exited after %s (socket %s)", mp, umountWait, sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forceUnmount removes a mount whose daemon is gone.
func forceUnmount(mp string) (string, error) {
	if os.Geteuid() == 0 {
		return "umount(2)", syscall.Unmount(mp, 0)
	}
	bin := "fusermount3"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "fusermount"
	}
	out, err := exec.Command(bin, "-u", mp).CombinedOutput()
	if err != nil {
		return bin + " -u", fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return bin + " -u", nil
}
