package fusefs

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/sector"
)

// Why the daemon reserves backing space for data the kernel holds:
//
// With the writeback cache, write(2) copies into the kernel's page cache
// and returns; the daemon sees the data later, when the kernel writes it
// back. On a full backing file system that write-back fails, and the
// application only learns it from close(2) or fsync(2), if it asks: `echo
// x > f` exits 0 and leaves an empty file. ext4 avoids this with delayed
// allocation: write(2) reserves the blocks it will need and fails with
// ENOSPC when it cannot. The daemon does the same in two modes.
//
// Roomy: while the backing file system has more free space than twice what
// the kernel may hold dirty for this mount (its per-device dirty limit,
// strict for FUSE) plus a margin, anything the kernel holds fits, and
// nothing is checked per write. Twice, because a page of a small file can
// take two backing blocks once sealed.
//
// Careful: below that, every write(2) must be checked before the kernel
// takes it.
//   - Files created now are opened with direct I/O: their write(2) reaches
//     the daemon at once, which stores what fits (a short write) or fails
//     with ENOSPC.
//   - Files already open keep the page cache, but regular files get
//     attributes that expire at once, so each write(2) first sends a
//     GETATTR. The node (admit.go) learns from the caller's system call
//     (caller.go) where and how much it writes, works out what that adds
//     to the stored file (nothing for an overwrite of stored data), and
//     answers ENOSPC unless it fits besides what earlier admitted writes
//     still hold in the kernel ("pending"). Stat and reads pass.
//   - On entering the mode the cached attributes of all files are dropped
//     and the kernel is made to write this mount's dirty pages back (an
//     fsync of every file it knows); writes wait for that to finish, so
//     that what was cached before is on the backing when they are
//     weighed. A mount that starts careful holds nothing dirty yet.
//   - Write-backs from the page cache are never refused: their write(2)
//     already succeeded. The blocks each one takes settle pending.
//   - Data writes keep spaceMargin free, so that metadata (directories,
//     long names, xattrs) and the slack of the accounting still fit on a
//     volume that reports full.
//
// What stays out of reach: writes into a shared writable mmap are not
// system calls and are not checked; a file system that other processes
// fill between two checks can take space the daemon counted on; a caller
// the daemon may not inspect (another user's process, for a daemon that
// is not root) is taken to write 1 MiB. The first two fail as before: at
// write-back, reported by fsync and close.

const (
	// spaceMargin is kept free by data writes in careful mode.
	spaceMargin = 1 << 20
	// spaceUnknownWrite is what a write of unknown length is assumed to need.
	spaceUnknownWrite = 1 << 20
	// spaceRefreshInterval is how often free space is read while the mount
	// is roomy; writes through the mount trigger earlier reads.
	spaceRefreshInterval = 250 * time.Millisecond
	// spaceDefaultDirtyLimit is assumed when the kernel does not say.
	spaceDefaultDirtyLimit = 64 << 20
)

// space tracks the free space of the backing file system for one mount.
type space struct {
	fd         int // the backing directory, for fstatfs
	sectorSize int
	dirtyLimit int64 // most the kernel may hold dirty for the mount
	threshold  int64 // careful below this much free space
	log        zerolog.Logger
	// invalidate drops the kernel's cached attributes of regular files.
	invalidate func()
	// flush makes the kernel write back the mount's dirty pages and
	// returns once it has.
	flush func()

	free    atomic.Int64 // available bytes at the last read
	careful atomic.Bool
	since   atomic.Int64 // bytes written since the last read
	step    atomic.Int64 // read again once since reaches this
	reading atomic.Bool  // a read is under way (roomy mode)
	// forgetting counts FORGETs being handled (spacefs.go), which may
	// close backing files of removed names and so free space.
	forgetting atomic.Int32

	mu       sync.Mutex
	pending  int64         // GUARDED_BY(mu): backing bytes admitted into the page cache, not yet written back
	flushing chan struct{} // GUARDED_BY(mu): closed when the write-back started on entering careful mode is done; nil when none runs

	// writePath holds the threads whose GETATTR in service carries a file
	// handle (spacefs.go), for the node that answers it.
	writePath sync.Map

	stop chan struct{}
	done chan struct{}
}

