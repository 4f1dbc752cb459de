package fusefs

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Which signals end a wait at a closed hang-mode gate:
//
// The kernel interrupts a waiting request (FUSE_INTERRUPT) when its caller
// has any signal pending that it does not block, and one it catches counts.
// So a shell's SIGCHLD, a terminal's SIGWINCH, or the SIGURG with which Go
// 1.26 preempts a thread that sits in a system call for 10 ms, would end
// the wait with EINTR: a read(2) of a regular file that no local disk ever
// fails that way, and that few programs retry. Signals whose default action
// is to ignore them tell a process something and ask nothing of it, so a
// wait ends on the others only: at once when one is pending at the
// interrupt, else when one arrives later, which the daemon has to look for
// (the kernel interrupts a request once). A caller that no longer waits in
// the same system call (its process died, or the mount went away) ends the
// wait too.

// quietSignals are the signals whose default action is to ignore them.
var quietSignals = sigBit(unix.SIGCHLD) | sigBit(unix.SIGCONT) | sigBit(unix.SIGURG) | sigBit(unix.SIGWINCH)

// signalPoll is how often a wait that a quiet signal interrupted looks for
// a signal that ends it: the delay a later SIGINT or SIGKILL sees.
const signalPoll = 50 * time.Millisecond

func sigBit(s syscall.Signal) uint64 { return 1 << (uint(s) - 1) }

// quietWaiter follows the interrupt of a request that waits for something
// (the gate, a pause, a slot of the request bound), so that only a signal
// that is not quiet ends the wait. A wait selects on cancel (the request's
// interrupt, nil once it came) and poll (ticks after that), and calls wake
// when either fires.
type quietWaiter struct {
	cancel <-chan struct{}
	poll   <-chan time.Time
	tid    uint32
	w      *callerWatch
	t      *time.Ticker
}

// wake reports whether the wait ends: at the interrupt, when the caller has
// a signal pending that is not quiet or cannot be watched; later, when
// ends says so.
func (q *quietWaiter) wake() bool {
	if q.w != nil {
		return q.w.ends()
	}
	if q.w = quietInterrupt(q.tid); q.w == nil {
		return true
	}
	q.cancel = nil
	q.t = time.NewTicker(signalPoll)
	q.poll = q.t.C
	return false
}

func (q *quietWaiter) stop() {
	if q.t != nil {
		q.t.Stop()
	}
}

// quietInterrupt looks at thread tid, whose waiting request the kernel
// interrupted: nil when the wait should end (a signal that is not quiet is
// pending, or the thread cannot be watched), else a watch to poll with
// ends while the wait goes on.
func quietInterrupt(tid uint32) *callerWatch {
	if tid == 0 {
		return nil
	}
	w := watchCaller(tid)
	if w.ends() {
		return nil
	}
	if quietInterruptSeen != nil {
		quietInterruptSeen(tid)
	}
	return &w
}

// quietInterruptSeen, when set (tests only, before any request), is told
// of each interrupted wait that goes on.
var quietInterruptSeen func(tid uint32)

// callerWatch is a thread waiting in a request, and the system call it
// waits in ("" when it could not be read).
type callerWatch struct {
	dir  string // /proc/TID/
	call string
	// running counts looks in a row that found the thread on a CPU. A
	// thread that waits for a reply sleeps, and is on a CPU only for a
	// moment when woken to re-check; twice in a row, signalPoll apart,
	// means it no longer waits here (the mount went away, and it runs on).
	running int
}

func watchCaller(tid uint32) callerWatch {
	w := callerWatch{dir: "/proc/" + strconv.FormatUint(uint64(tid), 10) + "/"}
	w.call, _ = w.syscall()
	return w
}

// syscall reads the thread's /proc/TID/syscall line; "running" (it is on a
// CPU for a moment, re-checking what it waits for) reads as unknown.
func (w callerWatch) syscall() (string, bool) {
	b, err := os.ReadFile(w.dir + "syscall")
	if err != nil {
		return "", false
	}
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("running")) {
		return "", true
	}
	return string(b), true
}

// ends reports whether the wait should end: the thread is gone, waits in
// another system call than before or in none, or has a signal pending that
// is not quiet (or its state cannot be read).
func (w *callerWatch) ends() bool {
	call, ok := w.syscall()
	if !ok || (call != "" && w.call != "" && call != w.call) {
		return true
	}
	if call == "" {
		if w.running++; w.running >= 2 {
			return true
		}
	} else {
		w.running = 0
	}
	if w.call == "" {
		w.call = call
	}
	b, err := os.ReadFile(w.dir + "status")
	if err != nil {
		return true
	}
	stop, ok := stopSignalPending(b)
	return stop || !ok
}

// stopSignalPending reads /proc/TID/status: whether the thread (SigPnd) or
// its process (ShdPnd) has a signal pending that the thread does not block
// (SigBlk) and that is not quiet. ok is false when a field is missing.
func stopSignalPending(status []byte) (stop, ok bool) {
	var pnd, shd, blk uint64
	var seen int
	for line := range bytes.Lines(status) {
		name, val, found := bytes.Cut(bytes.TrimSpace(line), []byte(":"))
		if !found {
			continue
		}
		var dst *uint64
		switch string(name) {
		case "SigPnd":
			dst = &pnd
		case "ShdPnd":
			dst = &shd
		case "SigBlk":
			dst = &blk
		default:
			continue
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 16, 64)
		if err != nil {
			return false, false
		}
		*dst = v
		seen++
	}
	if seen != 3 {
		return false, false
	}
	return (pnd|shd)&^blk&^quietSignals != 0, true
}
