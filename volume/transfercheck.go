package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The check after a transfer reads the written volume back through a
// decrypting Source and compares it with the source, entry by entry and
// byte by byte, in parallel across files and chunks.

// Mismatch is a difference between a source and the volume written from
// it.
type Mismatch struct {
	Path string // plaintext path
	What string
	// Backing is the entry's backing path in the volume ("" when the
	// volume lacks the entry).
	Backing string
}

func (m *Mismatch) Error() string {
	return fmt.Sprintf("%s: %s", m.Path, m.What)
}

// ErrMismatch is matched (errors.Is) by a check that found a difference.
var ErrMismatch = errors.New("the written volume differs from its source")

func (m *Mismatch) Is(target error) bool { return target == ErrMismatch }

// compareTrees compares dst with src: the same entries in the same order,
// with equal types, modes, owners, sizes, modification times (directories
// excepted: theirs are set last), symlink targets, device numbers,
// attributes, hard links and contents. It returns the regular files
// compared, or the first *Mismatch.
func compareTrees(ctx context.Context, src, dst Source, workers int, prog Progress) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &comparer{src: src, dst: dst, prog: prog, tasks: make(chan cmpTask, 2*workers),
		links: map[uint64]uint64{}, back: map[uint64]uint64{}, contentSeen: map[uint64]struct{}{}}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { c.work(ctx, cancel) })
	}
	srcFeed, dstFeed := walkInto(ctx, src, "read the source again"), walkInto(ctx, dst, "read the written volume")
	err := c.zip(ctx, srcFeed, dstFeed)
	close(c.tasks)
	if err != nil {
		cancel()
	}
	srcErr, dstErr := srcFeed.end(), dstFeed.end()
	wg.Wait()
	// The first difference found wins; the workers and walks stopped by it
	// report only that they were stopped.
	for _, e := range []error{err, c.errs.get(), srcErr, dstErr} {
		if e != nil && !errors.Is(e, context.Canceled) {
			return c.files.Load(), e
		}
	}
	for _, e := range []error{err, c.errs.get(), srcErr, dstErr} {
		if e != nil {
			return c.files.Load(), e
		}
	}
	return c.files.Load(), nil
}

// walkFeed is a walk running on its own goroutine, feeding ch.
type walkFeed struct {
	ch   chan *Entry
	errc chan error
	what string // what the walk reads, for its error
	err  error
	done bool
}

