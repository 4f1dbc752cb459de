package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// What copy and import share on the command line: the target flags, the
// progress display and the report.

// targetFlags are the flags that describe the new volume.
type targetFlags struct {
	opt    volume.CreateOptions
	resume bool
	asJSON bool
}

func (f *targetFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.opt.Backing, "backing", "", "backing directory of the new volume (new or empty; or the unfinished one to resume)")
	fs.StringVar(&f.opt.KMSName, "kms", "", "configured KMS of the new volume's key ([kms.NAME]; default: [defaults] kms or the only one)")
	fs.StringVar(&f.opt.KeyRef, "key", "", "CMK of the new volume: key ID, ARN or alias/NAME (default: the service key alias/encvol/default)")
	fs.IntVar(&f.opt.SectorSize, "sector-size", 0, "plaintext sector size of the new volume, a power of two from 512 to 65536")
	fs.BoolVar(&f.resume, "resume", false, "finish an earlier run into the same target that was stopped (running the same command again does too)")
	fs.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
}

// resolveTarget turns NAME or --backing into the new volume's options.
func (a *app) resolveTarget(name string, f *targetFlags) (volume.CreateOptions, *volume.Config, error) {
	cfg, err := a.config()
	if err != nil {
		return f.opt, nil, err
	}
	if name != "" && f.opt.Backing != "" {
		return f.opt, nil, usageError("give either a volume name or --backing, not both")
	}
	opt, _, err := cfg.ResolveCreate(name, f.opt)
	if err != nil {
		return opt, nil, withCode(exitUsage, err)
	}
	return opt, cfg, nil
}

// transferProgress shows a transfer on stderr: a bar on a terminal, a line
// every few seconds elsewhere.
func (a *app) transferProgress() volume.Progress { return newProgress(a.stderr) }

// profile starts the profiles ENCVOL_CPUPROFILE and ENCVOL_MEMPROFILE ask
// for (as for a mount daemon); the returned function writes them.
func (a *app) profile() func() { return fusefs.StartProfiling(a.log) }

// printTransfer prints what a finished copy or import did.
func printTransfer(w io.Writer, r *volume.TransferReport, mountHint string) {
	verb := map[string]string{volume.OpImport: "imported", volume.OpCopy: "copied", volume.OpReencrypt: "re-encrypted"}[r.Operation]
	fmt.Fprintf(w, "%s %s into volume %s in %s\n", verb, r.Source, r.VolumeID, r.Backing)
	fmt.Fprintf(w, "  key:     %s (KMS %q)\n", r.KeyID, r.KMS)
	fmt.Fprintf(w, "  entries: %d (%d written now", r.Entries, r.Written)
	if r.Skipped > 0 {
		fmt.Fprintf(w, ", %d already done by an earlier run", r.Skipped)
	}
	fmt.Fprintf(w, "), %s in %s (%s/s)\n", volume.HumanBytes(r.Bytes), r.Elapsed.Round(time.Millisecond), volume.HumanBytes(rate(r.Bytes, r.Elapsed)))
	fmt.Fprintf(w, "  check:   %d files read back and equal to the source; the volume mounts\n", r.Checked)
	fmt.Fprintf(w, "mount it with: %s\n", mountHint)
}

// mountHint is the command that mounts the new volume.
func mountHint(name, backing string) string {
	if name != "" {
		return "encvol mount " + name
	}
	return "encvol mount " + backing + " MOUNTPOINT"
}

// keyPolicy applies [policy] require_customer_key to the key of a new
// volume, before a data key is generated under it.
func keyPolicy(cfg *volume.Config, client kmsclient.Client, kmsName string) func(context.Context, string) error {
	return func(ctx context.Context, key string) error { return cfg.CheckKeyWithKMS(ctx, client, kmsName, key) }
}

// targetOptions opens a client for the KMS of the new volume (the caller
// closes it) and fills the options every transfer shares.
func (a *app) targetOptions(ctx context.Context, cfg *volume.Config, opt volume.CreateOptions, resume bool, prog volume.Progress) (kmsclient.Client, volume.TargetOptions, error) {
	kmsName, kc, err := cfg.KMSFor(opt.KMSName)
	if err != nil {
		return nil, volume.TargetOptions{}, withCode(exitUsage, err)
	}
	client, err := kmsclient.New(ctx, kmsName, kc)
	if err != nil {
		return nil, volume.TargetOptions{}, a.withRemedy(fmt.Errorf("KMS %q: %w", kmsName, err), opt.KeyRef, kmsName)
	}
	opt.KMSName = kmsName
	return client, volume.TargetOptions{
		Target: opt, KMSConfig: kc, KeyPolicy: keyPolicy(cfg, client, kmsName), Resume: resume, Progress: prog, Log: a.log,
	}, nil
}
