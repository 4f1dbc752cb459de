package fusefs

import (
	"reflect"
	"testing"
	"time"
)

// fakeProcs records GOMAXPROCS changes and timer arming on a clock the test
// moves by hand.
type fakeProcs struct {
	sets   []int
	armed  int // timers created
	rearms int
	now    time.Time
	fire   func()
}

func newFakeGovernor(t *testing.T, wide int) (*procGovernor, *fakeProcs) {
	t.Helper()
	f := &fakeProcs{now: time.Unix(1000, 0)}
	g := newProcGovernor(wide,
		func(n int) int { f.sets = append(f.sets, n); return 0 },
		func() time.Time { return f.now },
		func(fn func()) func() { f.armed++; f.fire = fn; return func() { f.rearms++ } })
	if g == nil {
		t.Fatalf("no governor for %d CPUs", wide)
	}
	return g, f
}

func TestGovernorWidensForBulkAndNarrowsWhenIdle(t *testing.T) {
	g, f := newFakeGovernor(t, 4)

	g.noteRequest(4096)
	g.noteRequest(bulkRequest - 1)
	if len(f.sets) != 0 || f.armed != 0 {
		t.Fatalf("small requests changed GOMAXPROCS: %v, timers %d", f.sets, f.armed)
	}

	g.noteRequest(bulkRequest)
	g.noteRequest(1 << 20) // already wide: no second switch
	if !reflect.DeepEqual(f.sets, []int{4}) || f.armed != 1 {
		t.Fatalf("after bulk requests: sets %v, timers %d; want [4], 1", f.sets, f.armed)
	}

	// A bulk request within the idle period keeps it wide.
	f.now = f.now.Add(procsIdle / 2)
	g.noteRequest(1 << 20)
	f.now = f.now.Add(procsIdle / 2)
	f.fire()
	if !reflect.DeepEqual(f.sets, []int{4}) || f.rearms != 1 {
		t.Fatalf("timer during a stream: sets %v, rearms %d; want [4], 1", f.sets, f.rearms)
	}

	f.now = f.now.Add(procsIdle)
	f.fire()
	if !reflect.DeepEqual(f.sets, []int{4, 1}) {
		t.Fatalf("timer after the stream: sets %v, want [4 1]", f.sets)
	}

	// The next stream widens again and re-arms the same timer.
	g.noteRequest(1 << 20)
	if !reflect.DeepEqual(f.sets, []int{4, 1, 4}) || f.armed != 1 || f.rearms != 2 {
		t.Fatalf("second stream: sets %v, timers %d, rearms %d", f.sets, f.armed, f.rearms)
	}
}

func TestGovernorOffOnOneCPU(t *testing.T) {
	if g := newProcGovernor(1, nil, nil, nil); g != nil {
		t.Fatal("a governor for one CPU")
	}
	var g *procGovernor
	g.noteRequest(1 << 20) // the unset governor of a library user is a no-op
	g.enter()
	g.exit()
}

func TestGovernorWidensForConcurrentRequests(t *testing.T) {
	g, f := newFakeGovernor(t, 2)

	// One client: requests one after another.
	for range 3 {
		g.enter()
		g.exit()
	}
	if len(f.sets) != 0 {
		t.Fatalf("sequential requests: sets %v", f.sets)
	}

	// Overlapping requests widen, and keep it wide while they go on.
	g.enter()
	g.enter()
	f.now = f.now.Add(procsIdle / 2)
	g.enter()
	g.exit()
	g.exit()
	g.exit()
	f.now = f.now.Add(procsIdle / 2)
	f.fire()
	if !reflect.DeepEqual(f.sets, []int{2}) || f.rearms != 1 {
		t.Fatalf("overlapping requests: sets %v, rearms %d; want [2], 1", f.sets, f.rearms)
	}
	f.now = f.now.Add(procsIdle)
	f.fire()
	if !reflect.DeepEqual(f.sets, []int{2, 1}) {
		t.Fatalf("idle after: sets %v, want [2 1]", f.sets)
	}
	if got := g.inflight.Load(); got != 0 {
		t.Fatalf("in flight after all exits: %d", got)
	}
}
