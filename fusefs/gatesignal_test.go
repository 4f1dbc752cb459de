package fusefs

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestStopSignalPending(t *testing.T) {
	status := func(pnd, shd, blk uint64) []byte {
		return fmt.Appendf(nil, "Name:\tcat\nState:\tD (disk sleep)\nSigQ:\t1/63446\nSigPnd:\t%016x\nShdPnd:\t%016x\nSigBlk:\t%016x\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n", pnd, shd, blk)
	}
	for _, c := range []struct {
		name          string
		pnd, shd, blk uint64
		stop          bool
	}{
		{"nothing pending", 0, 0, 0, false},
		{"SIGURG on the thread", sigBit(unix.SIGURG), 0, 0, false},
		{"SIGCHLD and SIGWINCH to the process", 0, sigBit(unix.SIGCHLD) | sigBit(unix.SIGWINCH), 0, false},
		{"SIGCONT", 0, sigBit(unix.SIGCONT), 0, false},
		{"SIGINT on the thread", sigBit(unix.SIGINT), 0, 0, true},
		{"SIGTERM to the process", 0, sigBit(unix.SIGTERM), 0, true},
		{"SIGKILL with everything blocked", sigBit(unix.SIGKILL), 0, ^sigBit(unix.SIGKILL), true},
		{"SIGINT blocked", sigBit(unix.SIGINT), 0, sigBit(unix.SIGINT), false},
		{"SIGALRM next to SIGURG", sigBit(unix.SIGURG) | sigBit(unix.SIGALRM), 0, 0, true},
	} {
		stop, ok := stopSignalPending(status(c.pnd, c.shd, c.blk))
		if !ok || stop != c.stop {
			t.Errorf("%s: stop %v ok %v, want stop %v", c.name, stop, ok, c.stop)
		}
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := stopSignalPending(b); !ok {
		t.Errorf("this kernel's /proc/self/status does not parse:\n%s", b)
	}
	if _, ok := stopSignalPending([]byte("Name:\tcat\nSigPnd:\t0000000000000000\n")); ok {
		t.Error("a status without ShdPnd and SigBlk read as complete")
	}
	if _, ok := stopSignalPending([]byte("SigPnd:\tzz\nShdPnd:\t0\nSigBlk:\t0\n")); ok {
		t.Error("a mask that is not hex read as complete")
	}
}

// TestPauseWaitQuietInterrupt: a request held by a snapshot pause whose
// caller the kernel interrupted for a quiet signal waits on and is admitted
// when the pause ends; one whose caller is gone ends at once, and one that
// was waiting on ends once its caller dies.
func TestPauseWaitQuietInterrupt(t *testing.T) {
	hold := func(p *pauser) {
		ch := make(chan struct{})
		p.resumed.Store(&ch)
		p.level.Store(levelAll)
	}
	interrupted := make(chan struct{})
	close(interrupted)
	child, tid, seen := quietCaller(t)
	p := newPauser()
	hold(p)
	got := waitsOn(t, seen, "while the pause holds", func() bool { return p.wait(levelWrites, interrupted, tid) })
	p.mu.Lock()
	p.held = true
	p.resumeLocked()
	p.mu.Unlock()
	if ok := <-got; !ok {
		t.Fatal("a request interrupted for a caller with only quiet signals was refused, not admitted when the pause ended")
	}

	hold(p)
	got = waitsOn(t, seen, "while the pause holds", func() bool { return p.wait(levelWrites, interrupted, tid) })
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	select {
	case ok := <-got:
		if ok {
			t.Fatal("the wait of a caller that died was admitted while the pause holds")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait of a caller that died did not end within 10 s")
	}

	// Gone before the interrupt is looked at: refused at once.
	if p.wait(levelWrites, interrupted, tid) {
		t.Fatal("a request of a caller that is gone was admitted while the pause holds")
	}
	// No caller known: the interrupt ends the wait, as before.
	if p.wait(levelWrites, interrupted, 0) {
		t.Fatal("an interrupted request without a caller was admitted while the pause holds")
	}
}

// waitsOn runs wait, an interrupted wait of quietCaller's caller, and
// returns its result channel once the wait has looked at the caller and
// goes on (what says what it waits for).
func waitsOn(t *testing.T, seen <-chan uint32, what string, wait func() bool) <-chan bool {
	t.Helper()
	got := make(chan bool, 1)
	go func() { got <- wait() }()
	select {
	case <-seen:
	case ok := <-got:
		t.Fatalf("a request interrupted for a caller with only quiet signals ended at once (admitted: %v) %s", ok, what)
	case <-time.After(10 * time.Second):
		t.Fatal("an interrupted wait did not look at its caller within 10 s")
	}
	return got
}

// quietCaller starts a caller with no signal pending (a child asleep in
// the kernel) and has quietInterruptSeen report to seen while the test runs.
func quietCaller(t *testing.T) (child *exec.Cmd, tid uint32, seen chan uint32) {
	t.Helper()
	child = exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	tid = uint32(child.Process.Pid)
	waitAsleep(t, tid)
	seen = make(chan uint32, 4)
	quietInterruptSeen = func(tid uint32) { seen <- tid }
	t.Cleanup(func() { quietInterruptSeen = nil })
	return child, tid, seen
}

// waitAsleep waits until thread tid sleeps in a system call.
func waitAsleep(t *testing.T, tid uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := watchCaller(tid)
		if w.call != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d not asleep in a system call within 10 s", tid)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLimitWaitQuietInterrupt: a request waiting for a slot of the request
// bound whose caller the kernel interrupted for a quiet signal takes the
// next free slot; once its caller is gone the interrupt refuses it.
func TestLimitWaitQuietInterrupt(t *testing.T) {
	child, tid, seen := quietCaller(t)
	l := newLimitFS(nil, 1, &opCounts{})
	interrupted := make(chan struct{})
	close(interrupted)
	h := &fuse.InHeader{Opcode: 1}
	h.Caller.Pid = tid
	if !l.enter(nil, h) {
		t.Fatal("the first request found no free slot")
	}
	got := waitsOn(t, seen, "while no slot was free", func() bool { return l.enter(interrupted, h) })
	l.exit()
	if ok := <-got; !ok {
		t.Fatal("a request interrupted for a caller with only quiet signals did not take the slot that came free")
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if l.enter(interrupted, h) {
		t.Fatal("a request of a caller that is gone took a slot while none was free")
	}
}
