package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/encvol/encvol/volume"
)

// plainProgressEvery is how often a reporter that does not write to a
// terminal prints a line: often enough to show a long operation is alive,
// rare enough not to flood a log file.
const plainProgressEvery = 2 * time.Second

// progress shows a long operation: a bar with files, bytes, rate and ETA on
// a terminal, a plain line every few seconds elsewhere (logs, pipes, CI).
// Workers count concurrently, so counters are atomic and the display runs
// on its own ticker.
type progress struct {
	w   io.Writer
	tty bool

	mu         sync.Mutex // guards the fields below, not the counters
	phase      string
	totalFiles int64
	totalBytes int64
	start      time.Time
	stop       chan struct{}
	stopped    chan struct{}

	files atomic.Int64
	bytes atomic.Int64
	bar   atomic.Pointer[progressbar.ProgressBar] // nil when not on a terminal
}

var _ volume.Progress = (*progress)(nil)

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w)}
}

func (p *progress) Start(phase string, totalFiles, totalBytes int64) {
	p.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.totalFiles, p.totalBytes = phase, totalFiles, totalBytes
	p.files.Store(0)
	p.bytes.Store(0)
	p.start = time.Now()
	every := plainProgressEvery
	if p.tty {
		barTotal := totalBytes
		if barTotal <= 0 {
			barTotal = -1 // spinner: total unknown
		}
		p.bar.Store(progressbar.NewOptions64(barTotal,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(phase),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		))
		every = 200 * time.Millisecond
	}
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	go p.tick(every, p.stop, p.stopped)
}

func (p *progress) tick(every time.Duration, stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			if bar := p.bar.Load(); bar != nil {
				bar.Describe(p.phase + " " + p.fileCount())
			} else {
				fmt.Fprintln(p.w, p.line())
			}
			p.mu.Unlock()
		}
	}
}

func (p *progress) AddBytes(n int64) {
	p.bytes.Add(n)
	if bar := p.bar.Load(); bar != nil {
		_ = bar.Add64(n)
	}
}

func (p *progress) AddFiles(n int64) { p.files.Add(n) }

// Done ends the phase with one summary line, on a terminal too (the bar
// clears itself), so the output keeps a record of what was done.
func (p *progress) Done() {
	p.mu.Lock()
	stop, stopped := p.stop, p.stopped
	p.stop = nil
	p.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	if bar := p.bar.Swap(nil); bar != nil {
		_ = bar.Finish()
	}
	el := time.Since(p.start)
	fmt.Fprintf(p.w, "%s: done, %s, %s in %.1f s (%s/s)\n", p.phase, p.fileCount(),
		volume.HumanBytes(p.bytes.Load()), el.Seconds(), volume.HumanBytes(rate(p.bytes.Load(), el)))
}

func (p *progress) fileCount() string {
	if p.totalFiles > 0 {
		return fmt.Sprintf("%d/%d files", p.files.Load(), p.totalFiles)
	}
	return fmt.Sprintf("%d files", p.files.Load())
}

// line is the plain progress line: counts, rate and, when the total is
// known, what is left and how long it should take.
func (p *progress) line() string {
	el := time.Since(p.start)
	b := p.bytes.Load()
	r := rate(b, el)
	s := fmt.Sprintf("%s: %s, %s", p.phase, p.fileCount(), volume.HumanBytes(b))
	if p.totalBytes > 0 {
		s += " of " + volume.HumanBytes(p.totalBytes)
	}
	s += fmt.Sprintf(", %s/s", volume.HumanBytes(r))
	if p.totalBytes > b && r > 0 {
		eta := time.Duration(float64(p.totalBytes-b) / float64(r) * float64(time.Second))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	return s
}

func rate(n int64, el time.Duration) int64 {
	if el <= 0 {
		return 0
	}
	return int64(float64(n) / el.Seconds())
}