func walkInto(ctx context.Context, s Source, what string) *walkFeed {
	w := &walkFeed{ch: make(chan *Entry, 64), errc: make(chan error, 1), what: what}
	go func() {
		defer close(w.ch)
		w.errc <- s.Walk(ctx, func(e *Entry) error {
			cp := *e
			select {
			case w.ch <- &cp:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return w
}

// end drains the walk and returns its error (once ch is closed).
func (w *walkFeed) end() error {
	if w.done {
		return w.err
	}
	for range w.ch {
	}
	if err := <-w.errc; err != nil {
		w.err = fmt.Errorf("%s: %w", w.what, err)
	}
	w.done = true
	return w.err
}

type comparer struct {
	src, dst Source
	prog     Progress
	tasks    chan cmpTask
	files    atomic.Int64

	// links maps source file identities of hard-linked files to the
	// written ones, and back the other way: both must stay one to one.
	links, back map[uint64]uint64
	// contentSeen holds the hard-linked files whose content is queued.
	contentSeen map[uint64]struct{}

	errs firstError
}

type cmpTask struct {
	p        *cmpPair
	off, end int64
}

// cmpPair is a regular file whose content is compared, possibly in
// chunks on several workers.
type cmpPair struct {
	a, b    *Entry
	once    sync.Once
	ca, cb  Content
	openErr error
	pending atomic.Int32
}

// zip walks both trees side by side. A walk that ends early because it
// failed reports its failure, not a difference.
func (c *comparer) zip(ctx context.Context, src, dst *walkFeed) error {
	for {
		a, aok := <-src.ch
		b, bok := <-dst.ch
		if !aok {
			if err := src.end(); err != nil {
				return err
			}
		}
		if !bok {
			if err := dst.end(); err != nil {
				return err
			}
		}
		switch {
		case !aok && !bok:
			return nil
		case !aok:
			return &Mismatch{Path: b.Path, Backing: b.Backing, What: "is in the written volume but not in the source"}
		case !bok:
			return &Mismatch{Path: a.Path, What: "is missing from the written volume"}
		}
		if b.Err != nil {
			return &Mismatch{Path: b.Path, Backing: b.Backing, What: fmt.Sprintf("cannot be read back from the written volume: %v", b.Err)}
		}
		if a.Err != nil {
			return entryError(a, a.Err)
		}
		if a.Path != b.Path {
			return &Mismatch{Path: a.Path, What: fmt.Sprintf("is missing from the written volume, which has %q in its place", b.Path)}
		}
		if err := c.compareMeta(a, b); err != nil {
			return err
		}
		if a.Path != "" {
			c.prog.AddFiles(1)
		}
		if a.Type == unix.S_IFREG {
			if err := c.queue(ctx, a, b); err != nil {
				return err
			}
		}
		if err := c.errs.get(); err != nil {
			return err
		}
	}
}

// compareMeta compares everything but the content.
func (c *comparer) compareMeta(a, b *Entry) error {
	diff := func(format string, args ...any) error {
		return &Mismatch{Path: a.Path, Backing: b.Backing, What: fmt.Sprintf(format, args...)}
	}
	switch {
	case a.Type != b.Type:
		return diff("type %#o in the source, %#o written", a.Type, b.Type)
	case a.Type != unix.S_IFLNK && a.Mode != b.Mode:
		return diff("mode %#o in the source, %#o written", a.Mode, b.Mode)
	case a.UID != b.UID || a.GID != b.GID:
		return diff("owner %d:%d in the source, %d:%d written", a.UID, a.GID, b.UID, b.GID)
	case a.Type == unix.S_IFREG && a.Size != b.Size:
		return diff("size %d in the source, %d written", a.Size, b.Size)
	case a.Type == unix.S_IFLNK && a.Target != b.Target:
		return diff("symlink target differs")
	case (a.Type == unix.S_IFCHR || a.Type == unix.S_IFBLK) && a.Rdev != b.Rdev:
		return diff("device number %#x in the source, %#x written", a.Rdev, b.Rdev)
	case a.Type != unix.S_IFDIR && a.Path != "" && !a.Mtime.Equal(b.Mtime):
		return diff("modified %s in the source, %s written", a.Mtime.Format(time.RFC3339Nano), b.Mtime.Format(time.RFC3339Nano))
	case !slices.EqualFunc(a.Xattrs, b.Xattrs, func(x, y Xattr) bool { return x.Name == y.Name && bytes.Equal(x.Value, y.Value) }):
		return diff("extended attributes differ")
	}
	// A volume that binds symlink targets to their entry (format version
	// 4) writes each name of a hard-linked symlink as a symlink of its own.
	splitLink := a.Type == unix.S_IFLNK && b.Nlink == 1
	if a.Type != unix.S_IFDIR && !splitLink && (a.Nlink > 1 || b.Nlink > 1) {
		wantB, seenA := c.links[a.Inode]
		wantA, seenB := c.back[b.Inode]
		switch {
		case !seenA && !seenB:
			c.links[a.Inode], c.back[b.Inode] = b.Inode, a.Inode
		case !seenA || !seenB || wantB != b.Inode || wantA != a.Inode:
			return diff("hard links differ from the source's")
		}
	}
	return nil
}

// queue hands the content comparison of a regular file to the workers.
func (c *comparer) queue(ctx context.Context, a, b *Entry) error {
	c.files.Add(1)
	if a.Size == 0 {
		return nil
	}
	if a.Nlink > 1 {
		if _, ok := c.contentSeen[a.Inode]; ok {
			return nil // compared under its first name
		}
		c.contentSeen[a.Inode] = struct{}{}
	}
	p := &cmpPair{a: a, b: b}
	n := (a.Size + chunkSize - 1) / chunkSize
	p.pending.Store(int32(n))
	for i := range n {
		off := i * chunkSize
		select {
		case c.tasks <- cmpTask{p: p, off: off, end: min(a.Size, off+chunkSize)}:
		case <-ctx.Done():
			for range n - i {
				c.endChunk(p)
			}
			return ctx.Err()
		}
	}
	return nil
}

func (c *comparer) work(ctx context.Context, cancel context.CancelFunc) {
	bufA, bufB := make([]byte, ioSize), make([]byte, ioSize)
	for tk := range c.tasks {
		if ctx.Err() != nil {
			c.endChunk(tk.p)
			continue
		}
		err := c.compareChunk(tk, bufA, bufB)
		c.endChunk(tk.p)
		if err != nil {
			c.errs.set(err)
			cancel()
		}
	}
}

func (c *comparer) compareChunk(tk cmpTask, bufA, bufB []byte) error {
	p := tk.p
	p.once.Do(func() {
		if p.ca, p.openErr = c.src.Open(p.a); p.openErr != nil {
			return
		}
		if p.cb, p.openErr = c.dst.Open(p.b); p.openErr != nil {
			p.openErr = &Mismatch{Path: p.a.Path, Backing: p.b.Backing, What: fmt.Sprintf("cannot be read back from the written volume: %v", p.openErr)}
		}
	})
	if p.openErr != nil {
		return p.openErr
	}
	for off := tk.off; off < tk.end; {
		n := min(int64(len(bufA)), tk.end-off)
		var errA, errB error
		var wg sync.WaitGroup
		wg.Go(func() { errA = readFull(p.ca, bufA[:n], off, p.a) })
		errB = readFull(p.cb, bufB[:n], off, p.b)
		wg.Wait()
		if errA != nil {
			return entryError(p.a, errA)
		}
		if errB != nil {
			return &Mismatch{Path: p.a.Path, Backing: p.b.Backing, What: fmt.Sprintf("cannot be read back from the written volume: %v", errB)}
		}
		if !bytes.Equal(bufA[:n], bufB[:n]) {
			i := 0
			for bufA[i] == bufB[i] {
				i++
			}
			return &Mismatch{Path: p.a.Path, Backing: p.b.Backing, What: fmt.Sprintf("content differs from the source at byte %d", off+int64(i))}
		}
		c.prog.AddBytes(n)
		off += n
	}
	return nil
}

func (c *comparer) endChunk(p *cmpPair) {
	if p.pending.Add(-1) != 0 {
		return
	}
	if p.ca != nil {
		p.ca.Close()
	}
	if p.cb != nil {
		p.cb.Close()
	}
}
