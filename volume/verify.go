package volume

// The verify-encryption workflow behind `encvol verify`: write a canary
// through the mount, prove that the backing directory holds none of it and
// looks random, and (drill) disable the key to show the gate close and open.

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/sector"
)

// Canary layout. Every searched pattern is exactly patternLen bytes so one
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
	// ReopenMS is the time from the enable call's return to the first read
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

// VerifyTarget is a volume named on the `encvol verify` command line,
// resolved against the configuration.
type VerifyTarget struct {
	Name      string // [volumes.NAME], "" when given as a backing directory
	Snapshot  string // the snapshot directory when given one; Backing is its copy
	Backing   string
	Header    *keywrap.Header
	KMS       string
	KMSConfig kmsclient.Config
	volume    VolumeConfig
}

// ResolveVerify resolves NAME (a [volumes.NAME] table) or BACKING (a
// backing directory) and reads the volume header.
func (c *Config) ResolveVerify(arg string) (VerifyTarget, error) {
	var t VerifyTarget
	if v, ok := c.Volumes[arg]; ok && !strings.ContainsRune(arg, '/') {
		t.Name, t.Backing, t.volume = arg, v.Backing, v
	} else {
		t.Backing = arg
	}
	abs, err := filepath.Abs(t.Backing)
	if err != nil {
		return t, err
	}
	if snap := snapshotOf(abs); t.Name == "" && snap != "" {
		t.Snapshot, abs = snap, SnapshotBacking(snap)
	}
	t.Backing = abs
	if _, err := os.Stat(filepath.Join(abs, keywrap.HeaderFile)); err != nil {
		if t.Name == "" {
			if _, derr := os.Stat(abs); derr != nil {
				if !strings.ContainsRune(arg, '/') && len(c.Volumes) > 0 {
					return t, fmt.Errorf("%q is neither a [volumes.NAME] of %s (configured: %s) nor a backing directory", arg, c.describe(), strings.Join(sortedKeys(c.Volumes), ", "))
				}
				return t, fmt.Errorf("backing directory %s: %w", abs, derr)
			}
		}
		return t, fmt.Errorf("%s is not an encvol volume (no %s)", abs, keywrap.HeaderFile)
	}
	h, err := keywrap.ReadHeader(abs)
	if err != nil {
		return t, fmt.Errorf("volume %s: %w", abs, err)
	}
	t.Header = h
	kmsName := t.volume.KMS
	if kmsName == "" && h.KMS != "" {
		if _, ok := c.KMS[h.KMS]; ok {
			kmsName = h.KMS
		}
	}
	t.KMS, t.KMSConfig, err = c.KMSFor(kmsName)
	if err != nil {
		return t, err
	}
	return t, nil
}

// TemporaryMountSpec is the MountSpec `encvol mount BACKING mountpoint`
// would use for t, with the volume table's settings applied; it is
// read-write (the canary is written through it), except for a snapshot.
func (c *Config) TemporaryMountSpec(t VerifyTarget, mountpoint string) (MountSpec, error) {
	o := MountOptionSet{KMS: t.KMS, KeyCheckInterval: t.volume.KeyCheckInterval.D(), OnRevoke: t.volume.OnRevoke}
	if t.volume.OfflineGrace != nil {
		g := t.volume.OfflineGrace.D()
		o.OfflineGrace = &g
	}
	src := t.Backing
	if t.Snapshot != "" {
		src = t.Snapshot // mounted read-only, as every snapshot
	}
	spec, err := c.ResolveMount([]string{src, mountpoint}, o)
	if err != nil {
		return spec, err
	}
	spec.Name = t.Name
	spec.AllowOther = false
	spec.ReadOnly = t.Snapshot != ""
	spec.OnKeyEvent = firstString(t.volume.OnKeyEvent, c.Defaults.OnKeyEvent)
	return spec, nil
}

