package fusefs

import (
	"fmt"
	"os"
	"testing"

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
