package volume

// The backing scan: every backing file searched for the canary's
// content, marker and name, with a rolling hash over the stream.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

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
