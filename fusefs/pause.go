package fusefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Why and how a mount pauses for a snapshot:
//
// A snapshot copies the backing directory while the volume stays mounted.
// The copy is crash-consistent when its last pass runs while nothing
// changes the backing and everything that write(2) had returned before the
// pause began has reached the backing. With the writeback cache write(2)
// returns once the data is in the kernel's page cache, so the pause first
// makes the kernel write that back. It goes in three steps:
//
//  1. New write(2)s wait. A write(2) to a file whose cached attributes have
//     expired sends a GETATTR with a file handle before it takes the inode
//     lock (caller.go); the pause drops the attributes of every file the
//     kernel knows, answers every request with attributes that expire at
//     once, and holds a GETATTR whose caller sits in a writing system call
//     until the resume. Then every regular file the kernel knows is
//     fsync(2)ed through the mount: fsync takes the inode lock, so it waits
//     for a write(2) under way, and it returns once the dirty pages have
//     come back as WRITE requests. Those, and the SETATTRs that carry the
//     cached times, still flow. Namespace changes still flow too: a
//     create waiting here would hold its directory's lock, which the path
//     walks of the fsyncs may need.
//  2. Changes to names and attributes wait at their entry (create, mkdir,
//     mknod, symlink, link, unlink, rmdir, rename, setattr beyond times,
//     setxattr, removexattr, fallocate, copy_file_range, O_TRUNC opens);
//     the pause waits for those in service to finish, then fsyncs again
//     the files that step 1 missed because they were renamed meanwhile.
//  3. WRITE requests and time updates wait as well, and the pause waits for
//     those in service. The backing directory no longer changes.
//
// Resume lets everything go on. Requests that wait are interrupted by a
// signal to their caller like any other (EINTR), and wait outside the
// request bound (limit.go), so a long pause cannot starve reads.
//
// What holds: every write(2), and every other change whose system call
// returned before the pause began, is in the backing when step 3 ends, and
// no WRITE is applied halfway. A write(2) that was under way may be there in
// part, as after a crash. Stores into a shared writable mmap are not system
// calls and cannot be held: those made before the pause are written back by
// the fsyncs of step 1, those made during the pause may be in the snapshot
// page by page.

// pause levels, in the order a pause raises them.
const (
	levelNone   int32 = iota
	levelWrites       // step 1: new write(2)s wait at their GETATTR
	levelMeta         // step 2: and changes to names and attributes
	levelAll          // step 3: and WRITE requests and time updates
)

// request classes that a pause counts while in service.
const (
	classMeta = iota // waits from levelMeta on
	classData        // waits from levelAll on
	numClasses
)

// pauseTimeout bounds how long a pause may take to reach step 3: flushing
// what the kernel holds and draining the requests in service.
const pauseTimeout = 2 * time.Minute

// ErrPaused is returned by Pause while another pause holds the mount.
var ErrPaused = errors.New("the mount is already paused for another snapshot")

// pauser holds the pause state of one file system.
type pauser struct {
	level  atomic.Int32
	active [numClasses]atomic.Int64
	// resumed is closed when the current pause ends; replaced by each
	// pause before it raises the level.
	resumed atomic.Pointer[chan struct{}]
	// changed wakes a pause that waits for requests in service to leave.
	changed chan struct{}
	// waiting counts requests held back now (tests, logs).
	waiting atomic.Int64
	// flushing: the pause fsyncs files through the mount (step 1); its own
	// FSYNCs need no fsync of the backing files.
	flushing atomic.Bool

	mu      sync.Mutex // serializes Pause and Resume
	gen     uint64     // GUARDED_BY(mu): number of the current or last pause
	held    bool       // GUARDED_BY(mu): a pause is in effect
	started time.Time  // GUARDED_BY(mu): when step 1 began
}

func newPauser() *pauser {
	p := &pauser{changed: make(chan struct{}, 1)}
	ch := make(chan struct{})
	close(ch)
	p.resumed.Store(&ch)
	return p
}

// enter admits a request of class c from thread tid, waiting while a pause
// holds it back. It returns false when the request was interrupted while
// it waited (by a signal that is not quiet, gatesignal.go).
func (p *pauser) enter(c int, cancel <-chan struct{}, tid uint32) bool {
	block := levelMeta
	if c == classData {
		block = levelAll
	}
	for {
		p.active[c].Add(1)
		if p.level.Load() < block {
			return true
		}
		p.active[c].Add(-1)
		p.notify()
		if !p.wait(block, cancel, tid) {
			return false
		}
	}
}

// exit ends a request admitted by enter.
func (p *pauser) exit(c int) {
	p.active[c].Add(-1)
	if p.level.Load() != levelNone {
		p.notify()
	}
}

func (p *pauser) notify() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// wait blocks until the level drops below block, or until cancel comes
// for a signal of thread tid that is not quiet (gatesignal.go).
func (p *pauser) wait(block int32, cancel <-chan struct{}, tid uint32) bool {
	if p.level.Load() < block {
		return true
	}
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	q := quietWaiter{cancel: cancel, tid: tid}
	defer q.stop()
	for p.level.Load() >= block {
		select {
		case <-*p.resumed.Load():
			continue
		case <-q.cancel:
		case <-q.poll:
		}
		if q.wake() {
			return false
		}
	}
	return true
}

