package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// writer runs one transfer's write phase: the walk of the source on one
// goroutine (directories are made there, in walk order, so they exist
// before their entries), everything else as tasks for a pool of workers.
type writer struct {
	t    *target
	opt  TransferOptions
	src  Source
	prog Progress

	tasks chan task
	stack []frame // directories from the root down to the walk's position

	// Directory times are set last, after everything inside them.
	rootTime [2]time.Time
	dirTimes []dirTime

	// firstLink maps the source identity of a hard-linked entry (any type
	// but a directory) to the backing path of its first name; the other
	// names are linked to it once every entry is written.
	firstLink map[uint64]string
	links     []linkJob

	written, skipped atomic.Int64

	errs firstError
}

type frame struct {
	plain string // plaintext path
	d     *dirRec
}

type dirTime struct {
	rel          string
	atime, mtime time.Time
}

type linkJob struct {
	e        *Entry
	first    string // backing path of the file's first name
	dir      string // backing path of the new name's directory
	bname    string
	longName string
}

// task is one unit of work: a chunk [off, end) of a regular file, or a
// whole entry without content (symlink, FIFO, device, socket).
type task struct {
	f        *fileJob
	off, end int64

	e           *Entry
	d           *dirRec
	bname, long string
}

// fileJob is a regular file whose chunks may run on several workers. The
// first chunk to start prepares it; the last to end finishes it.
type fileJob struct {
	e           *Entry
	d           *dirRec
	bname, long string
	split       bool

	once    sync.Once
	skip    bool // an earlier run finished it
	w       *fileWriter
	content Content
	prepErr error

	pending atomic.Int32
	failed  atomic.Bool

	// A split file is presized, so its hole map covers every sector;
	// its chunks record the sectors they leave holes, and the finished
	// file's map is cut down to them.
	holesMu sync.Mutex
	holes   []sector.Extent // GUARDED_BY(holesMu)
}

func newWriter(t *target, opt TransferOptions, prog Progress) *writer {
	return &writer{
		t: t, opt: opt, src: opt.Source, prog: prog,
		tasks:     make(chan task, 2*opt.Workers),
		firstLink: map[uint64]string{},
	}
}

// run writes every entry of the source.
func (w *writer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range w.opt.Workers {
		wg.Go(func() { w.work(ctx, cancel) })
	}
	walkErr := w.src.Walk(ctx, func(e *Entry) error {
		if err := w.errs.get(); err != nil {
			return err
		}
		return w.visit(ctx, e)
	})
	for len(w.stack) > 0 {
		w.pop()
	}
	close(w.tasks)
	wg.Wait()
	if err := w.errs.get(); err != nil {
		return err
	}
	if walkErr != nil {
		return walkErr
	}
	return w.linkAll(ctx)
}

func (w *writer) work(ctx context.Context, cancel context.CancelFunc) {
	buf := make([]byte, ioSize)
	for tk := range w.tasks {
		var err error
		if err = ctx.Err(); err == nil {
			err = w.do(tk, buf)
		}
		if tk.f != nil {
			w.endChunk(tk.f, err)
		} else {
			tk.d.drop()
		}
		if err != nil {
			w.errs.set(err)
			cancel()
		}
	}
}

func (w *writer) pop() {
	f := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	f.d.drop()
}

// visit handles one entry of the walk.
func (w *writer) visit(ctx context.Context, e *Entry) error {
	if e.Err != nil {
		return entryError(e, e.Err)
	}
	if e.Path == "" {
		return w.visitRoot(e)
	}
	if len(w.stack) == 0 {
		return entryError(e, errors.New("the walk of the source did not start at its root"))
	}
	for len(w.stack) > 1 && !strings.HasPrefix(e.Path, w.stack[len(w.stack)-1].plain+"/") {
		w.pop()
	}
	parent := w.stack[len(w.stack)-1].d
	_, name := splitRel(e.Path)
	bname, long, err := w.t.name(parent, name, e.Path)
	if err != nil {
		return err
	}
	// A symlink bound to its entry cannot share its backing inode with
	// another name: each name becomes a symlink of its own.
	if e.Type != unix.S_IFDIR && e.Nlink > 1 && !(e.Type == unix.S_IFLNK && w.t.names.BindLinks()) {
		if first, ok := w.firstLink[e.Inode]; ok {
			w.links = append(w.links, linkJob{e: e, first: first, dir: parent.rel, bname: bname, longName: long})
			return nil
		}
		w.firstLink[e.Inode] = joinRel(parent.rel, bname)
	}
	switch e.Type {
	case unix.S_IFDIR:
		d, err := w.t.mkdir(parent, e, bname, long)
		if err != nil {
			return entryError(e, err)
		}
		w.stack = append(w.stack, frame{plain: e.Path, d: d})
		w.dirTimes = append(w.dirTimes, dirTime{rel: d.rel, atime: e.Atime, mtime: e.Mtime})
		w.written.Add(1)
		w.prog.AddFiles(1)
		return nil
	case unix.S_IFREG:
		return w.queueFile(ctx, e, parent, bname, long)
	case unix.S_IFLNK, unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFSOCK:
		parent.hold()
		return w.send(ctx, task{e: e, d: parent, bname: bname, long: long})
	}
	return entryError(e, fmt.Errorf("unknown file type %#o", e.Type))
}

