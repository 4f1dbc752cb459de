package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/sector"
)

// The transfer core shared by import, copy and re-encryption: a Source is
// written into a new volume by the target writer, in parallel across files
// (and across chunks of large files), streaming through buffers of a fixed
// size, so memory stays flat however large the volume is. It is resumable:
// the marker (marker.go) says what is being written, finished entries have
// their names, and a rerun skips them and redoes the rest. The result is
// checked against the source and mounted once before the marker goes.

const (
	// chunkSize is how much of a large file one task writes; files larger
	// than splitSize are cut into such chunks for several workers.
	chunkSize = 8 << 20
	splitSize = 2 * chunkSize
	// ioSize is each worker's buffer: one read from the source, one
	// sector.File write.
	ioSize = 1 << 20
)

// TargetOptions describe the new volume of an import, copy or
// re-encryption and how the work runs.
type TargetOptions struct {
	// Target is the new volume: Backing, KMSName (resolved), KeyRef,
	// SectorSize and PlaintextNames as for Create.
	Target CreateOptions
	// KMSConfig is the configuration of Target.KMSName; the check mounts
	// the result with it.
	KMSConfig kmsclient.Config
	// KeyPolicy, when set, may refuse Target.KeyRef before a data key is
	// generated under it (the configuration's [policy]).
	KeyPolicy func(ctx context.Context, keyRef string) error
	// Resume says the caller asked to finish an earlier run; a run
	// without it resumes just the same when the marker matches.
	Resume bool
	// Workers is the number of files written at once; 0 means one per
	// core.
	Workers  int
	Progress Progress
	Log      zerolog.Logger
}

// TransferOptions describe one import, copy or re-encryption.
type TransferOptions struct {
	// Operation is OpImport, OpCopy or OpReencrypt.
	Operation string
	// Source is the tree to write; SourcePath (absolute) and SourceID name
	// it in the marker, so a rerun can tell it is the same.
	Source     Source
	SourcePath string
	SourceID   string
	TargetOptions
}

// TransferReport is what a finished transfer did.
type TransferReport struct {
	Operation string        `json:"operation"`
	Source    string        `json:"source"`
	Backing   string        `json:"backing"`
	VolumeID  string        `json:"volume_id"`
	KMS       string        `json:"kms"`
	KeyID     string        `json:"key_id"`
	Resumed   bool          `json:"resumed"`
	Entries   int64         `json:"entries"` // in the source, the root not counted
	Bytes     int64         `json:"bytes"`   // plaintext bytes of its regular files
	Written   int64         `json:"written"` // entries written by this run
	Skipped   int64         `json:"skipped"` // entries an earlier run had finished
	Checked   int64         `json:"checked"` // regular files compared with the source
	Elapsed   time.Duration `json:"elapsed_ns"`
}

