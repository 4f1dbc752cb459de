package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// `encvol verify SNAPSHOT`: a snapshot is read-only, so no canary can be
// written into it. Its own plaintext serves instead: every file is read
// back through a read-only mount (every sector must authenticate), and
// 32-byte runs of what was read, and every name, are searched for in the
// backing copy, which must also look random.

const (
	probesPerFile     = 4
	maxSnapshotProbes = 50_000
	// minProbeVariety keeps runs of few distinct bytes (zeros, padding)
	// out of the probes: they occur in ciphertext holes and by chance.
	minProbeVariety = 8
)

// SnapshotVerifyOptions say what VerifySnapshot checks.
type SnapshotVerifyOptions struct {
	Snapshot   *Snapshot
	Mountpoint string // where the snapshot is mounted (read-only)
	Temporary  bool   // the mount was made for this verification
	KMS        string
	// OnRevoke and KeyCheckInterval are the mount's, for the report.
	OnRevoke         string
	KeyCheckInterval time.Duration
	Progress         Progress
}

// VerifySnapshot checks a mounted snapshot (see above). The mount has
// already authenticated the manifest (checkSnapshotMount). The returned
// error means the verification could not run; failed checks are in the
// report.
func VerifySnapshot(ctx context.Context, opt SnapshotVerifyOptions) (*VerifyReport, error) {
	start := time.Now()
	s := opt.Snapshot
	h := s.Header
	rep := &VerifyReport{
		VolumeID: h.VolumeID, Backing: s.Backing, Mountpoint: opt.Mountpoint, TemporaryMount: opt.Temporary,
		KMS: opt.KMS, KeyID: h.KeyID, Cipher: h.Cipher, SectorSize: h.SectorSize, NameMode: h.NameMode, Started: start.UTC(),
		OnRevoke: opt.OnRevoke, KeyCheckInterval: ms(opt.KeyCheckInterval),
		Extra: map[string]string{"snapshot": fmt.Sprintf("%s (%s, taken %s)", s.Path, s.Manifest.SnapshotID, s.Manifest.Created.Format(time.RFC3339))},
	}
	entries, err := countEntries(s.Backing)
	if err != nil {
		return nil, err
	}
	rep.add("manifest", entries == s.Manifest.Entries,
		"authenticated under the volume's key, names volume %s and this header; %d entries in the backing copy, %d in the manifest",
		s.Manifest.VolumeID, entries, s.Manifest.Entries)

	rt, err := readTree(ctx, opt.Mountpoint)
	if err != nil {
		return nil, err
	}
	detail := fmt.Sprintf("%d files (%s) and %d directories read back through a read-only mount", rt.files, HumanBytes(rt.bytes), rt.dirs)
	if len(rt.failed) > 0 {
		detail += fmt.Sprintf("; %d failed, first %s", len(rt.failed), rt.failed[0])
	}
	rep.add("content readable", len(rt.failed) == 0, "%s", detail)

	scan, rnd, err := scanForPlaintext(ctx, s.Backing, rt, h.SectorSize, opt.Progress)
	if err != nil {
		return nil, err
	}
	rep.Scan, rep.Randomness = scan, rnd
	if scan.Probes == 0 {
		rep.skip("plaintext content", "no file of the snapshot has a 32-byte run of varied bytes to search for")
	} else {
		rep.add("plaintext content", scan.ContentHits == 0,
			"%d of %d probes (32-byte runs of the snapshot's files) found in %d backing files, %s scanned in %.0f ms",
			scan.ContentHits, scan.Probes, scan.Files, HumanBytes(scan.Bytes), scan.DurationMS)
	}
	if h.NameMode == NameModePlaintext {
		rep.skip("plaintext names", "volume stores names in plaintext (created with --plaintext-names)")
	} else {
		rep.add("plaintext names", scan.FileNameHits == 0, "%d of %d names and symlink targets of the snapshot found as backing names", scan.FileNameHits, len(rt.names))
	}
	randomOK := rnd.Bytes >= minRandomnessBytes && rnd.PValue >= minPValue && rnd.CompressRatio >= minCompressRatio
	if rnd.Bytes < minRandomnessBytes {
		rep.skip("randomness", "only %s of sector payload, too little to test", HumanBytes(rnd.Bytes))
	} else {
		rep.add("randomness", randomOK,
			"chi-square %.1f (%d df, p = %.3g), entropy %.4f bits/byte, deflate ratio %.4f over %s in %d sectors of %d files (%d holes skipped)",
			rnd.ChiSquare, rnd.DegreesOfFreedom, rnd.PValue, rnd.Entropy, rnd.CompressRatio, HumanBytes(rnd.Bytes), rnd.Sectors, rnd.Files, rnd.HoleSectors)
	}
	rep.finish(start)
	return rep, nil
}

