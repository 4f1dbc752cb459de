package server

import (
	"context"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/encvol/encvol/kms"
)

// DefaultWatchInterval is how often a running server looks at its
// principals file: a principal removed from the file is refused within
// about this long.
const DefaultWatchInterval = 250 * time.Millisecond

// fileSig identifies one version of a file well enough to notice a change:
// an atomic replacement changes the inode, an edit in place the size or
// the times (nanoseconds on the file systems that matter).
type fileSig struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func statSig(path string) (fileSig, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileSig{}, err
	}
	return fileSig{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// WatchPrincipals keeps the server's principals in step with the file at
// path until ctx is done: it reloads the file when it changed (looking
// every interval, DefaultWatchInterval if 0) and whenever a signal
// arrives on reload (SIGHUP). A file that does not load, or that other users can read, is
// logged as an error and the principals loaded before stay in force; the
// next change is tried again.
func (s *Server) WatchPrincipals(ctx context.Context, path string, interval time.Duration, reload <-chan os.Signal) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	// The zero signature makes the first look a reload: a change made
	// between the server's first load and this watcher is not missed.
	var last fileSig
	current := s.principalNames()
	first := true
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-reload:
			forced = true
		case <-t.C:
		}
		sig, err := statSig(path)
		if err != nil {
			if sig != last || forced {
				s.log.Error().Err(err).Str("principals", path).Int("kept", len(current)).
					Msg("principals file cannot be read; the principals loaded before stay in force")
			}
			last = sig
			continue
		}
		if sig == last && !forced {
			continue
		}
		last = sig
		p, err := LoadPrivatePrincipals(path)
		if err != nil {
			s.log.Error().Err(err).Str("principals", path).Int("kept", len(current)).
				Msg("principals file not reloaded; the principals loaded before stay in force")
			continue
		}
		s.SetPrincipals(p)
		next := p.Names()
		added, removed := diffNames(current, next)
		current = next
		ev := s.log.Info()
		if first && len(added)+len(removed) == 0 {
			// The first look found what the server started with.
			ev = s.log.Debug()
		}
		first = false
		ev.Str("op", "reload").Str("principals", path).Int("count", len(next)).Int("groups", len(p.Group)).
			Strs("added", added).Strs("removed", removed).Bool("signal", forced).Msg("principals reloaded")
	}
}

// LoadPrivatePrincipals is LoadPrincipalsFile refusing a file that other
// users can read: it holds every secret access key.
func LoadPrivatePrincipals(path string) (*Principals, error) {
	p, err := LoadPrincipalsFile(path)
	if err != nil {
		return nil, err
	}
	open, mode, err := kms.ReadableByOthers(path)
	if err != nil {
		return nil, err
	}
	if open {
		return nil, fmt.Errorf("principals file %s (mode %04o) can be read by other users, and it holds every secret access key: chmod 600 %s", path, mode, path)
	}
	return p, nil
}

// principalNames lists the names of the principals the server accepts now.
func (s *Server) principalNames() []string {
	v := s.verify.Load()
	names := make([]string, 0, len(v.byKey))
	for _, p := range v.byKey {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// diffNames returns the names only in next and those only in prev; both
// are sorted.
func diffNames(prev, next []string) (added, removed []string) {
	for _, n := range next {
		if _, found := slices.BinarySearch(prev, n); !found {
			added = append(added, n)
		}
	}
	for _, n := range prev {
		if _, found := slices.BinarySearch(next, n); !found {
			removed = append(removed, n)
		}
	}
	return added, removed
}
