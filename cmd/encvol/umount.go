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
fusermount3 -u otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mp, err := volume.CanonicalMountpoint(args[0])
			if err != nil {
				return withCode(exitUsage, err)
			}
			sock := volume.SocketPath(mp)
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
			mounted, merr := volume.IsMounted(mp)
			if merr != nil {
				return merr
			}
			if !mounted {
				_ = os.Remove(sock)
				return fmt.Errorf("%s is not mounted", mp)
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

// waitGone polls until the kernel mount and the daemon's socket are gone.
func (a *app) waitGone(mp, sock string) error {
	deadline := time.Now().Add(umountWait)
	for {
		mounted, err := volume.IsMounted(mp)
		if err != nil {
			return err
		}
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