// countEntries counts the entries below dir, dir not counted.
func countEntries(dir string) (int, error) {
	n := -1
	err := filepath.WalkDir(dir, func(_ string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count entries of %s: %w", dir, err)
	}
	return n, nil
}

// treeRead is what reading a mounted tree found.
type treeRead struct {
	files, dirs int
	bytes       int64
	failed      []string
	probes      [][]byte
	names       map[string]bool // plaintext names and symlink targets
}

// readTree reads every file and lists every directory below mnt.
func readTree(ctx context.Context, mnt string) (*treeRead, error) {
	rt := &treeRead{names: map[string]bool{}}
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(mnt, func(path string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			rt.failed = append(rt.failed, fmt.Sprintf("%s: %v", path, err))
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if path == mnt {
			return nil
		}
		rt.names[d.Name()] = true
		switch {
		case d.IsDir():
			rt.dirs++
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(path)
			if err != nil {
				rt.failed = append(rt.failed, fmt.Sprintf("%s: %v", path, err))
			}
			rt.names[t] = true
		case d.Type().IsRegular():
			rt.files++
			if err := rt.readFile(path, buf); err != nil {
				rt.failed = append(rt.failed, fmt.Sprintf("%s: %v", path, err))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rt, nil
}

// readFile reads path to its end and keeps a few probes of it.
func (rt *treeRead) readFile(path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	want := map[int64]bool{}
	if size >= patternLen {
		for i := int64(0); i < probesPerFile; i++ {
			want[(size-patternLen)*i/(probesPerFile-1)] = true
		}
	}
	var off int64
	for {
		n, err := f.Read(buf)
		for p := range want {
			if p >= off && p+patternLen <= off+int64(n) {
				rt.addProbe(buf[p-off : p-off+patternLen])
				delete(want, p)
			}
		}
		off += int64(n)
		rt.bytes += int64(n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (rt *treeRead) addProbe(p []byte) {
	if len(rt.probes) >= maxSnapshotProbes {
		return
	}
	var seen [256]bool
	variety := 0
	for _, b := range p {
		if !seen[b] {
			seen[b] = true
			variety++
		}
	}
	if variety >= minProbeVariety {
		rt.probes = append(rt.probes, append([]byte(nil), p...))
	}
}

// scanForPlaintext searches the backing directory for the probes and names
// of rt and gathers the randomness statistics of its sector files.
func scanForPlaintext(ctx context.Context, backing string, rt *treeRead, sectorSize int, prog Progress) (ScanReport, RandomnessReport, error) {
	start := time.Now()
	var rep ScanReport
	m := newMatcher()
	for _, p := range rt.probes {
		m.add(p, "content")
	}
	rep.Probes = len(m.pats)
	has := func(name string) bool { return rt.names[name] }
	rnd, err := scanTree(ctx, backing, m, has, has, sectorSize, prog, &rep)
	if err != nil {
		return rep, RandomnessReport{}, err
	}
	rep.DurationMS = ms(time.Since(start))
	return rep, rnd, nil
}
