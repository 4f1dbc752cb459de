package volume

// The canary: a random file written through the mount whose content,
// marker and name the backing scan then looks for.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

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
