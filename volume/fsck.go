package volume

// `encvol fsck`: walk a volume's backing directory with its data key,
// authenticate every stored sector, every name, symlink target and
// attribute, find what interrupted operations left, and with --repair
// move what cannot be read into lost+found without destroying it.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
)

// FsckOptions say how to check.
type FsckOptions struct {
	// Repair moves what cannot be read into lost+found, removes leftovers
	// and fixes what can be fixed, reporting each action.
	Repair bool
	// Workers check file contents in parallel; 0: one per CPU.
	Workers  int
	Progress Progress
	// UnlockTimeout bounds the KMS unwrap of the data key; 0: the
	// context alone.
	UnlockTimeout time.Duration
}

// ErrFsckCancelled is returned (wrapped) when the context ends the check.
var ErrFsckCancelled = errors.New("fsck cancelled")

// FsckVolume checks the volume in backing (header h, already read): it
// takes the volume's lock (a mounted volume is refused with an
// *InUseError), has the KMS unwrap the data key and checks the whole
// backing directory. An error means the check could not be done; damage
// is in the report.
func FsckVolume(ctx context.Context, client kmsclient.Client, kmsName, backing string, h *keywrap.Header, opt FsckOptions) (*FsckReport, error) {
	lock, err := LockVolume(backing)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	uctx, cancel := ctx, context.CancelFunc(func() {})
	if opt.UnlockTimeout > 0 {
		uctx, cancel = context.WithTimeout(ctx, opt.UnlockTimeout)
	}
	u, err := UnlockHeader(uctx, client, kmsName, backing, h)
	cancel()
	if err != nil {
		return nil, err
	}
	src, err := OpenBackingSource(u)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return Fsck(ctx, src, h, opt)
}

// Fsck checks the volume src reads (whose lock the caller holds) and, with
// opt.Repair, repairs it.
func Fsck(ctx context.Context, src *BackingSource, h *keywrap.Header, opt FsckOptions) (*FsckReport, error) {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	fk := &fsck{
		opt:   opt,
		src:   src,
		prog:  progressOr(opt.Progress),
		links: map[uint64]*linkInfo{},
		rep: &FsckReport{
			VolumeID: h.VolumeID, Backing: src.Root(), NameMode: h.NameMode,
			Repair: opt.Repair, Started: time.Now().UTC(), Workers: workers,
			Findings: []*Finding{}, Actions: []FsckAction{},
		},
	}
	if note := OldFormatNote(h); note != "" {
		fk.add(&Finding{Kind: FindOldFormat, Severity: SeverityWarning, Path: "/", Backing: ".", Detail: note})
	}
	start := time.Now()
	files, bytes, err := prescan(ctx, src.Root(), src.Keys().Names.IsReserved)
	if err != nil {
		return nil, err
	}
	fk.prog.Start("check", files, bytes)
	err = fk.run(ctx, workers)
	fk.prog.Done()
	if err != nil {
		return nil, err
	}
	fk.checkLinks()
	if opt.Repair {
		if err := fk.repair(ctx); err != nil {
			return nil, err
		}
	}
	rep := fk.rep
	rep.Bytes, rep.Sectors = fk.bytes.Load(), fk.sectors.Load()
	el := time.Since(start)
	rep.Duration = el.Seconds()
	if el > 0 {
		rep.Throughput = float64(rep.Bytes) / el.Seconds()
	}
	rep.tally()
	return rep, nil
}

// fsck is one run's state.
type fsck struct {
	opt  FsckOptions
	src  *BackingSource
	prog Progress

	bytes, sectors atomic.Int64

	mu    sync.Mutex           // guards rep.Findings and links
	rep   *FsckReport          // counters are the walker's alone
	links map[uint64]*linkInfo // regular files with more than one link
}

// linkInfo is what fsck knows of a hard-linked file: its link count, the
// names found for it, and the finding about its content, if any.
type linkInfo struct {
	nlink   uint32
	names   []entryRef
	content *Finding
}

// entryRef names an entry of the walk.
type entryRef struct {
	path, backing string
	typ           uint32
}

func (fk *fsck) add(f *Finding) {
	fk.mu.Lock()
	fk.rep.Findings = append(fk.rep.Findings, f)
	fk.mu.Unlock()
}

// run walks the volume and checks file contents on workers.
func (fk *fsck) run(ctx context.Context, workers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan checkJob, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				fk.checkChunk(j)
			}
		})
	}
	fk.src.OnStray(func(s *Stray) error { fk.addStray(s); return nil })
	err := fk.src.Walk(ctx, func(e *Entry) error { return fk.visit(ctx, e, jobs) })
	close(jobs)
	wg.Wait()
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrFsckCancelled, err)
	}
	return err
}

