package fusefs

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Why a mount daemon runs on one P while one client talks to it:
//
// A process that stats, unlinks or reads small files sends one FUSE request
// at a time and waits for each reply. go-fuse keeps two or more goroutines
// blocked in read(2) on /dev/fuse, and each holds a P while it waits. When
// every P sits in a syscall, Go's sysmon takes one back and wakes another
// thread to spin for work that never comes. On 2 CPUs that nearly doubled
// the wake-ups per request and made `rm -rf` of the Go tree about 1.3x
// slower than with GOMAXPROCS=1 (perf sched_wakeup counts,
// docs/performance.md).
//
// Two kinds of load want all CPUs instead:
//   - large reads and writes: the kernel keeps several in flight (readahead,
//     writeback) and their AES-GCM work runs in parallel; one P cost a
//     quarter of the cold sequential read rate;
//   - several clients at once, whose requests overlap in the daemon.
//
// So the daemon runs with GOMAXPROCS=1, widens to all CPUs when it sees a
// bulk request or two requests in flight at once, and narrows again once it
// has seen neither for procsIdle. Whether a goroutine waits for a P
// (runtime/metrics) is no usable signal: go-fuse starts a new reader
// goroutine whenever its readers are all busy, so one is often runnable
// with a single client too, and widening on it lost most of the gain.
const (
	// bulkRequest is the request size from which work is worth spreading:
	// readahead and writeback send at least this much per request once a
	// stream is sequential; single-page I/O never does.
	bulkRequest = 128 << 10
	// procsIdle keeps the daemon wide across the short gaps of a stream, so
	// GOMAXPROCS (a stop-the-world) changes at most a few times a second.
	procsIdle = 200 * time.Millisecond
)

// EnvNoAdaptiveProcs, when set to any value, keeps the daemon on all CPUs.
const EnvNoAdaptiveProcs = "ENCVOL_NO_ADAPTIVE_PROCS"

// procGovernor switches GOMAXPROCS between 1 and wide. A nil governor is
// off: every method is then a no-op.
type procGovernor struct {
	wide    int
	setProc func(int) int       // runtime.GOMAXPROCS; replaced in tests
	now     func() time.Time    // time.Now; replaced in tests
	after   func(func()) func() // arms a procsIdle timer, returns its re-arm

	isWide   atomic.Bool
	inflight atomic.Int32 // requests between enter and exit
	lastBusy atomic.Int64 // UnixNano of the latest sign that one P is too few

	mu    sync.Mutex // serializes switches
	rearm func()
}

// governor is process-wide because GOMAXPROCS is.
var governor atomic.Pointer[procGovernor]

// startGovernor narrows the process to one P, unless the user fixed
// GOMAXPROCS, turned the governor off, or there is only one CPU. It is
// called after the FUSE server exists: go-fuse sizes its reader count from
// GOMAXPROCS at creation, and wide phases need all of those readers.
func startGovernor() {
	if os.Getenv("GOMAXPROCS") != "" || os.Getenv(EnvNoAdaptiveProcs) != "" {
		return
	}
	g := newProcGovernor(runtime.GOMAXPROCS(0), runtime.GOMAXPROCS, time.Now, func(f func()) func() {
		t := time.AfterFunc(procsIdle, f)
		return func() { t.Reset(procsIdle) }
	})
	if g == nil || !governor.CompareAndSwap(nil, g) {
		return
	}
	g.setProc(1)
}

func newProcGovernor(wide int, setProc func(int) int, now func() time.Time, after func(func()) func()) *procGovernor {
	if wide < 2 {
		return nil
	}
	return &procGovernor{wide: wide, setProc: setProc, now: now, after: after}
}

// enter is called when a request starts being served, exit when it ends.
// Overlapping requests mean more than one client, or a client with I/O in
// flight: widen.
func (g *procGovernor) enter() {
	if g != nil && g.inflight.Add(1) > 1 {
		g.busy()
	}
}

func (g *procGovernor) exit() {
	if g != nil {
		g.inflight.Add(-1)
	}
}

// noteRequest is called by Read and Write with the request size.
func (g *procGovernor) noteRequest(size int) {
	if g != nil && size >= bulkRequest {
		g.busy()
	}
}

// busy records that one P is too few now, and widens if narrow.
func (g *procGovernor) busy() {
	g.lastBusy.Store(g.now().UnixNano())
	if g.isWide.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isWide.Load() {
		return
	}
	g.setProc(g.wide)
	g.isWide.Store(true)
	if g.rearm == nil {
		g.rearm = g.after(g.idle)
	} else {
		g.rearm()
	}
}

// idle runs when the procsIdle timer fires: narrow if the daemon was not
// busy since, else wait another period.
func (g *procGovernor) idle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.now().Sub(time.Unix(0, g.lastBusy.Load())) < procsIdle {
		g.rearm()
		return
	}
	g.setProc(1)
	g.isWide.Store(false)
}