// visitRoot opens the target's root and gives it the source root's mode,
// owner and attributes (its times come last).
func (w *writer) visitRoot(e *Entry) error {
	d, err := w.t.rootDir()
	if err != nil {
		return err
	}
	w.rootTime = [2]time.Time{e.Atime, e.Mtime}
	w.stack = append(w.stack, frame{plain: "", d: d})
	// The root has no name: its record is unbound.
	if err := w.t.setAttrs(d.fd, e, true, nil); err != nil {
		return entryError(e, err)
	}
	return nil
}

func (w *writer) send(ctx context.Context, tk task) error {
	select {
	case w.tasks <- tk:
		return nil
	case <-ctx.Done():
		if tk.f != nil {
			w.endChunk(tk.f, ctx.Err())
		} else {
			tk.d.drop()
		}
		return ctx.Err()
	}
}

// queueFile cuts a regular file into tasks.
func (w *writer) queueFile(ctx context.Context, e *Entry, d *dirRec, bname, long string) error {
	f := &fileJob{e: e, d: d, bname: bname, long: long, split: e.Size > splitSize}
	d.hold()
	if !f.split {
		f.pending.Store(1)
		return w.send(ctx, task{f: f, off: 0, end: e.Size})
	}
	n := (e.Size + chunkSize - 1) / chunkSize
	f.pending.Store(int32(n))
	for i := range n {
		off := i * chunkSize
		if err := w.send(ctx, task{f: f, off: off, end: min(e.Size, off+chunkSize)}); err != nil {
			// The chunks never sent will not end themselves.
			for range n - i - 1 {
				w.endChunk(f, err)
			}
			return err
		}
	}
	return nil
}

// do runs one task.
func (w *writer) do(tk task, buf []byte) error {
	if tk.f != nil {
		return w.writeChunk(tk.f, tk.off, tk.end, buf)
	}
	e, d := tk.e, tk.d
	st, ok, err := w.t.lookup(d, tk.bname)
	if err != nil {
		return entryError(e, err)
	}
	if ok {
		if st.Mode&unix.S_IFMT == e.Type {
			// Made under a temporary name and renamed complete.
			w.skipped.Add(1)
			w.prog.AddFiles(1)
			return nil
		}
		if err := w.t.remove(d, tk.bname); err != nil {
			return entryError(e, err)
		}
	}
	if err := w.t.special(d, e, tk.bname, tk.long); err != nil {
		return entryError(e, err)
	}
	w.written.Add(1)
	w.prog.AddFiles(1)
	return nil
}

// prepare runs once per file, before its first chunk: it finds a file an
// earlier run finished, or starts the file under a temporary name.
func (w *writer) prepare(f *fileJob) {
	st, ok, err := w.t.lookup(f.d, f.bname)
	if err != nil {
		f.prepErr = err
		return
	}
	if ok {
		if w.t.isDone(&st, f.e) {
			f.skip = true
			return
		}
		if err := w.t.remove(f.d, f.bname); err != nil {
			f.prepErr = err
			return
		}
	}
	if f.e.Size > 0 {
		if f.content, err = w.src.Open(f.e); err != nil {
			f.prepErr = err
			return
		}
	}
	f.w, f.prepErr = w.t.createFile(f.d, f.e, f.split)
}