// newSpace starts tracking the file system of the directory fd (which it
// owns from now on). dirtyLimit 0 means the kernel caches no writes (no
// writeback cache).
func newSpace(fd, sectorSize int, dirtyLimit int64, log zerolog.Logger, invalidate, flush func()) *space {
	s := &space{
		fd: fd, sectorSize: sectorSize, dirtyLimit: dirtyLimit,
		threshold: 2*dirtyLimit + spaceMargin,
		log:       log, invalidate: invalidate, flush: flush,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if free, ok := s.available(); ok && free < s.threshold {
		s.free.Store(free)
		s.careful.Store(true)
		s.log.Warn().Int64("free_bytes", free).Int64("threshold_bytes", s.threshold).
			Msg("backing file system is nearly full: every write is checked for space before it is accepted (slower)")
	}
	s.refresh()
	go s.run()
	return s
}

func (s *space) run() {
	defer close(s.done)
	t := time.NewTicker(spaceRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.refresh()
		}
	}
}

// close stops tracking; safe to call once.
func (s *space) close() {
	close(s.stop)
	<-s.done
	unix.Close(s.fd)
}

// available reads the bytes an unprivileged writer may still use.
func (s *space) available() (int64, bool) {
	var st unix.Statfs_t
	for {
		err := unix.Fstatfs(s.fd, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			s.log.Warn().Err(err).Msg("cannot read the free space of the backing file system")
			return 0, false
		}
		return int64(st.Bavail) * st.Bsize, true
	}
}

// refresh reads the free space and switches modes. Concurrent callers
// skip: one read is enough.
func (s *space) refresh() {
	if !s.reading.CompareAndSwap(false, true) {
		return
	}
	defer s.reading.Store(false)
	free, ok := s.available()
	if !ok {
		return
	}
	s.free.Store(free)
	s.since.Store(0)
	s.step.Store(max((free-s.threshold)/4, 1<<20))
	switch {
	case !s.careful.Load() && free < s.threshold:
		s.enterCareful(free)
	case s.careful.Load() && free >= s.threshold+s.threshold/8:
		s.careful.Store(false)
		s.mu.Lock()
		s.pending = 0
		s.mu.Unlock()
		s.log.Info().Int64("free_bytes", free).Msg("backing file system has room again; writes are cached again")
	}
}

func (s *space) enterCareful(free int64) {
	done := make(chan struct{})
	s.mu.Lock()
	s.pending = 0
	s.flushing = done
	s.mu.Unlock()
	s.careful.Store(true)
	s.log.Warn().Int64("free_bytes", free).Int64("threshold_bytes", s.threshold).
		Msg("backing file system is nearly full: every write is checked for space before it is accepted (slower)")
	go func() {
		s.invalidate()
		s.flush()
		s.mu.Lock()
		s.flushing = nil
		s.mu.Unlock()
		close(done)
	}()
}

// spaceFlushWait bounds how long a write waits for the write-back started
// on entering careful mode; past it the write is weighed as if all the
// mount may hold dirty were still to come.
const spaceFlushWait = 5 * time.Second

// waitFlush returns once no write-back of earlier cached data is under
// way, or with what may still be unflushed when that takes too long.
func (s *space) waitFlush() (unflushed int64) {
	s.mu.Lock()
	ch := s.flushing
	s.mu.Unlock()
	if ch == nil {
		return 0
	}
	t := time.NewTimer(spaceFlushWait)
	defer t.Stop()
	select {
	case <-ch:
		return 0
	case <-t.C:
		return 2 * s.dirtyLimit
	}
}

// wrote counts n bytes written to the backing file system.
func (s *space) wrote(n int) {
	if s.since.Add(int64(n)) >= s.step.Load() {
		s.refresh()
	}
}

