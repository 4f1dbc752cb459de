package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/volume"
)

func init() { subcommands = append(subcommands, newImportCommand) }

func newImportCommand(a *app) *cobra.Command {
	var f targetFlags
	var all, plaintextNames bool
	cmd := &cobra.Command{
		Use:   "import PLAIN_DIR (NAME | --backing DIR) [--kms NAME] [--key KEY] [--resume] [--json] | import --all [--json]",
		Short: "Convert a plaintext directory into a new encrypted volume",
		Long: `Import the plaintext tree PLAIN_DIR into a new volume (created in NAME's
backing directory, or --backing DIR, with a new data key under KEY). Modes,
owners, times, symlinks, hard links, holes of sparse files, user.* extended
attributes, FIFOs, sockets and (as root) device nodes are kept. PLAIN_DIR is
only read, never changed.

The work runs in parallel on every core and shows progress. It can be
stopped at any time (or run out of space): the target then carries a marker
that keeps it from being mounted, and running the same command again (or
with --resume) finishes it. When done, every file is read back and compared
with PLAIN_DIR and the volume is mounted once; a difference fails the
command and names the file.

--all converts every [volumes.NAME] of the configuration that has
import_from = "DIR", one after the other, and prints a summary table; the
exit status is non-zero if any of them failed.`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.opt.PlaintextNames = plaintextNames
			if all {
				if len(args) > 0 || anyChanged(cmd, "backing", "kms", "key", "sector-size", "resume", "plaintext-names") {
					return usageError("--all takes no directory, volume or target flags: it imports every [volumes.NAME] that has import_from, as configured")
				}
				return a.runImportAll(cmd.Context(), f.asJSON)
			}
			switch len(args) {
			case 0:
				return usageError("give the plaintext directory to import, and a volume NAME or --backing DIR; or --all")
			case 1:
				if f.opt.Backing == "" {
					return usageError("give a volume NAME or --backing DIR for the new volume after %s", args[0])
				}
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return a.runImport(cmd.Context(), args[0], name, &f)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&plaintextNames, "plaintext-names", false, "store file names unencrypted in the new volume (debugging only)")
	cmd.Flags().BoolVar(&all, "all", false, "import every [volumes.NAME] of the configuration that has import_from")
	return cmd
}

func (a *app) runImport(ctx context.Context, plainDir, name string, f *targetFlags) error {
	defer a.profile()()
	opt, cfg, err := a.resolveTarget(name, f)
	if err != nil {
		return err
	}
	rep, err := a.importOne(ctx, cfg, plainDir, opt, f.resume, a.transferProgress())
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(a.stdout, rep)
	}
	printTransfer(a.stdout, rep, mountHint(name, rep.Backing))
	return nil
}

// importOne runs one import with a KMS client for the target.
func (a *app) importOne(ctx context.Context, cfg *volume.Config, plainDir string, opt volume.CreateOptions, resume bool, prog volume.Progress) (*volume.TransferReport, error) {
	client, topt, err := a.targetOptions(ctx, cfg, opt, resume, prog)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	rep, err := volume.Import(ctx, client, volume.ImportOptions{PlainDir: plainDir, TargetOptions: topt})
	if err != nil {
		return rep, a.withRemedy(err, opt.KeyRef, topt.Target.KMSName)
	}
	return rep, nil
}

// importResult is one row of `import --all`.
type importResult struct {
	Volume   string                 `json:"volume"`
	From     string                 `json:"from"`
	Report   *volume.TransferReport `json:"report,omitempty"`
	Error    string                 `json:"error,omitempty"`
	Duration time.Duration          `json:"elapsed_ns"`
}

func (a *app) runImportAll(ctx context.Context, asJSON bool) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	jobs, err := cfg.ImportJobs()
	if err != nil {
		return withCode(exitUsage, err)
	}
	var results []importResult
	failed := 0
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		prog := &onePhase{Progress: newProgress(a.stderr), phase: volume.OpImport, label: "import " + j.Name}
		rep, err := a.importOne(ctx, cfg, j.PlainDir, j.Target, false, prog)
		r := importResult{Volume: j.Name, From: j.PlainDir, Report: rep, Duration: time.Since(start)}
		if err != nil {
			failed++
			r.Error = err.Error()
			fmt.Fprintf(a.stderr, "import %s: failed: %v\n", j.Name, err)
		}
		results = append(results, r)
	}
	if asJSON {
		if err := printJSON(a.stdout, results); err != nil {
			return err
		}
	} else {
		printImportTable(a.stdout, results)
	}
	if failed > 0 {
		return withCode(exitFailure, fmt.Errorf("%d of %d imports failed (see the table); fix what each names and run `encvol import --all` again: finished volumes are refused, unfinished ones resume", failed, len(jobs)))
	}
	return nil
}

func printImportTable(w io.Writer, results []importResult) {
	tw := newTable(w)
	fmt.Fprintln(tw, "VOLUME\tFILES\tBYTES\tTIME\tRATE\tRESULT")
	for _, r := range results {
		files, bytes, res := "-", "-", "ok"
		el := r.Duration
		if r.Report != nil && r.Error == "" {
			files = fmt.Sprint(r.Report.Entries)
			bytes = volume.HumanBytes(r.Report.Bytes)
		}
		rateS := "-"
		if r.Error != "" {
			res = "failed: " + r.Error
		} else if r.Report != nil {
			rateS = volume.HumanBytes(rate(r.Report.Bytes, el)) + "/s"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f s\t%s\t%s\n", r.Volume, files, bytes, el.Seconds(), rateS, res)
	}
	tw.Flush()
}

func anyChanged(cmd *cobra.Command, flags ...string) bool {
	for _, f := range flags {
		if cmd.Flags().Changed(f) {
			return true
		}
	}
	return false
}

// onePhase shows only one phase of an operation, under its own label: in
// `import --all` each volume gets one progress line, not one per phase.
// Workers count concurrently, so on is atomic.
type onePhase struct {
	volume.Progress
	phase, label string
	on           atomic.Bool
}

func (p *onePhase) Start(phase string, files, bytes int64) {
	if phase == p.phase {
		p.Progress.Start(p.label, files, bytes)
		p.on.Store(true)
	}
}

func (p *onePhase) AddBytes(n int64) {
	if p.on.Load() {
		p.Progress.AddBytes(n)
	}
}

func (p *onePhase) AddFiles(n int64) {
	if p.on.Load() {
		p.Progress.AddFiles(n)
	}
}

func (p *onePhase) Done() {
	if p.on.Swap(false) {
		p.Progress.Done()
	}
}
