package fusefs

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// Keys is what the gate hands to file system calls while it is open.
type Keys struct {
	Content *sector.Cipher
	Names   *names.Codec
	// Release, if set, runs after Content and Names are closed when the gate
	// drops these keys. It lets the owner zeroize the key material the
	// cipher and codec borrowed (sector.NewCipher does not own its key).
	Release func()
}

// Gate modes for NewGate.
const (
	ModeEIO  = "eio"
	ModeHang = "hang"
)

// invalidateWait bounds how long Close waits for the kernel cache
// invalidation. In hang mode a request blocked on the closed gate can hold a
// page or directory lock the kernel needs for the invalidation, which would
// otherwise stall Close until the gate reopens.
const invalidateWait = 5 * time.Second

// Gate decides whether file system calls may use the volume keys.
//
// While open, Acquire hands out the keys and counts the caller as in flight.
// Close makes every later Acquire fail (mode "eio": syscall.EIO at once) or
// wait (mode "hang": until Open, or until the request is interrupted:
// syscall.EINTR), waits for the in-flight callers to release, closes the
// cipher and codec, drops the kernel's cached pages, attributes and entries
// through the registered invalidator, and asks the runtime to return freed
// memory. A Gate is safe for concurrent use.
//
// Signals in hang mode. A signal to a process whose request waits here
// makes the kernel send FUSE_INTERRUPT, which cancels the request's
// context, and the call fails with EINTR, unless the signal is one ignored
// by default (gatesignal.go). The kernel interrupts only
// requests that their caller waits on itself, so:
//   - Readahead READs are background requests when FUSE_ASYNC_READ is
//     negotiated; the reader then waits for the page lock in TASK_KILLABLE
//     and no signal but a fatal one ends that. A hang mode mount therefore
//     does without async reads (Mount): readahead is sent as the reader's
//     own request, one at a time, which costs sequential read throughput.
//   - GETATTR waits at the gate too (Wait), so a caller that arrives after
//     the close waits in a request of its own before the kernel takes any
//     lock that others could queue behind.
//   - What no daemon can change: a caller that waits in the kernel behind
//     another caller's request (the page lock held by a READ of the same
//     pages, TASK_KILLABLE; the dentry of a name being looked up,
//     TASK_UNINTERRUPTIBLE) ends when that request ends, that is when its
//     caller gets a signal or the gate opens. Such queues form only behind
//     requests that did not ask for attributes first: those under way when
//     the gate closed, and reads of files already open that start within
//     the attribute timeout after it (see Wait).
//   - A page fault of an mmap'ed file is not a system call: a signal runs
//     the handler and the access faults again (it waits again) until the
//     gate opens.
type Gate struct {
	mode string
	log  zerolog.Logger

	// inflight is read-locked by every holder of keys; Close and Open take
	// the write lock to wait until nobody uses the keys they replace.
	inflight sync.RWMutex
	// release is inflight.RUnlock made once: a method value built per
	// Acquire would be a heap allocation on every FUSE request.
	release func()

	mu          sync.Mutex
	keys        *Keys         // GUARDED_BY(mu); nil while closed
	opened      chan struct{} // GUARDED_BY(mu); closed when the gate opens
	invalidator func()        // GUARDED_BY(mu)
	// closes counts the closes that dropped keys: a reply prepared under
	// one count must not be cached by the kernel under another
	// (entrycache.go).
	closes uint64 // GUARDED_BY(mu)

	refusals    atomic.Uint64
	transitions atomic.Uint64
}

// NewGate returns a closed gate. mode is ModeEIO or ModeHang; anything else
// is treated as ModeEIO, the safe default.
func NewGate(mode string, log zerolog.Logger) *Gate {
	if mode != ModeHang {
		mode = ModeEIO
	}
	g := &Gate{mode: mode, log: log, opened: make(chan struct{})}
	g.release = g.inflight.RUnlock
	return g
}

// Mode reports the gate's mode ("eio" or "hang").
func (g *Gate) Mode() string { return g.mode }

// setInvalidator registers the function Close calls to drop kernel caches.
func (g *Gate) setInvalidator(f func()) {
	g.mu.Lock()
	g.invalidator = f
	g.mu.Unlock()
}

// Open installs k and wakes every caller waiting in hang mode. Keys that
// were installed before are closed once nobody uses them any more.
func (g *Gate) Open(k *Keys) {
	if k == nil {
		return
	}
	g.mu.Lock()
	old := g.keys
	g.keys = k
	select {
	case <-g.opened:
	default:
		close(g.opened)
	}
	g.mu.Unlock()
	g.transitions.Add(1)
	if old != nil && old != k {
		g.inflight.Lock()
		//lint:ignore SA2001 empty critical section: waits for in-flight users of old keys
		g.inflight.Unlock()
		closeKeys(old)
	}
	g.log.Info().Str("op", "gate-open").Msg("key gate opened")
}