// MountTemporary unlocks and mounts spec in this process. The caller
// unmounts with UnmountTemporary.
func MountTemporary(ctx context.Context, spec MountSpec, log zerolog.Logger) (*Mount, error) {
	if err := CheckComplete(spec.Backing); err != nil {
		return nil, err
	}
	return mountTemporary(ctx, spec, log)
}

// mountTemporary is MountTemporary for a volume that may still carry the
// marker of its unfinished copy (which mounts it before it removes that).
func mountTemporary(ctx context.Context, spec MountSpec, log zerolog.Logger) (*Mount, error) {
	uctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	client, err := kmsclient.New(uctx, spec.KMS, spec.KMSConfig)
	if err != nil {
		return nil, fmt.Errorf("KMS %q: %w", spec.KMS, err)
	}
	u, err := UnlockHeader(uctx, client, spec.KMS, spec.Backing, spec.Header)
	if err != nil {
		client.Close()
		return nil, err
	}
	m, err := mountVolume(spec, client, u, log, "")
	if err != nil {
		client.Close()
		return nil, err
	}
	return m, nil
}

// UnmountTemporary unmounts a mount made by MountTemporary and waits until
// its keys are zeroized, retrying while the kernel still reports it busy.
func UnmountTemporary(m *Mount) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := m.Unmount()
		if err == nil {
			m.Wait()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FindMount returns the status of the running mount of volume volumeID,
// or nil when no encvol daemon serves it.
func FindMount(ctx context.Context, volumeID string) (*Status, error) {
	return findMount(ctx, func(st *Status) bool { return st.VolumeID == volumeID })
}

// findMount returns the status of the first daemon that answers on its
// control socket and matches, or nil.
func findMount(ctx context.Context, match func(*Status) bool) (*Status, error) {
	socks, err := ListSockets()
	if err != nil {
		return nil, err
	}
	for _, s := range socks {
		st, err := QueryStatus(ctx, s)
		if err != nil {
			continue // stale or busy sockets belong to other volumes or dead daemons
		}
		if match(st) {
			return st, nil
		}
	}
	return nil, nil
}

// CheckDrillKey refuses keys the drill must not or cannot disable: the
// service key and keys that are not Enabled.
func CheckDrillKey(ctx context.Context, adm kmsclient.Admin, keyID string) (kmsclient.KeyInfo, error) {
	info, err := adm.DescribeKey(ctx, keyID)
	if err != nil {
		return info, fmt.Errorf("drill: describe key %s: %w", keyID, err)
	}
	if info.KeyManager == "AWS" || slices.Contains(info.Aliases, kmsclient.DefaultKeyAlias) {
		return info, fmt.Errorf("drill refused: the volume's data key is wrapped under the service key %s (%s), and %w by users; "+
			"drills need a volume under a customer key (`encvol kms create-key --alias alias/NAME`, then `encvol create --key alias/NAME`)",
			kmsclient.DefaultKeyAlias, info.Arn, ErrServiceKey)
	}
	if info.State != "Enabled" {
		return info, fmt.Errorf("drill refused: key %s is %s, not Enabled; enable it first (`encvol kms enable-key %s`)", info.Arn, info.State, info.KeyID)
	}
	return info, nil
}

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

// canary is a canary file written through the mount.
type canary struct {
	path    string
	content []byte
	sum     [32]byte
	name    string
	nameRnd string // the random part of the name
	marker  string
	report  CanaryReport
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writeCanary writes a random canary file into the mount's root, syncs it
// and identifies the backing file it went to.
func writeCanary(mountpoint, backing string, size, sectorSize int) (*canary, error) {
	rnd, err := randomHex(9)
	if err != nil {
		return nil, err
	}
	mrk, err := randomHex(10)
	if err != nil {
		return nil, err
	}
	c := &canary{name: canaryPrefix + rnd, nameRnd: rnd, marker: markerPrefix + mrk}
	c.content = make([]byte, size)
	if _, err := rand.Read(c.content); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	// The marker at the start, off any alignment in the middle, and at the
	// end: a human can grep for it.
	for _, off := range []int{0, size/2 - 7, size - patternLen} {
		copy(c.content[off:], c.marker)
	}
	c.sum = sha256.Sum256(c.content)
	c.path = filepath.Join(mountpoint, c.name)

	before, err := backingEntries(backing)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write canary through the mount: %w", err)
	}
	if _, err := f.Write(c.content); err != nil {
		f.Close()
		os.Remove(c.path)
		return nil, fmt.Errorf("write canary %s: %w", c.path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(c.path)
		return nil, fmt.Errorf("fsync canary %s: %w", c.path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(c.path)
		return nil, fmt.Errorf("close canary %s: %w", c.path, err)
	}
	c.report = CanaryReport{Name: c.name, Path: c.path, Size: size, Marker: c.marker, SHA256: hex.EncodeToString(c.sum[:]), WriteMS: ms(time.Since(t0))}
	after, err := backingEntries(backing)
	if err != nil {
		os.Remove(c.path)
		return nil, err
	}
	want := sector.BackingSize(int64(size), sectorSize)
	for name, sz := range after {
		if _, ok := before[name]; ok || names.IsReserved(name) {
			continue
		}
		c.report.BackingFile, c.report.BackingSize = name, sz
		if sz == want {
			break
		}
	}
	return c, nil
}

func backingEntries(dir string) (map[string]int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list backing directory: %w", err)
	}
	out := make(map[string]int64, len(ents))
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err == nil {
			out[e.Name()] = info.Size()
		}
	}
	return out, nil
}

// --- backing scan -------------------------------------------------------

// matcher finds any of a set of 32-byte patterns in a byte stream with a
// Rabin-Karp rolling hash: one multiply-add per byte whatever the number of
// patterns, with a bitmap in front of the map so almost every position
// costs no lookup.
type matcher struct {
	pats   [][]byte
	kinds  []string
	byHash map[uint64][]int32
	filter []uint64
	pow    uint64 // rkBase^(patternLen-1)
}

const (
	rkBase     = 0x100000001b3
	filterBits = 20
)

func newMatcher() *matcher {
	m := &matcher{byHash: map[uint64][]int32{}, filter: make([]uint64, (1<<filterBits)/64), pow: 1}
	for i := 0; i < patternLen-1; i++ {
		m.pow *= rkBase
	}
	return m
}

func rkHash(p []byte) uint64 {
	var h uint64
	for _, b := range p {
		h = h*rkBase + uint64(b)
	}
	return h
}

func filterIndex(h uint64) uint64 { return ((h ^ h>>29) * 0xbf58476d1ce4e5b9) >> (64 - filterBits) }

func (m *matcher) add(p []byte, kind string) {
	if len(p) != patternLen {
		panic("matcher: pattern length") // programming error: all patterns are built here
	}
	h := rkHash(p)
	for _, i := range m.byHash[h] {
		if bytes.Equal(m.pats[i], p) {
			return
		}
	}
	m.byHash[h] = append(m.byHash[h], int32(len(m.pats)))
	m.pats = append(m.pats, bytes.Clone(p))
	m.kinds = append(m.kinds, kind)
	fi := filterIndex(h)
	m.filter[fi/64] |= 1 << (fi % 64)
}

// scan reports every window of b equal to a pattern; base is b's offset.
func (m *matcher) scan(b []byte, base int64, report func(off int64, pat int)) {
	if len(b) < patternLen {
		return
	}
	h := rkHash(b[:patternLen])
	for i := patternLen; ; i++ {
		fi := filterIndex(h)
		if m.filter[fi/64]&(1<<(fi%64)) != 0 {
			for _, p := range m.byHash[h] {
				if bytes.Equal(m.pats[p], b[i-patternLen:i]) {
					report(base+int64(i-patternLen), int(p))
				}
			}
		}
		if i == len(b) {
			return
		}
		h = (h-uint64(b[i-patternLen])*m.pow)*rkBase + uint64(b[i])
	}
}

// stream feeds a file through the matcher chunk by chunk, carrying the last
// patternLen-1 bytes so matches across chunk borders are found once.
type stream struct {
	m    *matcher
	buf  []byte
	pos  int64 // file offset of buf[0]
	keep int   // bytes at the front of buf carried from the previous chunk
}

func (s *stream) feed(chunk []byte, report func(off int64, pat int)) {
	s.buf = append(s.buf[:s.keep], chunk...)
	s.m.scan(s.buf, s.pos, report)
	keep := min(patternLen-1, len(s.buf))
	s.pos += int64(len(s.buf) - keep)
	copy(s.buf, s.buf[len(s.buf)-keep:])
	s.keep = keep
}

// histogram accumulates byte statistics over sector payloads.
type histogram struct {
	counts  [256]uint64
	n       int64
	sample  []byte
	sectors int64
	holes   int64
	files   int
}

func (h *histogram) addRecord(rec []byte) {
	if isZero(rec) {
		h.holes++
		return
	}
	h.sectors++
	for _, b := range rec {
		h.counts[b]++
	}
	h.n += int64(len(rec))
	if room := compressSample - len(h.sample); room > 0 {
		h.sample = append(h.sample, rec[:min(room, len(rec))]...)
	}
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (h *histogram) report() RandomnessReport {
	r := RandomnessReport{Files: h.files, Sectors: h.sectors, HoleSectors: h.holes, Bytes: h.n, DegreesOfFreedom: 255}
	if h.n == 0 {
		return r
	}
	exp := float64(h.n) / 256
	var chi, ent float64
	for _, c := range h.counts {
		d := float64(c) - exp
		chi += d * d / exp
		if c > 0 {
			p := float64(c) / float64(h.n)
			ent -= p * math.Log2(p)
		}
	}
	r.ChiSquare = chi
	r.PValue = chiSquarePValue(chi, 255)
	r.Entropy = ent
	r.CompressRatio, r.CompressSample = compressRatio(h.sample), int64(len(h.sample))
	return r
}

// compressRatio is deflate's output size over its input size: ciphertext
// does not compress (ratio just above 1), text and structure do.
func compressRatio(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var cw countWriter
	w, _ := flate.NewWriter(&cw, flate.BestSpeed) // only fails for a bad level
	_, _ = w.Write(b)
	_ = w.Close()
	return float64(cw) / float64(len(b))
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// chiSquarePValue is P(X >= chi) for a chi-square distribution with df
// degrees of freedom: the regularized upper incomplete gamma Q(df/2, chi/2).
func chiSquarePValue(chi float64, df int) float64 {
	return gammaQ(float64(df)/2, chi/2)
}

// gammaQ is the regularized upper incomplete gamma function, by the series
// for x < a+1 and the continued fraction (modified Lentz) otherwise.
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	if x < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 10000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return 1 - sum*math.Exp(-x+a*math.Log(x)-lg)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	f := d
	for i := 1; i < 10000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < 1e-15 {
			break
		}
	}
	return math.Exp(-x+a*math.Log(x)-lg) * f
}

const maxReportedHits = 20

// scanBacking reads every file under backing: the canary patterns are
// searched in all of them (and the canary name in every entry name), and
// the payload of sector files feeds the randomness statistics.
func scanBacking(ctx context.Context, backing string, c *canary, sectorSize int, prog Progress) (ScanReport, RandomnessReport, error) {
	start := time.Now()
	var rep ScanReport
	m := newMatcher()
	for off := 0; off+patternLen <= len(c.content); off += patternLen {
		m.add(c.content[off:off+patternLen], "content")
	}
	m.add([]byte(c.marker), "marker")
	m.add([]byte(c.name), "name")
	rep.Probes = len(m.pats)

	nameHit := func(name string) bool {
		return strings.Contains(name, c.name) || strings.Contains(strings.ToLower(name), c.nameRnd)
	}
	targetHit := func(target string) bool { return strings.Contains(target, c.nameRnd) }
	rnd, err := scanTree(ctx, backing, m, nameHit, targetHit, sectorSize, prog, &rep)
	if err != nil {
		return rep, RandomnessReport{}, err
	}
	rep.DurationMS = ms(time.Since(start))
	return rep, rnd, nil
}

// hit counts h by its kind and keeps the first few.
func (rep *ScanReport) hit(h Hit) {
	switch h.Kind {
	case "content":
		rep.ContentHits++
	case "marker":
		rep.MarkerHits++
	case "name":
		rep.NameHits++
	case "file name":
		rep.FileNameHits++
	}
	if len(rep.Hits) < maxReportedHits {
		rep.Hits = append(rep.Hits, h)
	}
}

// scanTree walks backing: entry names that nameHit accepts and symlink
// targets that targetHit accepts are "file name" hits; every file is
// searched for the patterns of m (scanFiles).
func scanTree(ctx context.Context, backing string, m *matcher, nameHit, targetHit func(string) bool, sectorSize int, prog Progress, rep *ScanReport) (RandomnessReport, error) {
	var files []scanEntry
	var total int64
	err := filepath.WalkDir(backing, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("scan %s: %w", path, err)
		}
		if path != backing && nameHit(d.Name()) {
			rep.hit(Hit{Path: path, Offset: -1, Kind: "file name"})
		}
		switch {
		case d.IsDir():
			rep.Dirs++
		case d.Type()&fs.ModeSymlink != 0:
			if target, err := os.Readlink(path); err == nil && targetHit(target) {
				rep.hit(Hit{Path: path, Offset: -1, Kind: "file name"})
			}
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("scan %s: %w", path, err)
			}
			files = append(files, scanEntry{path: path, sector: !names.IsReserved(d.Name()) && info.Size() >= sector.HeaderSize})
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		return RandomnessReport{}, err
	}
	return scanFiles(ctx, files, total, m, sectorSize, prog, rep)
}

