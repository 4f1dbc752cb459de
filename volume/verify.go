package volume

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// The verify-encryption workflow behind `encvol verify`: write a canary
// through the mount, prove that the backing directory holds none of it and
// looks random, and (drill) disable the key to show the gate close and open.

// rolling-hash pass over the backing bytes finds all of them.
const (
	patternLen   = 32
	canaryPrefix = "encvol-canary-" // + 18 hex digits = 32 bytes
	markerPrefix = "ENCVOL-MARK-"   // + 20 hex digits = 32 bytes
	// DefaultCanarySize is the canary's plaintext size: 32 sectors of the
	// default size, enough data for a meaningful randomness test even on a
	// fresh, empty volume.
	DefaultCanarySize = 128 << 10
	// MinCanarySize keeps the content scan meaningful.
	MinCanarySize = 64 << 10
	// DefaultDrillPoll is how often the drill reads the canary while it
	// waits for the gate.
	DefaultDrillPoll = 20 * time.Millisecond
	// drillSlack is added to the key check interval to get the drill's
	// deadlines: the monitor may be mid-check, the KMS slow, the kernel
	// busy invalidating caches.
	drillSlack = 10 * time.Second
	// blockedAfter is how long a canary read must hang before the drill
	// counts it as blocked by a hang-mode gate (a plain read takes
	// milliseconds).
	blockedAfter = time.Second
	// Randomness thresholds: a chi-square p-value below minPValue (one
	// false alarm in 10,000 runs on real ciphertext) or output that
	// deflate can shrink fails the check.
	minPValue          = 1e-4
	minCompressRatio   = 0.99
	minRandomnessBytes = 4096
	compressSample     = 1 << 20
)

// Check results.
const (
	CheckPass = "pass"
	CheckFail = "fail"
	CheckSkip = "skip"
)

// ErrServiceKey is returned (wrapped) when a drill is asked for a volume
// whose data key is wrapped under the service key, which users cannot
// disable.
var ErrServiceKey = errors.New("the service key cannot be disabled")

// VerifyOptions says what to verify and how.
type VerifyOptions struct {
	Backing    string
	Header     *keywrap.Header
	Mountpoint string // where the volume is mounted (live or temporary)
	// Temporary is only reported: the mount was made for this verification.
	Temporary bool
	KMS       string // configured KMS name (messages, report)
	// OnRevoke and KeyCheckInterval are the mount's settings; the drill
	// needs them to know what "refused" looks like and how long to wait.
	OnRevoke         string
	KeyCheckInterval time.Duration
	// Status, when set, reports the mount's status (gate cause in the
	// drill report).
	Status func(ctx context.Context) (*Status, error)
	// CanarySize is the canary's plaintext size (default DefaultCanarySize).
	CanarySize int

	Drill bool
	// Admin disables and re-enables the key during the drill.
	Admin kmsclient.Admin
	// FreshMount tries to mount the volume anew while the key is disabled;
	// it must fail, and its error should name the key state. Required for
	// the drill.
	FreshMount func(ctx context.Context) error
	// Poll is the drill's read interval (default DefaultDrillPoll).
	Poll time.Duration

	Progress Progress
	Log      zerolog.Logger
}

// Check is one verdict of the report.
type Check struct {
	Name   string `json:"name"`
	Result string `json:"result"` // CheckPass, CheckFail or CheckSkip
	Detail string `json:"detail"`
}

// CanaryReport describes the canary file.
type CanaryReport struct {
	Name        string  `json:"name"`
	Path        string  `json:"path"`
	Size        int     `json:"size"`
	Marker      string  `json:"marker"`
	SHA256      string  `json:"sha256"`
	BackingFile string  `json:"backing_file,omitempty"`
	BackingSize int64   `json:"backing_size,omitempty"`
	WriteMS     float64 `json:"write_ms"`
	Removed     bool    `json:"removed"`
}

// Hit is one place the scan found a canary pattern.
type Hit struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"` // -1 for a hit in a file name
	Kind   string `json:"kind"`   // "content", "marker", "name"
}

// ScanReport is the result of scanning the backing directory.
type ScanReport struct {
	Files        int     `json:"files"`
	Dirs         int     `json:"dirs"`
	Bytes        int64   `json:"bytes"`
	Probes       int     `json:"probes"` // distinct 32-byte patterns searched
	ContentHits  int     `json:"content_hits"`
	MarkerHits   int     `json:"marker_hits"`
	NameHits     int     `json:"name_hits"` // in file contents
	FileNameHits int     `json:"file_name_hits"`
	Hits         []Hit   `json:"hits,omitempty"` // the first few
	DurationMS   float64 `json:"duration_ms"`
}

