package fusefs_test

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap/names"
)

// goSrcRace: the race detector slows the in-process daemon about tenfold,
// so a race build copies a subset of the tree.
var goSrcRace = func() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return true
			}
		}
	}
	return false
}()

// goSrcSubset is what a race or -short run copies: a few thousand files of
// every size, deep paths and testdata with binary content.
var goSrcSubset = []string{"encoding", "fmt", "archive", "compress", "crypto/internal/fips140/aes", "go/parser", "image", "unicode"}

// TestGoSourceTree copies the Go source tree into a mount, unmounts, mounts
// again and compares everything (like diff -r). Then it scans the backing
// directory: no plaintext file name may appear in a backing name, and no
// sampled 64-byte run of any file's content may appear in a backing file.
func TestGoSourceTree(t *testing.T) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "src")
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("Go source tree: %v", err)
	}
	roots := []string{""}
	if goSrcRace || testing.Short() {
		roots = goSrcSubset
	}
	vol := mountTestVolume(t, fusefstest.Options{})

	start := time.Now()
	files, bytesCopied := goSrcCopyTree(t, src, vol.Dir(), roots)
	t.Logf("copied %d files, %.1f MiB from %s (subset %v) in %v", files, float64(bytesCopied)/(1<<20), src, roots, time.Since(start).Round(time.Millisecond))

	vol.Remount(t)
	start = time.Now()
	compared := goSrcDiffTrees(t, src, vol.Dir(), roots)
	t.Logf("after remount: %d paths identical in %v", compared, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	pl := samplePlaintext(t, src, roots)
	leaks, files, size := pl.scan(t, vol.m.Volume.Backing)
	if len(leaks) > 0 {
		if len(leaks) > 20 {
			leaks = append(leaks[:20], fmt.Sprintf("... and %d more", len(leaks)-20))
		}
		t.Fatalf("plaintext visible in the backing directory:\n  %s", strings.Join(leaks, "\n  "))
	}
	if pl.n == 0 || files == 0 {
		t.Fatalf("scan covered nothing: %d samples, %d backing files", pl.n, files)
	}
	t.Logf("backing: %d files, %.1f MiB scanned for %d content samples and %d names in %v: no leak",
		files, float64(size)/(1<<20), pl.n, len(pl.names), time.Since(start).Round(time.Millisecond))

	// Positive control: the same scan must see a leak where there is one.
	ctl := t.TempDir()
	var leakName, leakFile string
	for name := range pl.prefixes {
		leakName = pl.prefixes[name][0]
		break
	}
	for _, ss := range pl.samples {
		leakFile = ss[0].file
		break
	}
	if err := goSrcCopyFile(leakFile, filepath.Join(ctl, "QUJDREVGR0hJSktM")); err != nil {
		t.Fatalf("control: %v", err)
	}
	if err := os.WriteFile(filepath.Join(ctl, "x"+leakName), nil, 0o600); err != nil {
		t.Fatalf("control: %v", err)
	}
	ctlLeaks, _, _ := pl.scan(t, ctl)
	var sawName, sawContent bool
	for _, l := range ctlLeaks {
		sawName = sawName || strings.Contains(l, "plaintext name")
		sawContent = sawContent || strings.Contains(l, "holds plaintext")
	}
	if !sawName || !sawContent {
		t.Fatalf("control scan missed a planted leak (name %v, content %v): %q", sawName, sawContent, ctlLeaks)
	}
}

// goSrcCopyTree copies the regular files, directories and symlinks below each
// root of src to dst (4 writers), preserving permission bits.
func goSrcCopyTree(t *testing.T, src, dst string, roots []string) (files int, total int64) {
	t.Helper()
	type job struct{ from, to string }
	var jobs []job
	for _, r := range roots {
		base := filepath.Join(src, r)
		err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			to := filepath.Join(dst, rel)
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				if rel == "." {
					return nil
				}
				return os.MkdirAll(to, info.Mode().Perm()|0o700)
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				return os.Symlink(target, to)
			case d.Type().IsRegular():
				jobs = append(jobs, job{p, to})
				total += info.Size()
			}
			return nil
		})
		if err != nil {
			t.Fatalf("copy %s: %v", base, err)
		}
	}
	var wg sync.WaitGroup
	ch := make(chan job)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if err := goSrcCopyFile(j.from, j.to); err != nil {
					errs <- err
					for range ch {
					}
					return
				}
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("copy: %v", err)
	}
	return len(jobs), total
}

func goSrcCopyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", to, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("close %s: %w", to, err)
	}
	return nil
}

// goSrcDiffTrees compares type, permission bits, size, content and symlink
// targets of every path below the roots, in both directions.
func goSrcDiffTrees(t *testing.T, src, mnt string, roots []string) int {
	t.Helper()
	n := 0
	seen := map[string]bool{}
	for _, r := range roots {
		err := filepath.WalkDir(filepath.Join(src, r), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			if !d.IsDir() && !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
				return nil // not copied
			}
			seen[rel] = true
			n++
			return goSrcComparePath(p, filepath.Join(mnt, rel))
		})
		if err != nil {
			t.Fatalf("diff: %v", err)
		}
	}
	// Nothing extra in the mount.
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel != "." && !seen[rel] && !isParentOfRoot(rel, roots) {
			return fmt.Errorf("only in the mount: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("diff: %v", err)
	}
	return n
}

func isParentOfRoot(rel string, roots []string) bool {
	for _, r := range roots {
		if r == rel || strings.HasPrefix(r, rel+"/") {
			return true
		}
	}
	return false
}