// need is what n plaintext bytes may take on the backing file system: the
// sealed sectors, a partial sector padded again, a block of rounding.
func (s *space) need(n int64) int64 {
	b := sector.BackingSize(n, s.sectorSize)
	if b < 0 {
		return 1 << 62 // beyond what a file can hold: never fits
	}
	return b + int64(s.sectorSize) + 4096
}

// fit is the most plaintext bytes whose need is within room.
func (s *space) fit(room int64) int64 {
	room -= int64(s.sectorSize) + 4096 + 64
	if room <= 0 {
		return 0
	}
	return room / int64(s.sectorSize+sector.Overhead) * int64(s.sectorSize)
}

// roomLocked is the space left for data: free now, less what the kernel
// still holds of admitted writes, less the margin. Caller holds mu.
func (s *space) roomLocked() int64 {
	free, ok := s.available()
	if !ok {
		free = s.free.Load()
	}
	s.free.Store(free)
	return free - s.pending - spaceMargin
}

// admitDirect returns how many of n bytes written straight to the daemon
// may go ahead; 0 means none (ENOSPC).
func (s *space) admitDirect(n int) int {
	for retried := false; ; retried = true {
		unflushed := s.waitFlush()
		s.mu.Lock()
		fit := min(int64(n), s.fit(s.roomLocked()-unflushed))
		s.mu.Unlock()
		if fit > 0 || retried {
			return int(fit)
		}
		s.waitForgets()
	}
}

// admitCached decides whether a write(2) that will take up to n backing
// bytes may go into the page cache, and if so counts them as pending.
func (s *space) admitCached(n int64) bool {
	for retried := false; ; retried = true {
		unflushed := s.waitFlush()
		s.mu.Lock()
		ok := s.roomLocked()-unflushed >= n
		if ok {
			s.pending += n
		}
		s.mu.Unlock()
		if ok || retried {
			return ok
		}
		s.waitForgets()
	}
}

// spaceForgetWait bounds how long a write that does not fit waits for the
// daemon to finish forgetting inodes.
const spaceForgetWait = 100 * time.Millisecond

// waitForgets lets FORGETs that are read but not yet handled finish before
// a write that does not fit is refused. A removed file's blocks return to
// the backing only when the daemon closes it, on the FORGET the kernel
// queues during unlink(2); the write that `rm big; echo x > f` sends next
// can be handled first, by another thread, and must not fail for that.
func (s *space) waitForgets() {
	deadline := time.Now().Add(spaceForgetWait)
	for {
		time.Sleep(time.Millisecond) // a FORGET just read has its counter up by now
		if s.forgetting.Load() == 0 || time.Now().After(deadline) {
			return
		}
	}
}

// settle counts n backing bytes taken by data written back from the page
// cache. While the write-back on entering careful mode runs, what arrives
// was cached before anything was admitted, and settles nothing.
func (s *space) settle(n int64) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	if s.flushing == nil {
		s.pending = max(0, s.pending-n)
	}
	s.mu.Unlock()
}

// markWritePath notes that thread tid asks for attributes with a file
// handle, as write(2) does; it tells an uninspectable writer from stat.
func (s *space) markWritePath(tid uint32) { s.writePath.Store(tid, struct{}{}) }

func (s *space) unmarkWritePath(tid uint32) { s.writePath.Delete(tid) }

func (s *space) onWritePath(tid uint32) bool {
	_, ok := s.writePath.Load(tid)
	return ok
}

// expireAttr makes the kernel ask again before its next write(2) to a
// regular file while the mount is careful: attributes valid for no time at
// all. The node layer replaces a zero validity with the mount's default,
// so there (entries of READDIRPLUS) the least it can give is a nanosecond,
// which the kernel rounds up to one clock tick.
func (s *space) expireAttr(a *fuse.Attr, valid *uint64, nsec *uint32, nodeLayer bool) {
	if s == nil || !s.careful.Load() || a.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	*valid, *nsec = 0, 0
	if nodeLayer {
		*nsec = 1
	}
}

func (s *space) expireEntry(out *fuse.EntryOut) {
	s.expireAttr(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
}