// Close drops the keys: later calls are refused (eio) or wait (hang), the
// keys are closed after the last in-flight user releases them, the kernel
// caches of the mount are invalidated and memory is returned to the OS.
// Close on a closed gate only logs.
func (g *Gate) Close(cause string) {
	start := time.Now()
	g.mu.Lock()
	old := g.keys
	g.keys = nil
	if old != nil {
		g.closes++
	}
	select {
	case <-g.opened:
		g.opened = make(chan struct{})
	default:
	}
	inv := g.invalidator
	g.mu.Unlock()
	if old == nil {
		g.log.Debug().Str("op", "gate-close").Str("cause", cause).Msg("key gate already closed")
		return
	}
	g.transitions.Add(1)

	g.inflight.Lock()
	//lint:ignore SA2001 empty critical section: waits for in-flight users of the keys
	g.inflight.Unlock()
	closeKeys(old)

	invalidated := true
	if inv != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			inv()
		}()
		select {
		case <-done:
		case <-time.After(invalidateWait):
			invalidated = false
			g.log.Warn().Str("op", "gate-close").Msg("kernel cache invalidation still running (a blocked request holds a kernel lock); it completes when the request ends")
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	g.log.Warn().Str("op", "gate-close").Str("cause", cause).Bool("caches_invalidated", invalidated).
		Dur("latency", time.Since(start)).Str("mode", g.mode).Msg("key gate closed")
}

func closeKeys(k *Keys) {
	if k.Content != nil {
		k.Content.Close()
	}
	if k.Names != nil {
		k.Names.Close()
	}
	if k.Release != nil {
		k.Release()
	}
}

// IsOpen reports whether the gate currently hands out keys.
func (g *Gate) IsOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.keys != nil
}

// epoch returns how many times the gate has closed and whether it is open
// now, read together.
func (g *Gate) epoch() (closes uint64, open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closes, g.keys != nil
}

// Refusals counts Acquire and Wait calls that found the gate closed.
func (g *Gate) Refusals() uint64 { return g.refusals.Load() }

// Transitions counts opens and closes that changed the keys.
func (g *Gate) Transitions() uint64 { return g.transitions.Load() }

// Acquire returns the keys and a release function the caller must call when
// it no longer uses them (the keys stay valid until then). A closed gate
// returns syscall.EIO at once in eio mode; in hang mode Acquire waits until
// the gate opens or ctx is done, then returns syscall.EINTR.
// A caller must not call Acquire again before releasing: Close waiting for
// the first acquisition would deadlock the second.
func (g *Gate) Acquire(ctx context.Context) (*Keys, func(), error) {
	for {
		g.inflight.RLock()
		g.mu.Lock()
		k, ch := g.keys, g.opened
		g.mu.Unlock()
		if k != nil {
			return k, g.release, nil
		}
		g.inflight.RUnlock()
		if err := g.refuse(ctx, ch); err != nil {
			return nil, nil, err
		}
	}
}

// refuse counts a call that found the gate closed. In eio mode it returns
// syscall.EIO; in hang mode it waits until opened is closed (nil, the
// caller tries again) or its caller gets a signal that is not quiet
// (syscall.EINTR; see gatesignal.go).
func (g *Gate) refuse(ctx context.Context, opened <-chan struct{}) error {
	g.refusals.Add(1)
	if g.mode != ModeHang {
		return syscall.EIO
	}
	q := quietWaiter{}
	if ctx != nil {
		q.cancel = ctx.Done()
		if c, ok := fuse.FromContext(ctx); ok {
			q.tid = c.Pid
		}
	}
	defer q.stop()
	for {
		select {
		case <-opened:
			return nil
		case <-q.cancel:
		case <-q.poll:
		}
		first := q.w == nil
		if q.wake() {
			return syscall.EINTR
		}
		if first {
			g.log.Info().Uint32("tid", q.tid).Msg("a signal that asks nothing of its process (SIGCHLD, SIGCONT, SIGURG, SIGWINCH) interrupted a call waiting at the closed key gate; it waits on")
		}
	}
}

// Wait is Acquire for a call that needs no key: it returns nil at once in
// eio mode or while the gate is open, and in hang mode waits like Acquire
// (syscall.EINTR when ctx is done first).
//
// GETATTR waits here so that, in hang mode, a reader reaching the closed
// gate waits in a request of its own, which a signal interrupts, before the
// kernel takes a lock that another reader could wait on: the page lock of
// a file read (TASK_KILLABLE) or the in-lookup dentry of a name
// (uninterruptible). The gate drops the cached attributes when it closes
// (InvalidateAll), so a path walk asks for the attributes of the mount's
// root at once (default_permissions checks it). A read(2) of an open file
// asks for them (auto_inval_data) only once they have expired: with the
// writeback cache the kernel keeps the size of a regular file itself, and
// dropping the cached attributes does not make it stale. So for the
// attribute timeout after the close, such a read still goes straight to
// the page cache.
func (g *Gate) Wait(ctx context.Context) error {
	if g.mode != ModeHang {
		return nil
	}
	for {
		g.mu.Lock()
		open, ch := g.keys != nil, g.opened
		g.mu.Unlock()
		if open {
			return nil
		}
		if err := g.refuse(ctx, ch); err != nil {
			return err
		}
	}
}

// tryAcquire is Acquire for a call that holds locks and may not wait: it
// returns the keys and their release function while the gate is open, and
// nil otherwise (counted as a refusal).
func (g *Gate) tryAcquire() (*Keys, func()) {
	g.inflight.RLock()
	g.mu.Lock()
	k := g.keys
	g.mu.Unlock()
	if k == nil {
		g.inflight.RUnlock()
		g.refusals.Add(1)
		return nil, nil
	}
	return k, g.release
}