// scanEntry is a backing file to scan; sector: a sector file, whose payload
// counts for the randomness statistics.
type scanEntry struct {
	path   string
	sector bool
}

// scanFiles searches files (total bytes) for the patterns of m and gathers
// the randomness statistics of their sector payload.
func scanFiles(ctx context.Context, files []scanEntry, total int64, m *matcher, sectorSize int, prog Progress, rep *ScanReport) (RandomnessReport, error) {
	prog = progressOr(prog)
	prog.Start("scanning backing files", int64(len(files)), total)
	defer prog.Done()
	var hist histogram
	recSize := sector.Overhead + sectorSize
	chunkRecs := max(1, (1<<20)/recSize)
	buf := make([]byte, chunkRecs*recSize)
	s := &stream{m: m}
	for _, e := range files {
		if err := ctx.Err(); err != nil {
			return RandomnessReport{}, err
		}
		rep.Files++
		prog.AddFiles(1)
		if e.sector {
			hist.files++
		}
		if err := scanFile(e.path, e.sector, s, &hist, buf, recSize, prog, rep, rep.hit); err != nil {
			return RandomnessReport{}, err
		}
	}
	return hist.report(), nil
}

func scanFile(path string, isSector bool, s *stream, hist *histogram, buf []byte, recSize int, prog Progress, rep *ScanReport, hit func(Hit)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("scan %s: %w", path, err)
	}
	defer f.Close()
	s.buf, s.pos, s.keep = s.buf[:0], 0, 0
	report := func(off int64, p int) { hit(Hit{Path: path, Offset: off, Kind: s.m.kinds[p]}) }
	read := func(b []byte) (int, error) {
		n, err := io.ReadFull(f, b)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = nil
		}
		if err != nil {
			return n, fmt.Errorf("scan %s: %w", path, err)
		}
		rep.Bytes += int64(n)
		prog.AddBytes(int64(n))
		return n, nil
	}
	if isSector {
		// The file header (version + random file ID) is structure, not
		// payload: searched, but kept out of the statistics.
		n, err := read(buf[:sector.HeaderSize])
		if err != nil {
			return err
		}
		s.feed(buf[:n], report)
	}
	for {
		n, err := read(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		s.feed(buf[:n], report)
		if isSector {
			for off := 0; off < n; off += recSize {
				hist.addRecord(buf[off:min(off+recSize, n)])
			}
		}
		if n < len(buf) {
			return nil
		}
	}
}