// drain waits until no request of class c is in service.
func (p *pauser) drain(ctx context.Context, c int) error {
	for p.active[c].Load() > 0 {
		select {
		case <-p.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// PauseReport says what a pause took.
type PauseReport struct {
	// Gen numbers the pause; Resume takes it back.
	Gen uint64
	// PreFlush is the write-back before anything waited.
	PreFlush time.Duration
	// Flush is the write-back while new write(2)s waited (step 1).
	Flush time.Duration
	// Drain is the wait for requests in service (steps 2 and 3).
	Drain time.Duration
}

// Pause stops everything that changes the backing directory (see the top
// of this file) and returns once the backing is quiescent, with the
// kernel's dirty pages written back. It fails with ErrPaused while another
// pause holds the mount, and undoes itself when ctx ends or the steps take
// longer than pauseTimeout. It must not be called from a request handler.
func (f *FS) Pause(ctx context.Context) (PauseReport, error) {
	p := f.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held {
		return PauseReport{}, ErrPaused
	}
	if f.server.Load() == nil {
		return PauseReport{}, errors.New("fusefs: pause: the file system is not mounted")
	}
	ctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	var rep PauseReport
	// Most of what the kernel holds goes back while writes still flow, so
	// that little is left for step 1; and the backing file system writes
	// out its own dirty data, which a reflink of a file would otherwise
	// have to wait for while writes are paused.
	t := time.Now()
	f.flushDirty()
	f.syncBacking()
	rep.PreFlush = time.Since(t)

	p.gen++
	rep.Gen = p.gen
	ch := make(chan struct{})
	p.resumed.Store(&ch)
	p.held, p.started = true, time.Now()
	p.level.Store(levelWrites)
	f.invalidateFileAttrs()
	p.flushing.Store(true)
	missed := f.fsyncInodes(f.regularInodes())
	p.flushing.Store(false)
	rep.Flush = time.Since(p.started)

	t = time.Now()
	p.level.Store(levelMeta)
	err := p.drain(ctx, classMeta)
	if err == nil && len(missed) > 0 {
		// Files renamed while step 1 went through them: their names
		// hold still now.
		p.flushing.Store(true)
		f.fsyncInodes(missed)
		p.flushing.Store(false)
	}
	if err == nil {
		p.level.Store(levelAll)
		err = p.drain(ctx, classData)
	}
	rep.Drain = time.Since(t)
	if err != nil {
		p.resumeLocked()
		return rep, fmt.Errorf("fusefs: pause: requests in service did not finish within %s: %w", pauseTimeout, err)
	}
	f.log.Info().Str("op", "pause").Uint64("pause", rep.Gen).Dur("flush", rep.Flush).Dur("drain", rep.Drain).
		Msg("writes paused for a snapshot")
	return rep, nil
}

// syncBacking writes the backing file system's dirty data out (syncfs).
func (f *FS) syncBacking() {
	fd, err := unix.Open(f.backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		f.log.Warn().Str("op", "pause").Err(err).Msg("cannot open the backing directory to sync it")
		return
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		f.log.Warn().Str("op", "pause").Err(err).Msg("syncing the backing file system failed")
	}
}

// Resume ends pause gen and reports how long writes waited. held is false
// when that pause had already ended (unmount, another Resume): whatever
// relied on it did not have a quiescent backing throughout.
func (f *FS) Resume(gen uint64) (paused time.Duration, held bool) {
	p := f.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.held || p.gen != gen {
		return 0, false
	}
	d := p.resumeLocked()
	f.log.Info().Str("op", "resume").Uint64("pause", gen).Dur("paused", d).Msg("writes resumed after a snapshot")
	return d, true
}

// endPause lifts any pause, for an unmount.
func (f *FS) endPause() {
	p := f.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held {
		p.resumeLocked()
	}
}

func (p *pauser) resumeLocked() time.Duration {
	p.level.Store(levelNone)
	close(*p.resumed.Load())
	p.held = false
	return time.Since(p.started)
}

// Paused reports whether a pause is in effect.
func (f *FS) Paused() bool { return f.pause.level.Load() != levelNone }

// expireAttr gives the kernel attributes of a regular file that expire at
// once while the mount is careful about space (space.go) or paused, so its
// next write(2) asks first. nodeLayer as for space.expireAttr.
func (f *FS) expireAttr(a *fuse.Attr, valid *uint64, nsec *uint32, nodeLayer bool) {
	f.space.Load().expireAttr(a, valid, nsec, nodeLayer)
	f.pause.expire(a, valid, nsec, nodeLayer)
}

// expire is the pause's part of expireAttr.
func (p *pauser) expire(a *fuse.Attr, valid *uint64, nsec *uint32, nodeLayer bool) {
	if p.level.Load() == levelNone || a.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	*valid, *nsec = 0, 0
	if nodeLayer {
		*nsec = 1
	}
}

// ownThread reports whether tid is a thread of this process: the pause's
// own fsyncs come from the daemon itself.
func ownThread(tid uint32) bool {
	if tid == 0 {
		return false
	}
	_, err := os.Stat("/proc/self/task/" + strconv.FormatUint(uint64(tid), 10))
	return err == nil
}