// writeChunk writes the plaintext [off, end) of f, sector-aligned data
// extents only: holes of the source stay holes.
func (w *writer) writeChunk(f *fileJob, off, end int64, buf []byte) error {
	f.once.Do(func() { w.prepare(f) })
	if f.prepErr != nil {
		return entryError(f.e, f.prepErr)
	}
	if f.skip || end <= off {
		w.prog.AddBytes(end - off)
		return nil
	}
	sf, err := f.w.sectorFile()
	if err != nil {
		return entryError(f.e, err)
	}
	S := int64(w.t.sectorSize)
	done := int64(0)
	skipped := func(lo, hi int64) {
		if f.split && lo < hi {
			f.holesMu.Lock()
			f.holes = append(f.holes, sector.Extent{Start: lo / S, End: (hi + S - 1) / S})
			f.holesMu.Unlock()
		}
	}
	for pos := off; pos < end; {
		ds, de, err := f.content.NextData(pos)
		if errors.Is(err, io.EOF) {
			skipped(pos, end)
			break
		}
		if err != nil {
			return entryError(f.e, err)
		}
		ds = max(ds, pos)
		if ds >= end {
			skipped(pos, end)
			break
		}
		ds -= ds % S
		skipped(pos, ds)
		de = min(end, (de+S-1)/S*S)
		for p := ds; p < de; {
			n := min(int64(len(buf)), de-p)
			if err := readFull(f.content, buf[:n], p, f.e); err != nil {
				return entryError(f.e, err)
			}
			if _, err := sf.WriteAt(w.t.cipher, buf[:n], p); err != nil {
				return entryError(f.e, err)
			}
			w.prog.AddBytes(n)
			done += n
			p += n
		}
		pos = de
	}
	w.prog.AddBytes(end - off - done) // holes
	return nil
}

// endChunk counts a chunk of f as ended; the last one finishes the file or,
// after any failure, removes it.
func (w *writer) endChunk(f *fileJob, err error) {
	if err != nil {
		f.failed.Store(true)
	}
	if f.pending.Add(-1) != 0 {
		return
	}
	defer f.d.drop()
	if f.content != nil {
		f.content.Close()
	}
	switch {
	case f.failed.Load() || f.prepErr != nil:
		if f.w != nil {
			f.w.abort()
		}
	case f.skip:
		w.skipped.Add(1)
		w.prog.AddFiles(1)
	default:
		if f.split {
			f.holesMu.Lock()
			holes := f.holes
			f.holesMu.Unlock()
			if err := f.w.setHoles(holes); err != nil {
				f.w.abort()
				w.errs.set(entryError(f.e, err))
				return
			}
		}
		if ferr := f.w.finish(f.bname, f.long); ferr != nil {
			w.errs.set(entryError(f.e, ferr))
			return
		}
		w.written.Add(1)
		w.prog.AddFiles(1)
	}
}

// linkAll gives hard-linked files their other names.
func (w *writer) linkAll(ctx context.Context) error {
	for _, l := range w.links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.link(l); err != nil {
			return entryError(l.e, err)
		}
		w.prog.AddFiles(1)
	}
	return nil
}

func (w *writer) link(l linkJob) error {
	fdir, fname := splitRel(l.first)
	ffd, err := openDirRel(w.t.rootfd, fdir)
	if err != nil {
		return err
	}
	defer unix.Close(ffd)
	dfd := ffd
	if l.dir != fdir {
		if dfd, err = openDirRel(w.t.rootfd, l.dir); err != nil {
			return err
		}
		defer unix.Close(dfd)
	}
	var first, have unix.Stat_t
	if err := unix.Fstatat(ffd, fname, &first, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	err = unix.Fstatat(dfd, l.bname, &have, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && have.Ino == first.Ino && have.Dev == first.Dev:
		w.skipped.Add(1)
		return nil
	case err == nil:
		if err := unix.Unlinkat(dfd, l.bname, 0); err != nil {
			return err
		}
	case !errors.Is(err, syscall.ENOENT):
		return err
	}
	if l.longName != "" {
		if err := names.WriteLongName(dfd, l.bname, l.longName); err != nil {
			return err
		}
	}
	if err := unix.Linkat(ffd, fname, dfd, l.bname, 0); err != nil {
		return fmt.Errorf("hard link: %w", err)
	}
	w.written.Add(1)
	return nil
}

// finish ends the transfer once the result was checked: the times of the
// directories (deepest first, after everything in them changed), a flush
// of the target file system, the marker's removal, and last the root's
// times, which the removal changed.
func (w *writer) finish() error {
	rootfd := w.t.rootfd
	for i := len(w.dirTimes) - 1; i >= 0; i-- {
		dt := w.dirTimes[i]
		fd, err := openDirRel(rootfd, dt.rel)
		if err != nil {
			return fmt.Errorf("set directory times: %w", err)
		}
		err = setTimes(fd, "", dt.atime, dt.mtime)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("set directory times: %w", err)
		}
	}
	if err := unix.Syncfs(rootfd); err != nil {
		return fmt.Errorf("flush %s: %w", w.t.backing, err)
	}
	if err := unix.Unlinkat(rootfd, keywrap.IncompleteFile, 0); err != nil {
		return fmt.Errorf("remove the marker: %w", err)
	}
	if err := unix.Fsync(rootfd); err != nil {
		return fmt.Errorf("flush %s: %w", w.t.backing, err)
	}
	return setTimes(rootfd, "", w.rootTime[0], w.rootTime[1])
}