// RandomnessReport is the byte statistics over the backing sector files'
// payload: everything after the 18-byte file headers except all-zero hole
// sectors.
type RandomnessReport struct {
	Files            int     `json:"files"`
	Sectors          int64   `json:"sectors"`
	HoleSectors      int64   `json:"hole_sectors"`
	Bytes            int64   `json:"bytes"`
	ChiSquare        float64 `json:"chi_square"`
	DegreesOfFreedom int     `json:"degrees_of_freedom"`
	PValue           float64 `json:"p_value"`
	Entropy          float64 `json:"entropy_bits_per_byte"`
	CompressRatio    float64 `json:"compress_ratio"` // deflate output / input over up to 1 MiB
	CompressSample   int64   `json:"compress_sample_bytes"`
}

// DrillReport holds every measurement of the disable/enable drill.
type DrillReport struct {
	KeyID            string  `json:"key_id"`
	KeyARN           string  `json:"key_arn"`
	OnRevoke         string  `json:"on_revoke"`
	KeyCheckInterval float64 `json:"key_check_interval_ms"`
	DisableCallMS    float64 `json:"disable_call_ms"`
	// CloseMS is the time from the disable call's return to the first
	// refused read (eio) or to the start of the first read that blocked
	// (hang); -1 when the mount never refused.
	CloseMS       float64 `json:"close_ms"`
	CloseLimitMS  float64 `json:"close_limit_ms"`
	Refusal       string  `json:"refusal,omitempty"` // the error the read got, or "blocked"
	GateCause     string  `json:"gate_cause,omitempty"`
	ProbesClosing int     `json:"probes_while_closing"`
	FreshMount    string  `json:"fresh_mount_error,omitempty"`
	FreshMountMS  float64 `json:"fresh_mount_ms"`
	EnableCallMS  float64 `json:"enable_call_ms"`
	// ReopenMS is the time from the start of the enable call to the first read
	// that succeeded (eio) or to the blocked read completing (hang); -1
	// when I/O never resumed.
	ReopenMS      float64 `json:"reopen_ms"`
	CanaryIntact  bool    `json:"canary_intact"`
	ReEnabled     bool    `json:"re_enabled"`
	Error         string  `json:"error,omitempty"`
	TotalMS       float64 `json:"total_ms"`
	GateAfterOpen string  `json:"gate_after_reopen,omitempty"`
}

// VerifyReport is what `encvol verify` prints.
type VerifyReport struct {
	VolumeID         string            `json:"volume_id"`
	Backing          string            `json:"backing"`
	Mountpoint       string            `json:"mountpoint"`
	TemporaryMount   bool              `json:"temporary_mount"`
	KMS              string            `json:"kms"`
	KeyID            string            `json:"key_id"`
	Cipher           string            `json:"cipher"`
	SectorSize       int               `json:"sector_size"`
	NameMode         string            `json:"name_mode"`
	OnRevoke         string            `json:"on_revoke"`
	KeyCheckInterval float64           `json:"key_check_interval_ms"`
	Canary           CanaryReport      `json:"canary"`
	Scan             ScanReport        `json:"scan"`
	Randomness       RandomnessReport  `json:"randomness"`
	Drill            *DrillReport      `json:"drill,omitempty"`
	Checks           []Check           `json:"checks"`
	Pass             bool              `json:"pass"`
	DurationMS       float64           `json:"duration_ms"`
	Started          time.Time         `json:"started"`
	Extra            map[string]string `json:"extra,omitempty"`
}

func (r *VerifyReport) add(name string, ok bool, format string, args ...any) {
	res := CheckPass
	if !ok {
		res = CheckFail
	}
	r.Checks = append(r.Checks, Check{Name: name, Result: res, Detail: fmt.Sprintf(format, args...)})
}

func (r *VerifyReport) skip(name string, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Result: CheckSkip, Detail: fmt.Sprintf(format, args...)})
}

func (r *VerifyReport) finish(start time.Time) {
	r.Pass = len(r.Checks) > 0
	for _, c := range r.Checks {
		if c.Result == CheckFail {
			r.Pass = false
		}
	}
	r.DurationMS = ms(time.Since(start))
}

// Failed lists the names of the failed checks.
func (r *VerifyReport) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Result == CheckFail {
			out = append(out, c.Name)
		}
	}
	return out
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }

