package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/encvol/encvol/sector"
)

// fsckChunk is how many stored bytes of a file one worker checks at a
// time: large files are split so that every core works on them, small
// enough that a few files in flight hold few descriptors and little
// memory.
const fsckChunk = 16 << 20

// fileCheck is the content check of one regular file, split into chunks.
type fileCheck struct {
	ref   entryRef
	inode uint64
	nlink uint32
	f     *os.File
	sf    *sector.File

	pending atomic.Int64 // chunks not done yet; the last one finishes the file

	mu    sync.Mutex    // guards the fields below
	bad   []SectorRange // failing sectors, unordered between chunks
	cause error         // why the first failing sector failed
	other bool          // some sector failed for another reason than being zeroed
	err   error         // what stopped a chunk
}

// checkJob is one chunk: stored sectors [from, to) of a file, span backing
// bytes.
type checkJob struct {
	fc       *fileCheck
	from, to int64
	span     int64
}

// schedule opens the regular file e and queues its chunks.
func (fk *fsck) schedule(ctx context.Context, e *Entry, ref entryRef, jobs chan<- checkJob) error {
	fc := &fileCheck{ref: ref, inode: e.Inode, nlink: e.Nlink}
	f, err := openBackingFile(fk.src.Root(), e.Backing)
	if err != nil {
		fk.fileFinding(fc, &Finding{Kind: FindUnreadable, Detail: fmt.Sprintf("the backing file cannot be opened: %v", err)})
		fk.prog.AddFiles(1)
		return nil
	}
	fc.f = f
	fc.sf, err = sector.NewFile(f, fk.src.SectorSize())
	if err != nil {
		f.Close()
		return err
	}
	n, err := fc.sf.StoredSectors()
	if err == nil && n > 0 {
		_, err = fc.sf.FileID()
	}
	if err != nil || n == 0 {
		if err != nil {
			fc.err = err
		}
		fk.finish(fc)
		return nil
	}
	stored := int64(fk.src.SectorSize() + sector.Overhead)
	size := fileSize(f)
	per := max(1, fsckChunk/stored)
	fc.pending.Store((n + per - 1) / per)
	for from := int64(0); from < n; from += per {
		to := min(n, from+per)
		span := min(size, sector.HeaderSize+to*stored) - (sector.HeaderSize + from*stored)
		j := checkJob{fc: fc, from: from, to: to, span: span}
		select {
		case jobs <- j:
		case <-ctx.Done():
			left := (n - from + per - 1) / per
			if fc.pending.Add(-left) == 0 {
				fk.finish(fc)
			}
			return ctx.Err()
		}
	}
	return nil
}

// checkChunk authenticates one chunk; the file's last chunk finishes it.
func (fk *fsck) checkChunk(j checkJob) {
	fc := j.fc
	var bad []SectorRange
	var cause error
	other := false
	read, err := fc.sf.CheckSectors(fk.src.Keys().Content, j.from, j.to, func(ae *sector.AuthError) {
		if cause == nil {
			cause = ae.Err
		}
		other = other || !errors.Is(ae.Err, sector.ErrZeroed)
		bad = addSector(bad, ae.Index)
	})
	fk.bytes.Add(read)
	fk.sectors.Add(j.to - j.from)
	fk.prog.AddBytes(j.span)
	fc.mu.Lock()
	fc.bad = append(fc.bad, bad...)
	fc.other = fc.other || other
	if fc.cause == nil {
		fc.cause = cause
	}
	if err != nil && fc.err == nil {
		fc.err = err
	}
	fc.mu.Unlock()
	if fc.pending.Add(-1) == 0 {
		fk.finish(fc)
	}
}

// finish reports a checked file's damage, comparing it with what an
// earlier repair recorded when the file was quarantined.
func (fk *fsck) finish(fc *fileCheck) {
	defer fc.f.Close()
	fk.prog.AddFiles(1)
	f := &Finding{}
	ss := int64(fk.src.SectorSize())
	switch bad := mergeRanges(fc.bad); {
	case errors.Is(fc.err, sector.ErrHeader):
		f.Kind = FindBadHeader
		f.Detail = fmt.Sprintf("the sector file header is damaged, so none of its %s can be read: %v", HumanBytes(sector.PlainSize(fileSize(fc.f), int(ss))), fc.err)
	case fc.err != nil:
		f.Kind = FindUnreadable
		f.Detail = fmt.Sprintf("reading the backing file failed: %v", fc.err)
	case len(bad) > 0:
		f.Kind, f.Sectors = FindBadSectors, bad
		verb := "fail"
		if sectorCount(bad) == 1 {
			verb = "fails"
		}
		if !fc.other {
			// Every one reads as zeros where the file never made a hole.
			f.Kind = FindZeroed
		}
		f.Detail = fmt.Sprintf("%s %s authentication (%v): %s", plural(sectorCount(bad), "sector"), verb, fc.cause, describeRanges(bad, ss))
	default:
		return
	}
	fk.fileFinding(fc, f)
}

// fileFinding adds f, about fc's content, as an error or, when the file
// was quarantined for exactly this damage, as quarantined.
func (fk *fsck) fileFinding(fc *fileCheck, f *Finding) {
	f.Severity, f.Path, f.Backing, f.typ, f.inode = SeverityError, fc.ref.path, fc.ref.backing, fc.ref.typ, fc.inode
	if fc.f != nil {
		if rec := fk.readRecord(fc.f); rec != nil {
			if rec.Damage == damageOf(f) {
				f.Severity = SeverityQuarantined
				f.Detail = fmt.Sprintf("quarantined on %s (from %s); %s", rec.At.Format("2006-01-02 15:04"), rec.From, f.Detail)
			} else {
				f.Detail = fmt.Sprintf("quarantined on %s (from %s) for %q, now: %s", rec.At.Format("2006-01-02 15:04"), rec.From, rec.Damage, f.Detail)
				f.Kind = FindChanged
			}
		}
	}
	if fc.nlink > 1 {
		fk.mu.Lock()
		if li := fk.links[fc.inode]; li != nil {
			li.content = f
		}
		fk.mu.Unlock()
	}
	fk.add(f)
}

// damageOf is the short form of a content finding that a quarantine record
// keeps, to tell known damage from new.
func damageOf(f *Finding) string {
	switch f.Kind {
	case FindBadSectors, FindZeroed, FindChanged:
		if len(f.Sectors) > 0 {
			return "sectors " + rangesString(f.Sectors)
		}
	}
	return f.Kind
}

// describeRanges names sector ranges with their plaintext byte ranges.
func describeRanges(rs []SectorRange, ss int64) string {
	s := "sector"
	if sectorCount(rs) > 1 {
		s += "s"
	}
	s += " " + rangesString(rs)
	if len(rs) <= 4 {
		s += " (plaintext bytes"
		for i, r := range rs {
			if i > 0 {
				s += ","
			}
			s += fmt.Sprintf(" %d-%d", r.First*ss, (r.Last+1)*ss-1)
		}
		s += ")"
	}
	return s
}

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func fileSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// prescan counts the entries and backing bytes of regular files below
// root, for the progress totals; reserved reports the names that are not
// entries.
func prescan(ctx context.Context, root string, reserved func(string) bool) (files, bytes int64, err error) {
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%w: %w", ErrFsckCancelled, cerr)
		}
		if reserved(d.Name()) && p != root {
			return nil
		}
		files++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				bytes += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("scan %s: %w", root, err)
	}
	return files, bytes, nil
}
