package fusefs

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Why a mount daemon sets itself a soft memory limit: with the Go default
// (GOGC=100) the heap grows to twice what is live before a collection, and
// most of what a busy mount allocates is short-lived (request and reply
// buffers of go-fuse, sector buffers). Untarring the Go source tree
// (11,478 files) peaked at 58-64 MiB of resident memory that way; under a
// limit of DaemonMemoryTarget it peaked at 50 MiB with no measurable loss
// of speed.
//
// A fixed limit would make the collector run nearly all the time once
// more than that is live (a mount whose kernel knows hundreds of thousands
// of inodes keeps a node for each), so the limit follows what is live:
// never below DaemonMemoryTarget, and otherwise one and a half times the
// live heap plus memoryHeadroom for stacks and runtime structures (the
// collector then runs about twice as often as with the default, never in
// a loop).

// DaemonMemoryTarget is the memory (as GOMEMLIMIT counts it) below which a
// mount daemon serving only its mount keeps itself. The resident size is
// larger by the mapped executable (about 14 MiB).
const DaemonMemoryTarget = 40 << 20

const (
	memoryHeadroom    = 8 << 20
	memoryLimitPeriod = time.Second
)

// EnvNoMemoryTarget, when set, leaves the garbage collector at the Go
// defaults (as does a GOMEMLIMIT or GOGC in the environment).
const EnvNoMemoryTarget = "ENCVOL_NO_MEMORY_TARGET"

// startMemoryTarget keeps the process's soft memory limit at
// max(DaemonMemoryTarget, 1.5 × live heap + memoryHeadroom) until stop is
// closed, unless the environment tunes the collector itself.
func startMemoryTarget(stop <-chan struct{}) {
	for _, env := range []string{"GOMEMLIMIT", "GOGC", EnvNoMemoryTarget} {
		if os.Getenv(env) != "" {
			return
		}
	}
	prev := debug.SetMemoryLimit(-1)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(sample)
		limit := int64(DaemonMemoryTarget)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live := int64(sample[0].Value.Uint64())
			limit = max(limit, live+live/2+memoryHeadroom)
		}
		debug.SetMemoryLimit(limit)
	}
	set()
	go func() {
		t := time.NewTicker(memoryLimitPeriod)
		defer t.Stop()
		for {
			select {
			case <-stop:
				debug.SetMemoryLimit(prev)
				return
			case <-t.C:
				set()
			}
		}
	}()
}