// Transfer writes opt.Source into a new volume in opt.Target.Backing, or
// finishes an earlier run that was stopped. client reaches the target's
// KMS. On success the volume is complete: every file was read back and
// compared with the source and the volume was mounted once.
func Transfer(ctx context.Context, client kmsclient.Client, opt TransferOptions) (*TransferReport, error) {
	start := time.Now()
	backing, err := filepath.Abs(opt.Target.Backing)
	if err != nil {
		return nil, err
	}
	opt.Target.Backing = backing
	if opt.Target.SectorSize == 0 {
		opt.Target.SectorSize = sector.DefaultSectorSize
	}
	if opt.Target.KMSName == "" {
		opt.Target.KMSName = DefaultKMSName
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	prog := progressOr(opt.Progress)
	want := opt.marker()

	b, err := beginTarget(ctx, client, opt, want)
	if err != nil {
		return nil, err
	}
	defer func() { b.lock.Release() }() // the lock is taken again after the check
	rep := &TransferReport{Operation: opt.Operation, Source: opt.SourcePath, Backing: backing, Resumed: b.resumed,
		VolumeID: b.u.Header.VolumeID, KMS: b.u.Header.KMS, KeyID: b.u.Header.KeyID}
	header := b.u.Header
	t, err := openTarget(b.u, opt.Log)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if b.resumed {
		dropDeadCheckMounts(backing, opt.Log)
		if err := t.removeTemps(); err != nil {
			return nil, fmt.Errorf("resume %s: remove unfinished entries: %w", backing, err)
		}
	}

	tot, err := countSource(ctx, opt.Source, prog)
	if err != nil {
		return nil, transferError(opt, want, err)
	}
	rep.Entries, rep.Bytes = tot.entries, tot.bytes

	w := newWriter(t, opt, prog)
	prog.Start(opt.Operation, tot.entries, tot.bytes)
	err = w.run(ctx)
	prog.Done()
	rep.Written, rep.Skipped = w.written.Load(), w.skipped.Load()
	if err != nil {
		return rep, transferError(opt, want, err)
	}

	// The check mounts the volume, and a mount takes the volume's lock.
	if err := b.lock.Release(); err != nil {
		return rep, err
	}
	rep.Checked, err = checkTransfer(ctx, t, header, opt, tot, prog)
	if err != nil {
		return rep, transferError(opt, want, err)
	}
	if b.lock, err = LockVolume(backing); err != nil {
		return rep, err
	}
	if err := w.finish(); err != nil {
		return rep, transferError(opt, want, err)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// marker is the marker of this operation (Started: now).
func (opt *TransferOptions) marker() *Marker {
	mode := NameModeEncrypted
	if opt.Target.PlaintextNames {
		mode = NameModePlaintext
	}
	return &Marker{
		Operation: opt.Operation, Source: opt.SourcePath, SourceID: opt.SourceID,
		KMS: opt.Target.KMSName, Key: opt.Target.KeyRef, SectorSize: opt.Target.SectorSize, NameMode: mode,
		Started: time.Now().UTC().Truncate(time.Second),
	}
}

// transferError makes a failure that left the marker say how to go on: a
// full target names the space problem, and every failure the command that
// finishes the work.
func transferError(opt TransferOptions, m *Marker, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s stopped; the unfinished volume in %s keeps what is done: finish it with %s: %w",
			opt.Operation, opt.Target.Backing, m.ResumeCommand(opt.Target.Backing), err)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("the file system of %s is full (%w); the unfinished volume keeps what is done: free space or enlarge it, then finish with %s",
			opt.Target.Backing, err, m.ResumeCommand(opt.Target.Backing))
	}
	return fmt.Errorf("%w; the unfinished volume keeps what is done: finish it with %s", err, m.ResumeCommand(opt.Target.Backing))
}

// begun is a target ready to be written: its keys, its lock, and whether
// an earlier run had started it.
type begun struct {
	u       *Unlocked
	lock    *VolumeLock
	resumed bool
}

// beginTarget creates the new volume behind its marker, or finds the
// unfinished one of an earlier run of the same operation. It refuses a
// target that holds anything else.
func beginTarget(ctx context.Context, client kmsclient.Client, opt TransferOptions, want *Marker) (_ *begun, err error) {
	backing := opt.Target.Backing
	made := false
	st, err := os.Stat(backing)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(backing, 0o700); err != nil {
			return nil, fmt.Errorf("make target directory: %w", err)
		}
		made = true
	case err != nil:
		return nil, err
	case !st.IsDir():
		return nil, refusedBacking(fmt.Errorf("target %s is not a directory; give a new or empty directory", backing))
	default:
		// A finished volume is refused as such, mounted or not (a mount
		// holds the lock taken below).
		if err := refuseFinished(backing, opt.Resume); err != nil {
			return nil, err
		}
	}
	lock, err := LockVolume(backing)
	if err != nil {
		if made {
			_ = os.Remove(backing)
		}
		return nil, err
	}
	b := &begun{lock: lock}
	fresh := false
	defer func() {
		if err == nil {
			return
		}
		if fresh {
			// Nothing of value was written: leave no half volume behind.
			_ = os.Remove(filepath.Join(backing, keywrap.IncompleteFile))
		}
		if made {
			_ = os.Remove(backing) // only when empty
		}
		lock.Release()
	}()

	have, merr := ReadMarker(backing)
	switch {
	case merr == nil:
		if err := have.sameJob(want); err != nil {
			return nil, refusedBacking(fmt.Errorf("target %s holds an unfinished %s of %s started %s, and %v: finish that with %s, or give another target directory",
				backing, have.Operation, have.Source, have.Started.Format(time.RFC3339), err, have.ResumeCommand(backing)))
		}
		b.resumed = true
		if _, err := os.Stat(filepath.Join(backing, keywrap.HeaderFile)); errors.Is(err, os.ErrNotExist) {
			// Stopped while the volume was being created: nothing but the
			// marker can be worth keeping.
			if err := clearExcept(backing, keywrap.IncompleteFile); err != nil {
				return nil, err
			}
			if _, err := create(ctx, client, opt.Target, keywrap.IncompleteFile); err != nil {
				return nil, err
			}
		}
	case errors.Is(merr, os.ErrNotExist):
		empty, err := isEmptyDir(backing, "")
		if err != nil {
			return nil, err
		}
		if !empty {
			if err := refuseFinished(backing, opt.Resume); err != nil {
				return nil, err
			}
			return nil, refusedBacking(fmt.Errorf("target %s is not empty; give a new or empty directory", backing))
		}
		if opt.KeyPolicy != nil {
			if err := opt.KeyPolicy(ctx, opt.Target.KeyRef); err != nil {
				return nil, err
			}
		}
		fresh = true
		if err := writeMarker(backing, want); err != nil {
			return nil, fmt.Errorf("write the marker of the unfinished volume: %w", err)
		}
		if _, err := create(ctx, client, opt.Target, keywrap.IncompleteFile); err != nil {
			return nil, err
		}
	default:
		return nil, refusedBacking(fmt.Errorf("target %s holds the marker of an unfinished copy or import that cannot be read (%v); remove the directory and start again", backing, merr))
	}
	b.u, err = Unlock(ctx, client, backing)
	if err != nil {
		return nil, err
	}
	if b.u.Header.SectorSize != want.SectorSize || b.u.Header.NameMode != want.NameMode {
		b.u.Close()
		return nil, fmt.Errorf("target %s: the volume header (sector size %d, names %s) does not match its marker; remove the directory and start again",
			backing, b.u.Header.SectorSize, b.u.Header.NameMode)
	}
	fresh = false
	return b, nil
}