// visit takes one entry of the walk.
func (fk *fsck) visit(ctx context.Context, e *Entry, jobs chan<- checkJob) error {
	fk.rep.Entries++
	switch e.Type {
	case unix.S_IFREG:
		fk.rep.Files++
	case unix.S_IFDIR:
		fk.rep.Dirs++
	case unix.S_IFLNK:
		fk.rep.Symlinks++
	default:
		fk.rep.Others++
	}
	ref := entryRef{path: volumePath(e), backing: e.Backing, typ: e.Type}
	first := true
	if e.Type == unix.S_IFREG && e.Nlink > 1 && e.Inode != 0 {
		fk.mu.Lock()
		li := fk.links[e.Inode]
		if li == nil {
			li = &linkInfo{nlink: e.Nlink}
			fk.links[e.Inode] = li
		} else {
			first = false
		}
		li.names = append(li.names, ref)
		fk.mu.Unlock()
	}
	for _, ee := range EntryErrors(e.Err) {
		// The mode, owner and attributes belong to the file, not to
		// one of its names: reported once, with the first name.
		if first || ee.Part == PartName {
			fk.addEntryError(e, ee)
		}
	}
	if e.Type != unix.S_IFREG || e.Inode == 0 || !first {
		fk.prog.AddFiles(1)
		return nil
	}
	return fk.schedule(ctx, e, ref, jobs)
}

// checkLinks reports files whose link count is not the number of names
// found for them: links from outside the backing directory.
func (fk *fsck) checkLinks() {
	for _, li := range fk.links {
		if uint32(len(li.names)) == li.nlink {
			continue
		}
		n := li.names[0]
		fk.add(&Finding{Kind: FindLinkCount, Severity: SeverityWarning, Path: n.path, Backing: n.backing,
			Detail: fmt.Sprintf("the backing file has %d links but %d names in the volume: the others are outside the backing directory (left alone)", li.nlink, len(li.names))})
	}
}

// volumePath is e's plaintext path from the volume's root ("/a/b"; "/"
// for the root), or "" when it is not known.
func volumePath(e *Entry) string {
	if e.Path == "" && e.Backing != "" {
		return ""
	}
	return "/" + e.Path
}

// addEntryError turns a part of an entry that did not decode into a
// finding.
func (fk *fsck) addEntryError(e *Entry, ee *EntryError) {
	f := &Finding{Severity: SeverityError, Path: volumePath(e), Backing: e.Backing, typ: e.Type, inode: e.Inode, attr: ee.Attr}
	switch ee.Part {
	case PartName:
		f.Kind, f.Detail = FindName, "the name does not decrypt: "+ee.Err.Error()
	case PartMeta:
		f.Kind, f.Detail = FindMeta, "the stored mode and owner are malformed (the mount shows the backing ones): "+ee.Err.Error()
		if errors.Is(ee.Err, fusefs.ErrEntryMoved) {
			f.Kind, f.Detail = FindMovedEntry, fusefs.ErrEntryMoved.Error()+"; the mount refuses it with an I/O error"
		}
	case PartTarget:
		f.Kind, f.Detail = FindSymlink, "the symlink target does not decrypt: "+ee.Err.Error()
		if errors.Is(ee.Err, names.ErrLinkEntry) {
			f.Kind, f.Detail = FindLinkTarget, names.ErrLinkEntry.Error()
		}
	case PartXattr:
		f.Kind, f.Detail = FindXattr, fmt.Sprintf("extended attribute %s does not decrypt: %v", ee.Attr, ee.Err)
	default:
		f.Kind, f.Detail = FindUnreadable, ee.Error()
	}
	fk.add(f)
}

// addStray turns a stray into a finding.
func (fk *fsck) addStray(s *Stray) {
	f := &Finding{Kind: string(s.Kind), Backing: s.Backing}
	where := s.Where()
	switch s.Kind {
	case StrayTemp:
		f.Severity = SeverityLeftover
		f.Detail = fmt.Sprintf("temporary file of an interrupted write (%d bytes) in %s", s.Size, where)
	case StrayOrphanLongName:
		f.Severity = SeverityLeftover
		f.Detail = fmt.Sprintf("long-name side file without its entry in %s (a removal was interrupted)", where)
		if s.Name != "" {
			f.Detail += fmt.Sprintf("; it holds the name %q", s.Name)
		}
	case StrayOrphanLongLink:
		f.Severity = SeverityLeftover
		f.Detail = fmt.Sprintf("side file of a long symlink target that no symlink refers to (%d bytes; a removal was interrupted)", s.Size)
	case StrayMissingDirID:
		f.Severity = SeverityError
		f.Detail = "the directory has no directory ID file: the mount cannot list it"
	case StrayBadDirID:
		f.Severity = SeverityError
		f.Detail = fmt.Sprintf("the directory's ID file is damaged, the mount cannot list it: %v", s.Err)
	default:
		f.Severity = SeverityWarning
		f.Detail = fmt.Sprintf("a file under a name encvol reserves, unknown to this version, in %s (%d bytes; left alone)", where, s.Size)
	}
	if (s.Kind == StrayMissingDirID || s.Kind == StrayBadDirID) && s.PathKnown {
		f.Path = "/" + s.DirPath
	}
	fk.add(f)
}
