package fusefs

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestMemoryTargetFollowsLiveHeap: the daemon's soft memory limit is
// DaemonMemoryTarget while little is live, rises with the live heap (so
// the collector never runs in a loop), and is given back on stop.
func TestMemoryTargetFollowsLiveHeap(t *testing.T) {
	for _, env := range []string{"GOMEMLIMIT", "GOGC", EnvNoMemoryTarget} {
		t.Setenv(env, "")
	}
	runtime.GC()
	stop := make(chan struct{})
	startMemoryTarget(stop)
	if got := debug.SetMemoryLimit(-1); got != DaemonMemoryTarget {
		t.Fatalf("soft memory limit %d with a small heap, want %d", got, DaemonMemoryTarget)
	}
	live := make([]byte, 96<<20)
	for i := range live {
		live[i] = byte(i)
	}
	runtime.GC()
	want := int64(len(live)) + int64(len(live))/2
	deadline := time.Now().Add(10 * memoryLimitPeriod)
	for debug.SetMemoryLimit(-1) < want {
		if time.Now().After(deadline) {
			t.Fatalf("soft memory limit %d with %d bytes live, want at least %d", debug.SetMemoryLimit(-1), len(live), want)
		}
		time.Sleep(memoryLimitPeriod / 10)
	}
	runtime.KeepAlive(live)
	close(stop)
	for debug.SetMemoryLimit(-1) != math.MaxInt64 {
		if time.Now().After(deadline) {
			t.Fatalf("soft memory limit %d after stop, want it given back", debug.SetMemoryLimit(-1))
		}
		time.Sleep(memoryLimitPeriod / 10)
	}
}
