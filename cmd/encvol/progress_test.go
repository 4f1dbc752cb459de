package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// syncBuffer lets the ticker goroutine and the test share one buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Many workers count at once; the summary must hold every count, and two
// phases in a row must each report their own.
func TestProgressCountsConcurrentWorkers(t *testing.T) {
	var out syncBuffer
	p := newProgress(&out)
	if p.tty {
		t.Fatal("a buffer is not a terminal")
	}
	p.Start("copying", 800, 800*4096)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				p.AddBytes(4096)
				p.AddFiles(1)
			}
		})
	}
	wg.Wait()
	p.Start("checking", 0, 0)
	p.AddFiles(3)
	p.Done()
	p.Done() // a second Done is harmless

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var summaries []string
	for _, l := range lines {
		if strings.Contains(l, ": done,") {
			summaries = append(summaries, l)
		}
	}
	if len(summaries) != 2 {
		t.Fatalf("want one summary per phase, got %q", out.String())
	}
	if !strings.HasPrefix(summaries[0], "copying: done, 800/800 files, 3.1 MiB") {
		t.Errorf("first summary %q", summaries[0])
	}
	if !strings.HasPrefix(summaries[1], "checking: done, 3 files, 0 B") {
		t.Errorf("second summary %q", summaries[1])
	}
}

func TestProgressLineShowsETA(t *testing.T) {
	p := newProgress(&syncBuffer{})
	p.Start("importing", 10, 1<<30)
	defer p.Done()
	p.AddBytes(1 << 20)
	p.AddFiles(1)
	l := p.line()
	for _, want := range []string{"importing: 1/10 files", "1.0 MiB of 1.0 GiB", "/s", "ETA"} {
		if !strings.Contains(l, want) {
			t.Errorf("line %q lacks %q", l, want)
		}
	}
}