// Verify writes a canary through the mount, scans the backing directory
// for it, tests the backing bytes for randomness and, with Drill, disables
// and re-enables the key while measuring the gate. The returned error means
// the verification could not run; failed checks are in the report
// (Pass false). With Drill the key is re-enabled on every path out.
func Verify(ctx context.Context, opt VerifyOptions) (rep *VerifyReport, err error) {
	start := time.Now()
	h := opt.Header
	if h == nil || opt.Backing == "" || opt.Mountpoint == "" {
		return nil, errors.New("verify: backing, header and mountpoint are required")
	}
	if opt.CanarySize == 0 {
		opt.CanarySize = DefaultCanarySize
	}
	if opt.CanarySize < MinCanarySize {
		return nil, fmt.Errorf("verify: canary size %d is below the minimum %d", opt.CanarySize, MinCanarySize)
	}
	if opt.Poll <= 0 {
		opt.Poll = DefaultDrillPoll
	}
	if opt.KeyCheckInterval <= 0 {
		opt.KeyCheckInterval = DefaultKeyCheckInterval
	}
	if opt.OnRevoke == "" {
		opt.OnRevoke = DefaultOnRevoke
	}
	log := opt.Log.With().Str("volume", h.VolumeID).Str("key_id", h.KeyID).Logger()
	rep = &VerifyReport{
		VolumeID: h.VolumeID, Backing: opt.Backing, Mountpoint: opt.Mountpoint, TemporaryMount: opt.Temporary,
		KMS: opt.KMS, KeyID: h.KeyID, Cipher: h.Cipher, SectorSize: h.SectorSize, NameMode: h.NameMode,
		OnRevoke: opt.OnRevoke, KeyCheckInterval: ms(opt.KeyCheckInterval), Started: start.UTC(),
	}

	// Refuse an impossible drill before anything is written.
	var keyInfo kmsclient.KeyInfo
	if opt.Drill {
		if opt.Admin == nil || opt.FreshMount == nil {
			return nil, errors.New("verify: the drill needs a KMS admin connection and a fresh-mount function")
		}
		keyInfo, err = CheckDrillKey(ctx, opt.Admin, h.KeyID)
		if err != nil {
			return nil, err
		}
	}

	c, err := writeCanary(opt.Mountpoint, opt.Backing, opt.CanarySize, h.SectorSize)
	if err != nil {
		return nil, err
	}
	rep.Canary = c.report
	log.Debug().Str("op", "verify").Str("path", c.path).Msg("canary written")
	defer func() {
		// After the drill's deferred enable (defers run last-in first-out).
		if rerr := os.Remove(c.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			log.Error().Err(rerr).Str("path", c.path).Msg("could not remove the canary file")
			if rep != nil {
				rep.Canary.Removed = false
				rep.add("cleanup", false, "canary %s could not be removed: %v; delete it by hand", c.path, rerr)
				rep.finish(start)
			}
			return
		}
		if rep != nil {
			rep.Canary.Removed = true
		}
	}()
	if c.report.BackingFile == "" {
		rep.add("canary stored", false, "no new file appeared in the backing directory after writing and syncing the canary")
	}

	scan, rnd, err := scanBacking(ctx, opt.Backing, c, h.SectorSize, opt.Progress)
	if err != nil {
		return nil, err
	}
	rep.Scan, rep.Randomness = scan, rnd
	rep.add("canary content", scan.ContentHits == 0 && scan.MarkerHits == 0,
		"%d of %d probes (every 32-byte run of the %d-byte canary + its marker) found in %d files, %s scanned in %.0f ms",
		scan.ContentHits+scan.MarkerHits, scan.Probes-1, c.report.Size, scan.Files, HumanBytes(scan.Bytes), scan.DurationMS)
	if h.NameMode == NameModePlaintext {
		rep.skip("canary name", "volume stores names in plaintext (created with --plaintext-names): %d backing names contain the canary name", scan.FileNameHits)
	} else {
		rep.add("canary name", scan.FileNameHits == 0 && scan.NameHits == 0,
			"%q found in %d backing file names and %d times in file contents", c.report.Name, scan.FileNameHits, scan.NameHits)
	}
	randomOK := rnd.Bytes >= minRandomnessBytes && rnd.PValue >= minPValue && rnd.CompressRatio >= minCompressRatio
	rep.add("randomness", randomOK,
		"chi-square %.1f (%d df, p = %.3g), entropy %.4f bits/byte, deflate ratio %.4f over %s in %d sectors of %d files (%d holes skipped)",
		rnd.ChiSquare, rnd.DegreesOfFreedom, rnd.PValue, rnd.Entropy, rnd.CompressRatio, HumanBytes(rnd.Bytes), rnd.Sectors, rnd.Files, rnd.HoleSectors)

	if opt.Drill {
		d := &DrillReport{KeyID: keyInfo.KeyID, KeyARN: keyInfo.Arn, OnRevoke: opt.OnRevoke, KeyCheckInterval: ms(opt.KeyCheckInterval),
			CloseMS: -1, ReopenMS: -1}
		rep.Drill = d
		runDrill(ctx, opt, c, rep, d, log)
	}
	rep.finish(start)
	return rep, nil
}

// --- backing scan -------------------------------------------------------

// --- drill --------------------------------------------------------------

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
