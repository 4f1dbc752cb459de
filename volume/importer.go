package volume

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/encvol/encvol/kmsclient"
)

// ImportOptions describe the import of a plaintext directory into a new
// volume.
type ImportOptions struct {
	// PlainDir is the directory whose content becomes the volume's. It is
	// only read.
	PlainDir string
	TargetOptions
}

// Import converts the plaintext tree PlainDir into a new volume, keeping
// modes, owners, times, symlinks, hard links, holes, user.* attributes,
// FIFOs, sockets and (as root) device nodes. It never changes PlainDir.
// An import that was stopped (killed, full disk) is finished by running it
// again. client reaches the target's KMS.
func Import(ctx context.Context, client kmsclient.Client, opt ImportOptions) (*TransferReport, error) {
	src, err := OpenPlainSource(opt.PlainDir, opt.Log)
	if err != nil {
		return nil, withKind(ErrSourceUnusable, err)
	}
	defer src.Close()
	if err := checkApart(src.Root(), opt.Target.Backing); err != nil {
		return nil, err
	}
	return Transfer(ctx, client, TransferOptions{
		Operation: OpImport, Source: src, SourcePath: src.Root(), SourceID: src.Identity(), TargetOptions: opt.TargetOptions,
	})
}

// checkApart refuses a target inside the tree it would be written from
// (the walk would read the volume being written) and a source inside the
// target.
func checkApart(source, backing string) error {
	abs, err := filepath.Abs(backing)
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(source, abs); err == nil && filepath.IsLocal(rel) || abs == source {
		return refusedBacking(fmt.Errorf("target %s is inside %s, the tree to be read; give a target outside it", abs, source))
	}
	if rel, err := filepath.Rel(abs, source); err == nil && filepath.IsLocal(rel) {
		return refusedBacking(fmt.Errorf("%s is inside the target %s; give a target outside it", source, abs))
	}
	return nil
}

// ImportJob is one volume that `encvol import --all` converts.
type ImportJob struct {
	Name      string // [volumes.NAME]
	PlainDir  string
	Target    CreateOptions
	KMSConfig kmsclient.Config
}

// ImportJobs lists the volumes with import_from, by name.
func (c *Config) ImportJobs() ([]ImportJob, error) {
	var jobs []ImportJob
	names := sortedKeys(c.Volumes)
	sort.Strings(names)
	for _, name := range names {
		v := c.Volumes[name]
		if v.ImportFrom == "" {
			continue
		}
		opt, kc, err := c.ResolveCreate(name, CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("[volumes.%s]: %w", name, err)
		}
		jobs = append(jobs, ImportJob{Name: name, PlainDir: v.ImportFrom, Target: opt, KMSConfig: kc})
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("no [volumes.NAME] of %s has import_from: add import_from = \"DIR\" to the volumes to convert", c.describe())
	}
	return jobs, nil
}