// --- drill --------------------------------------------------------------

type readResult struct {
	data       []byte
	err        error
	start, end time.Time
}

// startRead reads path in a goroutine: in hang mode the read blocks until
// the gate opens, and the drill must keep its own clock meanwhile.
func startRead(path string) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		r := readResult{start: time.Now()}
		r.data, r.err = os.ReadFile(path)
		r.end = time.Now()
		ch <- r
	}()
	return ch
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runDrill disables the key, measures the gate closing, tries a fresh
// mount, re-enables the key and measures I/O resuming. Its deferred
// enable runs on every path out, including panics and cancellation.
func runDrill(ctx context.Context, opt VerifyOptions, c *canary, rep *VerifyReport, d *DrillReport, log zerolog.Logger) {
	start := time.Now()
	adm := opt.Admin
	keyRef := d.KeyARN
	if keyRef == "" {
		keyRef = opt.Header.KeyID
	}
	limit := opt.KeyCheckInterval + drillSlack
	d.CloseLimitMS = ms(limit)
	disabled := false
	defer func() {
		if disabled && !d.ReEnabled {
			// Not the caller's ctx: it may be the reason we are leaving.
			ectx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := adm.EnableKey(ectx, keyRef); err != nil {
				log.Error().Err(err).Str("op", "drill").Msg("could not re-enable the key after the drill")
				d.Error = strings.TrimPrefix(d.Error+"; ", "; ") + fmt.Sprintf("re-enabling key %s failed: %v; run `encvol kms enable-key %s`", d.KeyID, err, d.KeyID)
				rep.add("drill: key re-enabled", false, "key %s is still Disabled: %v; run `encvol kms enable-key %s`", d.KeyID, err, d.KeyID)
			} else {
				d.ReEnabled = true
				log.Warn().Str("op", "drill").Msg("key re-enabled after a failed drill")
			}
		}
		d.TotalMS = ms(time.Since(start))
	}()
	fail := func(check, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		d.Error = msg
		rep.add(check, false, "%s", msg)
	}

	// A read before the disable must succeed and return the canary: the
	// drill then shows that this very data stops being served.
	if r := <-startRead(c.path); r.err != nil || sha256.Sum256(r.data) != c.sum {
		fail("drill: refuse I/O", "the canary does not read back before the drill: %v", r.err)
		return
	}

	t0 := time.Now()
	err := adm.DisableKey(ctx, keyRef)
	d.DisableCallMS = ms(time.Since(t0))
	if err != nil {
		if errors.Is(err, kmsclient.ErrAccessDenied) {
			fail("drill: refuse I/O", "this principal may not disable key %s (AccessDenied): the drill needs permission to disable and enable the key: %v", d.KeyID, err)
		} else {
			fail("drill: refuse I/O", "disable key %s: %v", d.KeyID, err)
		}
		return
	}
	disabled = true
	disabledAt := time.Now()
	log.Debug().Str("op", "drill").Msg("key disabled for the drill")

	// Phase 1: wait until the mount refuses to serve the canary.
	var pending <-chan readResult // a read blocked by a hang-mode gate
	for {
		if time.Since(disabledAt) > limit {
			fail("drill: refuse I/O", "the mount still served the canary %s after the key was disabled (key_check_interval %s)",
				time.Since(disabledAt).Round(time.Millisecond), opt.KeyCheckInterval)
			return
		}
		ch := startRead(c.path)
		d.ProbesClosing++
		var r readResult
		got := false
		select {
		case r = <-ch:
			got = true
		case <-time.After(blockedAfter):
		case <-ctx.Done():
			fail("drill: refuse I/O", "interrupted: %v", ctx.Err())
			return
		}
		if !got {
			// Blocked: that is how a hang-mode gate refuses. Latency is
			// counted to the start of the read that blocked.
			pending = ch
			d.CloseMS = ms(time.Now().Add(-blockedAfter).Sub(disabledAt))
			d.Refusal = "blocked (read waits for the key)"
			break
		}
		if r.err != nil {
			d.CloseMS = ms(r.end.Sub(disabledAt))
			d.Refusal = r.err.Error()
			break
		}
		if sha256.Sum256(r.data) != c.sum {
			fail("drill: refuse I/O", "the canary read back wrong while the key was being disabled (%d bytes)", len(r.data))
			return
		}
		if err := sleepCtx(ctx, opt.Poll); err != nil {
			fail("drill: refuse I/O", "interrupted: %v", err)
			return
		}
	}
	if opt.Status != nil {
		if st, err := opt.Status(ctx); err == nil {
			d.GateCause = st.GateCause
		}
	}
	closeLimit := opt.KeyCheckInterval + time.Second
	eioOK := pending != nil || strings.Contains(d.Refusal, "input/output error")
	rep.add("drill: refuse I/O", eioOK,
		"refused %.0f ms after disable-key (key_check_interval %s, want <= %s): %s", d.CloseMS, opt.KeyCheckInterval, closeLimit, d.Refusal)
	if d.CloseMS > ms(closeLimit) {
		rep.add("drill: close latency", false, "%.0f ms exceeds key_check_interval + 1 s = %s", d.CloseMS, closeLimit)
	}

	// Phase 2: a fresh mount must fail and say why.
	t1 := time.Now()
	ferr := opt.FreshMount(ctx)
	d.FreshMountMS = ms(time.Since(t1))
	if ferr == nil {
		rep.add("drill: fresh mount", false, "a fresh mount succeeded while the key was disabled")
	} else {
		d.FreshMount = ferr.Error()
		rep.add("drill: fresh mount", strings.Contains(d.FreshMount, "Disabled"),
			"refused in %.0f ms: %s", d.FreshMountMS, firstLine(d.FreshMount))
	}

	// Phase 3: enable and wait for I/O to come back without a remount.
	t2 := time.Now()
	err = adm.EnableKey(ctx, keyRef)
	d.EnableCallMS = ms(time.Since(t2))
	if err != nil {
		fail("drill: resume I/O", "enable key %s: %v", d.KeyID, err)
		return
	}
	d.ReEnabled = true
	enabledAt := time.Now()
	log.Debug().Str("op", "drill").Msg("key re-enabled")
	var data []byte
	for resumed := false; !resumed; {
		ch := pending
		if ch == nil {
			ch = startRead(c.path)
		}
		remaining := limit - time.Since(enabledAt)
		select {
		case r := <-ch:
			pending = nil
			if r.err == nil {
				data, resumed = r.data, true
				// A read blocked since the gate closed may have started
				// before the enable; it cannot have finished before it.
				d.ReopenMS = ms(r.end.Sub(enabledAt))
				continue
			}
			if time.Since(enabledAt) > limit {
				fail("drill: resume I/O", "reads still fail %s after enable-key: %v", time.Since(enabledAt).Round(time.Millisecond), r.err)
				return
			}
			if err := sleepCtx(ctx, opt.Poll); err != nil {
				fail("drill: resume I/O", "interrupted: %v", err)
				return
			}
		case <-time.After(max(remaining, 0)):
			fail("drill: resume I/O", "a read still blocks %s after enable-key", limit)
			return
		case <-ctx.Done():
			fail("drill: resume I/O", "interrupted: %v", ctx.Err())
			return
		}
	}
	rep.add("drill: resume I/O", true, "reads resumed %.0f ms after enable-key, without a remount", d.ReopenMS)
	if opt.Status != nil {
		if st, err := opt.Status(ctx); err == nil {
			d.GateAfterOpen = st.Gate
		}
	}
	got := sha256.Sum256(data)
	d.CanaryIntact = got == c.sum
	rep.add("drill: canary intact", d.CanaryIntact, "sha256 %s of %d bytes read back, want %s", hex.EncodeToString(got[:8]), len(data), hex.EncodeToString(c.sum[:8]))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
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
