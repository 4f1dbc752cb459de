package main

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newStatusCommand) }

func newStatusCommand(a *app) *cobra.Command {
	var asJSON, ops bool
	cmd := &cobra.Command{
		Use:   "status [MOUNTPOINT] [--json] [--ops]",
		Short: "Show mounted volumes: key, key state, gate, last key check, I/O counters",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var list []*volume.Status
			if ops && len(args) == 0 {
				return withCode(exitUsage, fmt.Errorf("--ops needs a MOUNTPOINT: encvol status --ops MOUNTPOINT"))
			}
			if len(args) == 1 {
				mp, err := volume.CanonicalMountpoint(args[0])
				if err != nil {
					return withCode(exitUsage, err)
				}
				st, err := volume.QueryStatus(ctx, volume.SocketPath(mp))
				if err != nil {
					if volume.IsStale(err) {
						return staleStatusError(mp)
					}
					return fmt.Errorf("status of %s: %w", mp, err)
				}
				switch {
				case ops && asJSON:
					return printJSON(a.stdout, st.Ops)
				case ops:
					return printOps(a, st.Ops)
				case asJSON:
					return printJSON(a.stdout, st)
				}
				printStatusLong(a, st)
				return nil
			}
			socks, err := volume.ListSockets()
			if err != nil {
				return err
			}
			served := map[string]bool{} // sockets of live daemons, answering or not
			for _, s := range socks {
				st, err := volume.QueryStatus(ctx, s)
				if err != nil {
					if volume.IsStale(err) {
						_ = os.Remove(s) // the daemon died without cleaning up
						continue
					}
					served[s] = true
					a.log.Warn().Err(err).Str("path", s).Msg("control socket does not answer")
					continue
				}
				served[s] = true
				list = append(list, st)
			}
			mounts, err := volume.EncvolMounts()
			if err != nil {
				a.log.Warn().Err(err).Msg("cannot look for mounts whose daemon is gone")
			}
			for _, m := range mounts {
				if !served[volume.SocketPath(m.Mountpoint)] {
					list = append(list, &volume.Status{Mountpoint: m.Mountpoint, Backing: m.Source, Gate: "gone", Orphaned: true})
				}
			}
			if asJSON {
				if list == nil {
					list = []*volume.Status{}
				}
				return printJSON(a.stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(a.stdout, "no encvol volumes are mounted")
				return nil
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "MOUNTPOINT\tVOLUME\tKEY\tKEY STATE\tGATE\tLAST CHECK\tTRANSITIONS\tREAD\tWRITTEN\tPID")
			var orphans []string
			for _, st := range list {
				if st.Orphaned {
					fmt.Fprintf(tw, "%s\t-\t-\t-\tdaemon gone\t-\t-\t-\t-\t-\n", st.Mountpoint)
					orphans = append(orphans, st.Mountpoint)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", st.Mountpoint, st.VolumeID, st.KeyID, st.KeyState,
					st.Gate, ago(st.LastCheck), st.Transitions, volume.HumanBytes(st.IO.BytesRead), volume.HumanBytes(st.IO.BytesWritten), st.PID)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, mp := range orphans {
				fmt.Fprintf(a.stdout, "\n%s: its encvol daemon is gone (killed or crashed), so the mount answers nothing; `encvol umount %s` removes it.\n", mp, mp)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&ops, "ops", false, "print the FUSE requests the mount has served, by opcode (with --json: an object opcode -> count)")
	return cmd
}

// printOps prints request counts, most frequent first: what a workload
// costs in round trips to the daemon.
func printOps(a *app, ops map[string]uint64) error {
	names := make([]string, 0, len(ops))
	var total uint64
	for k, v := range ops {
		names = append(names, k)
		total += v
	}
	sort.Slice(names, func(i, j int) bool {
		if ops[names[i]] != ops[names[j]] {
			return ops[names[i]] > ops[names[j]]
		}
		return names[i] < names[j]
	})
	tw := newTable(a.stdout)
	fmt.Fprintln(tw, "OPCODE\tREQUESTS")
	for _, k := range names {
		fmt.Fprintf(tw, "%s\t%d\n", k, ops[k])
	}
	fmt.Fprintf(tw, "total\t%d\n", total)
	return tw.Flush()
}

// staleStatusError explains a mountpoint without a daemon: an encvol mount
// left by a dead daemon, another file system, or nothing at all.
func staleStatusError(mp string) error {
	if _, err := encvolMountAt(mp, "no encvol daemon serves it", ""); err != nil {
		return err
	}
	return fmt.Errorf("%s is mounted but its encvol daemon is gone (killed or crashed): the mount answers nothing; run `encvol umount %s`", mp, mp)
}

func printStatusLong(a *app, st *volume.Status) {
	tw := newTable(a.stdout)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	row("mountpoint", st.Mountpoint)
	if st.Name != "" {
		row("name", st.Name)
	}
	row("volume", st.VolumeID)
	if st.Snapshot != "" {
		row("snapshot", st.Snapshot+" (read-only)")
	}
	row("backing", st.Backing)
	row("kms", st.KMS)
	row("key", st.KeyID)
	row("key state", st.KeyState)
	gate := st.Gate
	if st.GateCause != "" && st.Gate != "open" {
		gate += " (" + st.GateCause + ")"
	}
	row("gate", gate)
	row("last key check", fmt.Sprintf("%s (%s, %.1f ms)", ago(st.LastCheck), st.LastResult, st.LastLatencyMS))
	row("checks / transitions", fmt.Sprintf("%d / %d", st.Checks, st.Transitions))
	row("check interval / grace", st.KeyCheckInterval+" / "+st.OfflineGrace)
	row("on revoke", st.OnRevoke)
	row("read", fmt.Sprintf("%s in %d calls", volume.HumanBytes(st.IO.BytesRead), st.IO.Reads))
	row("written", fmt.Sprintf("%s in %d calls", volume.HumanBytes(st.IO.BytesWritten), st.IO.Writes))
	row("errors / refused", fmt.Sprintf("%d / %d", st.IO.Errors, st.IO.GateRefusals))
	row("open backing files", fmt.Sprintf("%d", st.IO.OpenFiles))
	row("daemon", fmt.Sprintf("pid %d since %s", st.PID, st.Started.Format(time.RFC3339)))
	if st.LogFile != "" {
		row("log", st.LogFile)
	}
	tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}