// refuseFinished refuses a target that holds a volume and no marker.
func refuseFinished(backing string, resume bool) error {
	if _, err := os.Stat(filepath.Join(backing, keywrap.HeaderFile)); err != nil {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(backing, keywrap.IncompleteFile)); err == nil {
		return nil
	}
	if resume {
		return refusedBacking(fmt.Errorf("target %s holds a finished volume, so there is nothing to resume; give another target directory", backing))
	}
	return refusedBacking(fmt.Errorf("target %s already holds a volume (%s exists); give a new or empty directory", backing, keywrap.HeaderFile))
}

// clearExcept removes everything in dir but the entry named keep.
func clearExcept(dir, keep string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() != keep {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeTemps deletes what a stopped run left under temporary names: they
// are never complete. A temporary symlink takes the side file of its long
// target along.
func (t *target) removeTemps() error {
	return filepath.WalkDir(t.backing, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !strings.HasPrefix(d.Name(), keywrap.TempPrefix) {
			return nil
		}
		if d.IsDir() {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			return filepath.SkipDir
		}
		dfd, err := unix.Open(filepath.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return t.removeEntry(dfd, d.Name())
	})
}

// totals counts a source: entries (root excluded), bytes of regular files
// (each hard-linked file once), and the names in its root.
type totals struct {
	entries, bytes, files int64
	rootNames             int
}

// countSource walks the source once so that progress can show totals and
// an ETA.
func countSource(ctx context.Context, src Source, prog Progress) (totals, error) {
	var tot totals
	seen := map[uint64]bool{}
	prog.Start("scan", 0, 0)
	defer prog.Done()
	err := src.Walk(ctx, func(e *Entry) error {
		if e.Err != nil {
			return entryError(e, e.Err)
		}
		if e.Path == "" {
			return nil
		}
		tot.entries++
		prog.AddFiles(1)
		if !strings.Contains(e.Path, "/") {
			tot.rootNames++
		}
		if e.Type == unix.S_IFREG {
			if e.Nlink > 1 {
				if seen[e.Inode] {
					return nil
				}
				seen[e.Inode] = true
			}
			tot.files++
			tot.bytes += e.Size
			prog.AddBytes(e.Size)
		}
		return nil
	})
	return tot, err
}

// entryError names the entry a failure belongs to.
func entryError(e *Entry, err error) error {
	name := e.Path
	if name == "" {
		name = e.Backing
	}
	if name == "" {
		name = "/"
	}
	return fmt.Errorf("%s: %w", name, err)
}

// readFull reads len(p) bytes at off; a source that ends early changed
// since it was walked.
func readFull(c Content, p []byte, off int64, e *Entry) error {
	n, err := c.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("the file is shorter than the %d bytes it had when the tree was read (it changed); run the command again when it is quiet", e.Size)
	}
	return err
}

// firstError keeps the first of the failures that workers report.
type firstError struct {
	mu  sync.Mutex
	err error // GUARDED_BY(mu)
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
