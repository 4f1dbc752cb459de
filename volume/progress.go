package volume

import "fmt"

// Progress receives the progress of a long operation (scan, snapshot,
// copy, import, fsck). Every long operation reports through it, so the
// command line shows them all the same way: one bar on a terminal, plain
// lines elsewhere. Implementations must be safe for concurrent use: the
// operations count from many workers at once.
type Progress interface {
	// Start begins a phase. Totals of 0 mean unknown (the reporter then
	// shows counts and rate without an ETA).
	Start(phase string, totalFiles, totalBytes int64)
	// AddBytes counts bytes of the current phase as done.
	AddBytes(n int64)
	// AddFiles counts entries of the current phase as done.
	AddFiles(n int64)
	// Done ends the current phase.
	Done()
}

// NoProgress discards progress; operations use it when given none.
type NoProgress struct{}

func (NoProgress) Start(string, int64, int64) {}
func (NoProgress) AddBytes(int64)             {}
func (NoProgress) AddFiles(int64)             {}
func (NoProgress) Done()                      {}

// progressOr returns p, or NoProgress when p is nil.
func progressOr(p Progress) Progress {
	if p == nil {
		return NoProgress{}
	}
	return p
}

// HumanBytes renders a byte count in binary units with one decimal
// ("512 B", "1.5 KiB", "3.0 GiB").
func HumanBytes[N ~int64 | ~uint64](n N) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := N(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
