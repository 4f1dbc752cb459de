package server

import (
	"time"
	"runtime/metrics"
	"testing"
)

func schedHist(b *testing.B, label string) {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/gc/pauses:seconds"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/cpu/classes/total:cpu-seconds"}}
	metrics.Read(s)
	for _, x := range s[:2] {
		h := x.Value.Float64Histogram()
		var tot uint64
		for _, c := range h.Counts {
			tot += c
		}
		var acc uint64
		out := ""
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			acc = 0
			for i, c := range h.Counts {
				acc += c
				if float64(acc) >= q*float64(tot) {
					out += " " + fmtF(h.Buckets[i+1])
					break
				}
			}
		}
		b.Logf("%s %s n=%d p50/90/99/99.9:%s", label, x.Name, tot, out)
	}
	b.Logf("gc cpu %.2fs of %.2fs", s[2].Value.Float64(), s[3].Value.Float64())
}
func fmtF(f float64) string { return time.Duration(f * 1e9).String() }