func goSrcComparePath(a, b string) error {
	fa, err := os.Lstat(a)
	if err != nil {
		return err
	}
	fb, err := os.Lstat(b)
	if err != nil {
		return fmt.Errorf("in the mount: %w", err)
	}
	if fa.Mode().Type() != fb.Mode().Type() {
		return fmt.Errorf("%s: type %v, mount has %v", b, fa.Mode().Type(), fb.Mode().Type())
	}
	switch {
	case fa.Mode().IsRegular():
		if fa.Mode().Perm() != fb.Mode().Perm() || fa.Size() != fb.Size() {
			return fmt.Errorf("%s: mode %v size %d, mount has mode %v size %d", b, fa.Mode(), fa.Size(), fb.Mode(), fb.Size())
		}
		da, err := os.ReadFile(a)
		if err != nil {
			return err
		}
		db, err := os.ReadFile(b)
		if err != nil {
			return fmt.Errorf("read from the mount: %w", err)
		}
		if !bytes.Equal(da, db) {
			return fmt.Errorf("%s: content differs", b)
		}
	case fa.Mode()&fs.ModeSymlink != 0:
		ta, _ := os.Readlink(a)
		tb, err := os.Readlink(b)
		if err != nil || ta != tb {
			return fmt.Errorf("%s: symlink target %q, mount has %q (%v)", b, ta, tb, err)
		}
	}
	return nil
}

// leakRunLen is the length of the content runs searched for in the backing files.
const leakRunLen = 64

// rolling hash over leakRunLen bytes: h = Σ b[i]·B^(leakRunLen-1-i) mod 2^64.
const hashBase = 1099511628211

var hashBasePow = func() uint64 { // B^leakRunLen
	p := uint64(1)
	for i := 0; i < leakRunLen; i++ {
		p *= hashBase
	}
	return p
}()

func runHash(b []byte) uint64 {
	var h uint64
	for _, c := range b[:leakRunLen] {
		h = h*hashBase + uint64(c)
	}
	return h
}

type leakSample struct {
	file string
	off  int64
	data [leakRunLen]byte
}

// plaintextIndex holds what the backing scan looks for.
type plaintextIndex struct {
	names    map[string]bool         // every plaintext name
	prefixes map[string][]string     // names of ≥ 8 bytes by their first 8 bytes
	samples  map[uint64][]leakSample // content runs by rolling hash
	filter   []uint64                // 2^24-bit prefilter on the rolling hash
	n        int
}

// samplePlaintext indexes every name and up to 16 runs of 64 bytes per file
// (always the first one) below the roots.
func samplePlaintext(t *testing.T, src string, roots []string) *plaintextIndex {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	pl := &plaintextIndex{names: map[string]bool{}, prefixes: map[string][]string{},
		samples: map[uint64][]leakSample{}, filter: make([]uint64, 1<<18)}
	for _, r := range roots {
		err := filepath.WalkDir(filepath.Join(src, r), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			pl.names[name] = true
			if len(name) >= 8 {
				pl.prefixes[name[:8]] = append(pl.prefixes[name[:8]], name)
			}
			if !d.Type().IsRegular() {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(data) < leakRunLen {
				return nil
			}
			k := min(16, len(data)/leakRunLen)
			for i := 0; i < k; i++ {
				off := 0
				if i > 0 {
					off = rng.IntN(len(data) - leakRunLen + 1)
				}
				run := data[off : off+leakRunLen]
				if distinctBytes(run) < 8 {
					continue // zero padding and the like say nothing about a leak
				}
				s := leakSample{file: p, off: int64(off)}
				copy(s.data[:], run)
				h := runHash(run)
				pl.samples[h] = append(pl.samples[h], s)
				pl.filter[h>>40>>6] |= 1 << (h >> 40 & 63)
				pl.n++
			}
			return nil
		})
		if err != nil {
			t.Fatalf("leakSample plaintext: %v", err)
		}
	}
	return pl
}

// scan walks dir and lists every backing name that equals or contains a
// plaintext name (or is not base64url), and every sampled content run found
// in a backing file, checking all offsets.
func (pl *plaintextIndex) scan(t *testing.T, dir string) (leaks []string, files int, size int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		name := d.Name()
		if !names.IsReserved(name) {
			// Backing names are base64url (encvol.* reserved names aside), so a
			// plaintext name with any other character cannot hide in one.
			if pl.names[name] {
				leaks = append(leaks, fmt.Sprintf("backing name equals a plaintext name: %s", p))
			}
			for _, c := range name {
				if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
					leaks = append(leaks, fmt.Sprintf("backing name %q is not base64url: %s", name, p))
					break
				}
			}
			for i := 0; i+8 <= len(name); i++ {
				for _, pn := range pl.prefixes[name[i:i+8]] {
					if strings.HasPrefix(name[i:], pn) {
						leaks = append(leaks, fmt.Sprintf("backing name %s contains plaintext name %q", p, pn))
					}
				}
			}
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		size += int64(len(data))
		if len(data) < leakRunLen {
			return nil
		}
		h := runHash(data)
		for i := 0; ; i++ {
			if pl.filter[h>>40>>6]&(1<<(h>>40&63)) != 0 {
				for _, s := range pl.samples[h] {
					if bytes.Equal(data[i:i+leakRunLen], s.data[:]) {
						leaks = append(leaks, fmt.Sprintf("backing file %s offset %d holds plaintext of %s offset %d", p, i, s.file, s.off))
					}
				}
			}
			if i+leakRunLen >= len(data) {
				break
			}
			h = h*hashBase + uint64(data[i+leakRunLen]) - uint64(data[i])*hashBasePow
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", dir, err)
	}
	return leaks, files, size
}

func distinctBytes(b []byte) int {
	var seen [256]bool
	n := 0
	for _, c := range b {
		if !seen[c] {
			seen[c] = true
			n++
		}
	}
	return n
}
