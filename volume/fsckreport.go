package volume

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Severities of fsck findings.
const (
	// SeverityError is damage: something of the volume cannot be read.
	SeverityError = "error"
	// SeverityLeftover is what an interrupted operation left behind;
	// harmless to the data, but fsck cleans it up.
	SeverityLeftover = "leftover"
	// SeverityWarning is something odd that is not damage and that fsck
	// leaves alone (an unknown encvol file, links from outside).
	SeverityWarning = "warning"
	// SeverityQuarantined is damage that an earlier repair moved into
	// lost+found and that has not changed since.
	SeverityQuarantined = "quarantined"
)

// Kinds of fsck findings (Finding.Kind).
const (
	FindBadSectors   = "bad-sectors"      // stored sectors that fail authentication
	FindZeroed       = "zeroed-sector"    // all-zero stored sectors where the file has no hole (format version 4): zeroed in the backing
	FindBadHeader    = "bad-file-header"  // the sector file's header is unreadable: every sector is lost
	FindName         = "bad-name"         // the name does not decrypt (or its long-name side file is missing or damaged)
	FindMeta         = "bad-mode-owner"   // the stored mode and owner are malformed, missing or fail authentication
	FindOldFormat    = "old-format"       // the volume's format version is older than the current one
	FindSymlink      = "bad-symlink"      // the symlink target does not decrypt
	FindLinkTarget   = "symlink-target"   // the symlink target does not authenticate for its entry (format version 4): tampered, or moved from another symlink
	FindMovedEntry   = "moved-entry"      // the record of a file or directory names another entry (format version 5): moved, copied or swapped in the backing directory
	FindXattr        = "bad-xattr"        // a user attribute's name or value does not decrypt
	FindUnreadable   = "unreadable-entry" // the backing entry cannot be examined at all
	FindMissingDirID = string(StrayMissingDirID)
	FindBadDirID     = string(StrayBadDirID)
	FindTemp         = string(StrayTemp)
	FindOrphanLong   = string(StrayOrphanLongName)
	FindOrphanLink   = string(StrayOrphanLongLink)
	FindUnknown      = string(StrayUnknown)
	FindLinkCount    = "link-count"         // a file's link count differs from the names found for it
	FindChanged      = "quarantine-changed" // a quarantined file's damage changed since it was moved
)

// Finding is one problem fsck found.
type Finding struct {
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	// Path is the plaintext path from the volume's root ("/a/b") when the
	// names on the way decrypt; Backing the path in the backing directory
	// (relative to it), always set.
	Path    string `json:"path,omitempty"`
	Backing string `json:"backing"`
	Detail  string `json:"detail"`
	// Sectors are the failing sectors of a file, as inclusive ranges.
	Sectors []SectorRange `json:"sectors,omitempty"`
	// Fixed says that --repair dealt with it (see the report's actions).
	Fixed bool `json:"fixed"`

	inode uint64 // regular files: for the names of hard-linked ones
	typ   uint32
	attr  string // bad-xattr: the backing attribute name
}

// SectorRange is the inclusive range of sectors [First, Last].
type SectorRange struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

// Where names the finding's entry: its plaintext path, else its backing
// path.
func (f *Finding) Where() string {
	if f.Path != "" {
		return f.Path
	}
	return "backing " + f.Backing
}

// FsckAction is one change --repair made.
type FsckAction struct {
	Action  string `json:"action"`
	Path    string `json:"path,omitempty"`
	Backing string `json:"backing"`
	// To is where the entry went (lost+found path), when it moved.
	To     string `json:"to,omitempty"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// FsckCounts sums up the findings.
type FsckCounts struct {
	Errors      int `json:"errors"`
	Leftovers   int `json:"leftovers"`
	Warnings    int `json:"warnings"`
	Quarantined int `json:"quarantined"`
	Corrected   int `json:"corrected"`
	Uncorrected int `json:"uncorrected"`
}

// FsckReport is the result of one fsck run.
type FsckReport struct {
	VolumeID string    `json:"volume_id"`
	Backing  string    `json:"backing"`
	NameMode string    `json:"name_mode"`
	Repair   bool      `json:"repair"`
	Started  time.Time `json:"started"`
	Duration float64   `json:"duration_s"`
	Workers  int       `json:"workers"`

	Entries  int64 `json:"entries"`
	Files    int64 `json:"files"`
	Dirs     int64 `json:"directories"`
	Symlinks int64 `json:"symlinks"`
	Others   int64 `json:"others"`
	// Bytes are the backing bytes read and authenticated, Sectors the
	// stored sectors among them; Throughput is Bytes per second of the
	// whole run.
	Bytes      int64   `json:"bytes_checked"`
	Sectors    int64   `json:"sectors_checked"`
	Throughput float64 `json:"throughput_bytes_per_s"`

	Findings []*Finding   `json:"findings"`
	Actions  []FsckAction `json:"actions"`
	Counts   FsckCounts   `json:"counts"`
	// LostFound is the plaintext path of the repair log written into
	// lost+found, when one was.
	RepairLog string `json:"repair_log,omitempty"`
	ExitCode  int    `json:"exit_code"`
}

// fsck's exit codes, as e2fsck's; they add up (5: some errors corrected,
// some left).
const (
	FsckClean       = 0
	FsckCorrected   = 1
	FsckUncorrected = 4
	FsckOperational = 8
	FsckUsage       = 16
	FsckCancelled   = 32
)

// tally fills Counts and ExitCode from the findings.
func (r *FsckReport) tally() {
	c := FsckCounts{}
	for _, f := range r.Findings {
		switch f.Severity {
		case SeverityError:
			c.Errors++
		case SeverityLeftover:
			c.Leftovers++
		case SeverityWarning:
			c.Warnings++
			continue
		case SeverityQuarantined:
			c.Quarantined++
			continue
		}
		if f.Fixed {
			c.Corrected++
		} else {
			c.Uncorrected++
		}
	}
	r.Counts = c
	r.ExitCode = FsckClean
	if c.Corrected > 0 {
		r.ExitCode |= FsckCorrected
	}
	if c.Uncorrected > 0 {
		r.ExitCode |= FsckUncorrected
	}
}

// addSector extends ranges (kept in order) by sector i.
func addSector(rs []SectorRange, i int64) []SectorRange {
	if n := len(rs); n > 0 && rs[n-1].Last+1 == i {
		rs[n-1].Last = i
		return rs
	}
	return append(rs, SectorRange{First: i, Last: i})
}

// mergeRanges sorts ranges and joins those that touch.
func mergeRanges(rs []SectorRange) []SectorRange {
	slices.SortFunc(rs, func(a, b SectorRange) int { return cmp.Compare(a.First, b.First) })
	var out []SectorRange
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Last+1 >= r.First {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// rangesString writes ranges as "3, 17-20".
func rangesString(rs []SectorRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		if r.First == r.Last {
			fmt.Fprintf(&b, "%d", r.First)
		} else {
			fmt.Fprintf(&b, "%d-%d", r.First, r.Last)
		}
	}
	return b.String()
}

// sectorCount is how many sectors ranges cover.
func sectorCount(rs []SectorRange) int64 {
	var n int64
	for _, r := range rs {
		n += r.Last - r.First + 1
	}
	return n
}
