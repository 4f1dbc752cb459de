package sector

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// batchBytes bounds how much plaintext one pread/pwrite moves, so a pooled
// buffer stays around 1 MiB whatever the request size.
const batchBytes = 1 << 20

// File is one sector file on an *os.File. Every method takes the *Cipher to
// use, so keys can be closed or replaced without reopening files; the File
// caches the per-file AEAD of the last Cipher it saw, and that cache dies with
// the Cipher's Close.
//
// Concurrency: ReadAt, Size and Sync may run concurrently with each other;
// WriteAt and Truncate need exclusive access (callers hold a per-file
// RWMutex). The File never returns bytes that did not authenticate.
//
// A File caches the header (file ID) after first use, so within a process
// use one File per backing file; another File on the same backing file must
// not truncate it to zero (which starts a new file ID) behind this one.
type File struct {
	f          *os.File
	path       string
	sectorSize int
	stored     int64 // bytes of a full stored sector: sectorSize + Overhead
	batch      int64 // sectors per pread/pwrite
	maxPlain   int64

	hmu sync.Mutex             // serializes loading/creating the header
	hdr atomic.Pointer[header] // nil until read or created; reset by Truncate(0)
	ref atomic.Pointer[keyRef] // cached per-file key of the last Cipher used

	holesMu sync.Mutex              // serializes loading the hole map
	holes   atomic.Pointer[holeMap] // the Version3 hole map once loaded (holefile.go)
	// settle is the smaller map SettleHoles writes (holesettle.go), nil
	// when it is the loaded one; settleDue says it may differ.
	settle    *holeMap // GUARDED_BY(writers run alone)
	settleDue atomic.Bool

	// rc reaches the descriptor for pwrite and fallocate, made once: one
	// per call would be an allocation on every write.
	rc          syscall.RawConn
	pw          pwriter            // GUARDED_BY(writers run alone)
	pwFn        func(uintptr) bool // pw.write, made once
	rsv         reservation        // GUARDED_BY(writers run alone)
	rsvFn       func(uintptr)      // reserveFd, made once
	noFallocate atomic.Bool        // the backing file system has no fallocate (reserve)
	// soleWriter: nothing but this File changes the backing file's size
	// (SoleWriter), so size may remember it.
	soleWriter atomic.Bool
	// size is the backing file's size while soleWriter holds, -1 when not
	// known. Every call that can change the size resets it (writers run
	// alone, so no reader stores an older size after the reset).
	size atomic.Int64
	// dense: backing bytes below it are allocated (no holes), so
	// overwriting them takes no space; -1 until first needed. Only
	// WriteAt and Truncate change it, and they run alone; Growth reads it.
	dense int64
}

type keyRef struct {
	c  *Cipher
	id [FileIDSize]byte
	fk *fileKey
}

// NewFile wraps f (opened read-write, or read-only for reading only) as a
// sector file with the given plaintext sector size. It reads nothing: a
// 0-byte backing file is an empty plaintext file whose header is written on
// the first write or extending truncate.
func NewFile(f *os.File, sectorSize int) (*File, error) {
	if err := checkSectorSize(sectorSize); err != nil {
		return nil, err
	}
	if f == nil {
		return nil, errors.New("sector: new file: nil *os.File")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sector: new file %s: %w", f.Name(), err)
	}
	sf := &File{
		f:          f,
		rc:         rc,
		path:       f.Name(),
		sectorSize: sectorSize,
		stored:     int64(sectorSize + Overhead),
		batch:      int64(max(1, batchBytes/sectorSize)),
		maxPlain:   MaxPlainSize(sectorSize),
		dense:      -1,
	}
	sf.size.Store(-1)
	sf.pwFn = sf.pw.write
	sf.rsvFn = sf.reserveFd
	return sf, nil
}

// SoleWriter declares that, while f is open, nothing but f changes the
// backing file's size (other descriptors of it may read, and change its
// attributes). f then remembers the size instead of asking the kernel on
// every read. A caller that changes the size by other means anyway calls
// ForgetSize afterwards.
func (f *File) SoleWriter() { f.soleWriter.Store(true) }

// Fresh declares that the backing file holds exactly hdr, a header from
// NewFileHeader that the caller wrote into the file it has just created,
// and nothing else: no sector and no hole map. f then starts from what it
// would have read, so the file's first write costs no fstat, no read of
// the header and no look for a hole map. Call it before any other use of
// f; a header that does not parse is an error and changes nothing.
func (f *File) Fresh(hdr []byte) error {
	h, err := parseHeader(hdr, f.path)
	if err != nil {
		return err
	}
	f.useNewHeader(h)
	if f.soleWriter.Load() {
		f.size.Store(HeaderSize)
	}
	return nil
}

// useNewHeader makes h, the header of a file that was just created, f's
// header: a new file ID, so no key of it is cached and no hole map sealed
// for it exists yet.
func (f *File) useNewHeader(h *header) {
	f.hdr.Store(h)
	f.ref.Store(nil)
	f.holes.Store(&holeMap{h: h})
}

// ForgetSize drops the remembered backing size (see SoleWriter).
func (f *File) ForgetSize() { f.size.Store(-1) }

// OS returns the backing file.
func (f *File) OS() *os.File { return f.f }

// Sync flushes the backing file to stable storage.
func (f *File) Sync() error {
	if err := f.f.Sync(); err != nil {
		return fmt.Errorf("sector: sync %s: %w", f.path, err)
	}
	return nil
}

// Size returns the plaintext size derived from the backing file's size. A
// backing file with a partial header, or whose last stored sector is too
// short to be valid, yields an error (ErrHeader, or *AuthError with
// ErrTruncated).
func (f *File) Size() (int64, error) {
	b, err := f.backingSize()
	if err != nil {
		return 0, err
	}
	p, err := f.plainSize(b)
	if err != nil {
		return 0, err
	}
	return p, nil
}

// Growth is how many plaintext bytes a write of n bytes at off adds to
// what the backing file must allocate: none for an overwrite of stored
// sectors without holes, else what reaches past the stored end, else all
// n. It may run beside readers, not beside WriteAt or Truncate.
func (f *File) Growth(off, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	backing, err := f.backingSize()
	if err != nil {
		return n, err
	}
	stored, err := f.plainSize(backing)
	if err != nil {
		return n, err
	}
	if off >= stored {
		return n, nil
	}
	// The stored bytes from off on must all be allocated: writing into a
	// hole takes blocks. f.dense, when it reaches far enough, saves the
	// SEEK_HOLE; it is only read here.
	ss := int64(f.sectorSize)
	last := (min(off+n, stored) - 1) / ss // the last stored sector written
	end := min(f.storedOffset(last+1), backing)
	if end > f.dense {
		var h int64
		var serr error
		if err := f.rc.Control(func(fd uintptr) { h, serr = unix.Seek(int(fd), f.storedOffset(off/ss), unix.SEEK_HOLE) }); err != nil {
			serr = err
		}
		if serr != nil {
			return n, fmt.Errorf("sector: seek %s: %w", f.path, serr)
		}
		if h < end {
			return n, nil
		}
	}
	return max(0, off+n-stored), nil
}

// ReadAt reads len(p) plaintext bytes at off. Like os.File.ReadAt it returns
// io.EOF when fewer bytes are available. Holes read as zeros. A sector that
// fails authentication stops the read with an *AuthError; n then counts only
// authenticated bytes before it.
func (f *File) ReadAt(c *Cipher, p []byte, off int64) (int, error) {
	if err := f.checkCipher(c); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("sector: read %s: negative offset %d", f.path, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	b, err := f.backingSize()
	if err != nil {
		return 0, err
	}
	size, sizeErr := f.plainSize(b)
	if sizeErr != nil && !errors.Is(sizeErr, ErrAuth) {
		return 0, sizeErr
	}
	end := off + int64(len(p))
	if end < off || end > size {
		// Reading up to EOF would hit a damaged tail: report it instead of a short read.
		if sizeErr != nil {
			return 0, sizeErr
		}
		end = size
	}
	if off >= end {
		return 0, io.EOF
	}
	h, fk, err := f.headerKey(c, b, false)
	if err != nil {
		return 0, err
	}
	bufs := getBuffers(f.sectorSize, f.batch)
	defer putBuffers(bufs, f.sectorSize)

	S := int64(f.sectorSize)
	first, last := off/S, (end-1)/S
	n := 0
	for i0 := first; i0 <= last; i0 += f.batch {
		i1 := min(last+1, i0+f.batch)
		m, err := f.readChunk(c, fk, h, bufs, p[n:end-off], off+int64(n), size, i0, i1)
		n += m
		if err != nil {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readChunk reads and opens sectors [i0, i1) and copies the part of them in
// [off, off+len(p)) into p. size is the plaintext file size.
func (f *File) readChunk(c *Cipher, fk *fileKey, h *header, bufs *buffers, p []byte, off, size, i0, i1 int64) (int, error) {
	S := int64(f.sectorSize)
	start := f.storedOffset(i0)
	endLen := min(S, size-(i1-1)*S) + Overhead
	buf := bufs.sealed[:f.storedOffset(i1-1)+endLen-start]
	j := chunkJob{f: f, h: h, buf: buf, start: start, p: p, off: off, end: off + int64(len(p)), size: size, i0: i0, i1: i1}
	mid := f.splitAt(i0, i1)
	if mid == i1 {
		if err := j.load(i0, i1); err != nil {
			return 0, err
		}
	}
	if err := c.rlock(); err != nil {
		f.ref.Store(nil)
		return 0, err
	}
	defer c.runlock()
	if j.aead = fk.aead; j.aead == nil {
		f.ref.Store(nil)
		return 0, ErrClosed
	}
	if mid == i1 {
		return j.open(i0, i1, bufs.plain, bufs.aad)
	}
	return openHalves(j, mid, bufs)
}

// chunkJob is the state of one readChunk or writeChunk, shared by its two
// halves when it is split. The halves are methods rather than closures: a
// closure handed to a goroutine would move every variable it captures to
// the heap on every call, small chunks included.
type chunkJob struct {
	f    *File
	c    *Cipher
	aead cipher.AEAD
	h    *header
	buf  []byte // the chunk's stored sectors (read: loaded; write: sealed)
	// start is the backing offset of buf (reads).
	start    int64
	p        []byte // plaintext at off (read: destination; write: source)
	off, end int64
	size     int64 // plaintext size before the call
	newSize  int64 // after a write
	i0, i1   int64 // the chunk's sectors [i0, i1)
	headOld  []byte
	tailOld  []byte
}

// load reads the stored sectors [j0, j1) into their place in buf.
func (j *chunkJob) load(j0, j1 int64) error {
	f := j.f
	lo, hi := (j0-j.i0)*f.stored, int64(len(j.buf))
	if j1 < j.i1 {
		hi = (j1 - j.i0) * f.stored
	}
	if _, err := f.f.ReadAt(j.buf[lo:hi], j.start+lo); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("sector: read %s sectors %d-%d: backing file shrank: %w", f.path, j0, j1-1, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("sector: read %s sectors %d-%d: %w", f.path, j0, j1-1, err)
	}
	return nil
}

// open authenticates sectors [j0, j1) of buf and copies their part in
// [off, end) into p. n counts the bytes before a failing sector.
func (j *chunkJob) open(j0, j1 int64, plain, aad []byte) (int, error) {
	f := j.f
	S := int64(f.sectorSize)
	n := 0
	for i := j0; i < j1; i++ {
		secStart := i * S
		plainLen := min(S, j.size-secStart)
		st := j.buf[(i-j.i0)*f.stored:]
		st = st[:plainLen+Overhead]
		lo, hi := max(j.off, secStart), min(j.end, secStart+plainLen)
		final := j.h.isFinal(i, j.size, f.sectorSize)
		a := j.h.aad(aad, i, final)
		if lo == secStart && hi == secStart+plainLen {
			if err := openSector(j.aead, j.p[lo-j.off:hi-j.off], st, a, final); err != nil {
				return n, &AuthError{Path: f.path, Index: i, Err: err}
			}
			if err := f.checkHole(j.aead, j.h, i, st); err != nil {
				return n, err
			}
		} else {
			pt := plain[:plainLen]
			if err := openSector(j.aead, pt, st, a, final); err != nil {
				return n, &AuthError{Path: f.path, Index: i, Err: err}
			}
			if err := f.checkHole(j.aead, j.h, i, st); err != nil {
				return n, err
			}
			copy(j.p[lo-j.off:hi-j.off], pt[lo-secStart:hi-secStart])
		}
		n += int(hi - lo)
	}
	return n, nil
}

// openHalves loads and opens the two halves of a read chunk on two
// goroutines. Bytes count only up to the first failure: the first half's
// up to a failure in it, then the second half's likewise.
func openHalves(j chunkJob, mid int64, bufs *buffers) (int, error) {
	var n2 int
	var err2 error
	var wg sync.WaitGroup
	wg.Go(func() {
		if err2 = j.load(mid, j.i1); err2 == nil {
			n2, err2 = j.open(mid, j.i1, bufs.plain2, bufs.aad2)
		}
	})
	n, err := 0, j.load(j.i0, mid)
	if err == nil {
		n, err = j.open(j.i0, mid, bufs.plain, bufs.aad)
	}
	wg.Wait()
	if err != nil {
		return n, err
	}
	return n + n2, err2
}

// parallelMinBytes is the chunk size from which sealing and opening run on
// two goroutines (as gocryptfs does from 32 blocks): below it the hand-off
// costs more than it saves.
const parallelMinBytes = 128 << 10

// splitAt returns where to split sectors [i0, i1) between two goroutines,
// or i1 when the range is too small to be worth it or only one CPU runs Go
// code.
func (f *File) splitAt(i0, i1 int64) int64 {
	if (i1-i0)*int64(f.sectorSize) < parallelMinBytes || runtime.GOMAXPROCS(0) < 2 {
		return i1
	}
	return i0 + (i1-i0)/2
}

// WriteAt writes p at off, sealing every touched sector with a fresh nonce.
// Partial sectors are read, authenticated, modified and re-sealed. A write
// past EOF leaves the gap as a hole: those sectors are never written, so the
// backing file stays sparse. It returns len(p) or an error; on error n counts
// the bytes of fully written batches.
func (f *File) WriteAt(c *Cipher, p []byte, off int64) (int, error) {
	if err := f.checkCipher(c); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("sector: write %s: negative offset %d", f.path, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off > f.maxPlain-int64(len(p)) {
		return 0, fmt.Errorf("%w: write %s: %d bytes at %d exceeds %d", ErrTooLarge, f.path, len(p), off, f.maxPlain)
	}
	end := off + int64(len(p))
	b, err := f.backingSize()
	if err != nil {
		return 0, err
	}
	size, err := f.plainSize(b)
	if err != nil {
		return 0, err
	}
	h, fk, err := f.headerKey(c, b, true)
	if err != nil {
		return 0, err
	}
	f.knowHoles(c, fk, h)
	S := int64(f.sectorSize)
	if lo, hi := (size+S-1)/S, off/S; lo < hi {
		// The write leaves a gap of holes: the hole map covers them
		// first, or they are written as zeros where it cannot be kept.
		ok, err := f.addHoles(c, fk, h, lo, hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			if err := f.fillZeros(c, size, off); err != nil {
				return 0, err
			}
			return f.WriteAt(c, p, off)
		}
	}
	bufs := getBuffers(f.sectorSize, f.batch)
	defer putBuffers(bufs, f.sectorSize)

	if last := (size - 1) / S; size > 0 && last < off/S && (size%S != 0 || h.ver() >= Version2) {
		// The old last sector becomes an inner sector: pad a short one
		// to full length, and drop the final flag (version 2).
		if err := f.resize(c, fk, h, bufs, last, size-last*S, S, size, end, false, false); err != nil {
			return 0, err
		}
		f.wroteSectors(h, last, last+1)
		size = (last + 1) * S
		if b, err = f.backingSize(); err != nil {
			return 0, err
		}
	}
	newSize := max(size, end)
	first, last := off/S, (end-1)/S
	n := 0
	for i0 := first; i0 <= last; i0 += f.batch {
		i1 := min(last+1, i0+f.batch)
		if err := f.writeChunk(c, fk, h, bufs, p, off, size, newSize, i0, i1, &b); err != nil {
			if h.ver() >= Version2 && i1*S < newSize {
				// The write stopped short of its last sector (a full file
				// system): the file now ends on a sector that was not
				// sealed as the last one.
				err = errors.Join(err, f.refinalize(c, fk, h, bufs))
			}
			return n, err
		}
		f.wroteSectors(h, i0, i1)
		n = int(min(end, i1*S) - off)
	}
	return n, nil
}

// writeChunk seals sectors [i0, i1) with their new contents and writes them
// with one pwrite. p is the whole write at off; size is the plaintext size
// before, newSize after the write; *backing is the backing file's size,
// kept up to date so that a failed pwrite can be rolled back to it.
func (f *File) writeChunk(c *Cipher, fk *fileKey, h *header, bufs *buffers, p []byte, off, size, newSize, i0, i1 int64, backing *int64) error {
	S := int64(f.sectorSize)
	end := off + int64(len(p))
	oldLen := func(i int64) int64 { return min(S, max(0, size-i*S)) }
	needOld := func(i int64) bool {
		ol := oldLen(i)
		return ol > 0 && (off > i*S || end < i*S+ol)
	}
	// Only the first and last sector of a write can be partially overwritten.
	var headOld, tailOld []byte
	if needOld(i0) {
		headOld = bufs.old[0][:oldLen(i0)+Overhead]
		if err := f.preadStored(headOld, i0); err != nil {
			return err
		}
	}
	if i1-1 != i0 && needOld(i1-1) {
		tailOld = bufs.old[1][:oldLen(i1-1)+Overhead]
		if err := f.preadStored(tailOld, i1-1); err != nil {
			return err
		}
	}
	total := (i1-1-i0)*f.stored + min(S, newSize-(i1-1)*S) + Overhead
	sealed := bufs.sealed[:total]

	if err := c.rlock(); err != nil {
		f.ref.Store(nil)
		return err
	}
	aead := fk.aead
	if aead == nil {
		c.runlock()
		f.ref.Store(nil)
		return ErrClosed
	}
	j := chunkJob{f: f, c: c, aead: aead, h: h, buf: sealed, p: p, off: off, end: end, size: size, newSize: newSize,
		i0: i0, i1: i1, headOld: headOld, tailOld: tailOld}
	// Only the first and the last sector can be partial, so each half
	// needs its own scratch plaintext at most once.
	var err error
	if mid := f.splitAt(i0, i1); mid == i1 {
		err = j.seal(i0, i1, bufs.plain, bufs.aad)
	} else {
		err = sealHalves(j, mid, bufs)
	}
	c.runlock()
	if err != nil {
		return err
	}
	start := f.storedOffset(i0)
	if start < *backing {
		// The chunk overwrites sectors in the file, up to and including
		// the one that reaches past its end.
		if err := f.reserve(start, min(start+int64(len(sealed)), f.sectorEnd(*backing)), *backing); err != nil {
			return fmt.Errorf("sector: write %s sectors %d-%d: %w", f.path, i0, i1-1, err)
		}
	}
	if n, err := f.pwrite(sealed, start); err != nil {
		err = fmt.Errorf("sector: write %s sectors %d-%d: %w", f.path, i0, i1-1, err)
		if rerr := f.rollback(i0, n, *backing); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	stop := start + int64(len(sealed))
	*backing = max(*backing, stop)
	if start <= f.dense {
		f.dense = max(f.dense, stop)
	}
	return nil
}

// A pwrite that runs out of space (a full file system, a quota) stops at
// some byte, usually inside a stored sector, and a torn sector never
// authenticates again: one failed write would make the file unreadable from
// there on. Two things prevent that. Before a write overwrites sectors that
// are already in the file, reserve allocates their bytes, so a full file
// system fails the allocation with nothing written. What a write appends
// past the old end is cut back by rollback when the write fails.

// reserve allocates backing bytes [off, end) without changing the file
// size. Bytes below f.dense are allocated already and overwriting them
// takes no space, so only [max(off, f.dense), end) is passed to fallocate,
// and most overwrites make no call at all: a fallocate per overwrite costs
// random writes a tenth of their speed on tmpfs. f.dense is moved up to the
// next hole with SEEK_HOLE from where it stands, so each byte of the file
// is scanned about once. File systems without fallocate are remembered and
// skipped; there, and on file systems that allocate again on every
// overwrite (copy on write), a failed overwrite can still tear a sector,
// which rollback reports as ErrTorn.
func (f *File) reserve(off, end, backing int64) error {
	if end <= off || end <= f.dense || f.noFallocate.Load() {
		return nil
	}
	f.rsv = reservation{off: off, end: end, backing: backing}
	if cerr := f.rc.Control(f.rsvFn); cerr != nil {
		return fmt.Errorf("fallocate %s: %w", f.path, cerr)
	}
	ferr := f.rsv.err
	switch ferr {
	case nil:
		return nil
	case unix.EOPNOTSUPP, unix.ENOSYS:
		f.noFallocate.Store(true)
		return nil
	}
	return &os.PathError{Op: "fallocate", Path: f.path, Err: ferr}
}

// reservation is one reserve call's range, the backing file's size and
// the result, for RawConn.Control.
type reservation struct {
	off, end, backing int64
	err               error
}

func (f *File) reserveFd(fd uintptr) {
	r := &f.rsv
	// At or past the end of the file there is nothing to scan (the
	// common case: an append that re-seals a short last sector). Without
	// SEEK_HOLE (an error) the mark stays where it is.
	if f.dense < r.backing {
		if h, err := unix.Seek(int(fd), max(f.dense, 0), unix.SEEK_HOLE); err == nil {
			f.dense = h
		} else {
			f.dense = max(f.dense, 0)
		}
	}
	lo := max(r.off, f.dense)
	if r.end <= lo {
		return
	}
	for {
		r.err = unix.Fallocate(int(fd), unix.FALLOC_FL_KEEP_SIZE, lo, r.end-lo)
		if r.err != unix.EINTR {
			break
		}
	}
	if r.err == nil && lo == f.dense {
		f.dense = r.end
	}
}

// sectorEnd is where the stored sector that holds the last of b backing
// bytes ends.
func (f *File) sectorEnd(b int64) int64 {
	if b <= HeaderSize {
		return HeaderSize
	}
	return f.storedOffset((b - HeaderSize + f.stored - 1) / f.stored)
}

// rollback cuts back what a pwrite that failed after n bytes appended to a
// backing file that was backing bytes long, for a write of whole stored
// sectors from sector i0 on. Sectors written whole that reach past the old
// end stay, as with a short write; anything else past the old end goes. A
// sector below the old end that the write tore (see reserve) is lost, and
// the error says which.
func (f *File) rollback(i0 int64, n int, backing int64) error {
	whole := int64(max(n, 0)) / f.stored
	if keep := f.storedOffset(i0 + whole); whole > 0 && keep >= backing {
		return f.ftruncate(keep)
	}
	var err error
	if f.storedOffset(i0)+int64(n) > backing {
		err = f.ftruncate(backing)
	}
	if torn := i0 + whole; int64(n)%f.stored != 0 && f.storedOffset(torn) < backing {
		err = errors.Join(err, fmt.Errorf("%w: %s sector %d was partly overwritten by the failed write and is lost", ErrTorn, f.path, torn))
	}
	return err
}

// seal seals sectors [j0, j1) of a write chunk into buf: the new bytes of
// p, merged with the authenticated old content of a partial first or last
// sector.
func (j *chunkJob) seal(j0, j1 int64, plain, aad []byte) error {
	f := j.f
	S := int64(f.sectorSize)
	for i := j0; i < j1; i++ {
		secStart := i * S
		newLen := min(S, j.newSize-secStart)
		lo, hi := max(j.off, secStart), min(j.end, secStart+newLen)
		out := j.buf[(i-j.i0)*f.stored:]
		out = out[:newLen+Overhead]
		pt := j.p[lo-j.off : hi-j.off]
		if lo != secStart || hi != secStart+newLen {
			full := plain[:newLen]
			var old []byte
			switch i {
			case j.i0:
				old = j.headOld
			case j.i1 - 1:
				old = j.tailOld
			}
			keep := 0
			if old != nil {
				keep = len(old) - Overhead
				final := j.h.isFinal(i, j.size, f.sectorSize)
				if err := openSector(j.aead, full[:keep], old, j.h.aad(aad, i, final), final); err != nil {
					return &AuthError{Path: f.path, Index: i, Err: err}
				}
				if err := f.checkHole(j.aead, j.h, i, old); err != nil {
					return err
				}
			}
			clear(full[keep:])
			copy(full[lo-secStart:], pt)
			pt = full
		}
		if err := sealOne(j.aead, j.c.nonces, out, pt, j.h.aad(aad, i, j.h.isFinal(i, j.newSize, f.sectorSize))); err != nil {
			return err
		}
	}
	return nil
}

// sealHalves seals the two halves of a write chunk on two goroutines.
func sealHalves(j chunkJob, mid int64, bufs *buffers) error {
	var err2 error
	var wg sync.WaitGroup
	wg.Go(func() { err2 = j.seal(mid, j.i1, bufs.plain2, bufs.aad2) })
	err := j.seal(j.i0, mid, bufs.plain, bufs.aad)
	wg.Wait()
	if err != nil {
		return err
	}
	return err2
}

// Truncate sets the plaintext size. Growing leaves the new range as a hole
// (the backing file is extended with ftruncate, nothing is written) after
// re-sealing a short last sector to its new length; shrinking re-seals the
// new short last sector. Truncate(0) empties the backing file, so the next
// write starts a new header with a new file ID. A damaged tail (see Size) can
// be cut off by truncating to at most the size Size would report without it.
func (f *File) Truncate(c *Cipher, size int64) error {
	if err := f.checkCipher(c); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("sector: truncate %s: negative size %d", f.path, size)
	}
	if size > f.maxPlain {
		return fmt.Errorf("%w: truncate %s to %d exceeds %d", ErrTooLarge, f.path, size, f.maxPlain)
	}
	b, err := f.backingSize()
	if err != nil {
		return err
	}
	old, sizeErr := f.plainSize(b)
	v := c.fileVersion()
	if size == 0 {
		if c.v2 {
			// The file ID outlives the content: metadata is bound to it.
			if h, herr := f.header(b, true, v); herr == nil {
				if err := f.ftruncate(HeaderSize); err != nil {
					return err
				}
				f.cutHoles(h, 0)
				return nil
			}
		}
		// Also the repair for a damaged header or tail.
		if err := f.ftruncate(0); err != nil {
			return err
		}
		f.hdr.Store(nil)
		f.ref.Store(nil)
		if c.v2 {
			_, err := f.header(0, true, v)
			return err
		}
		return nil
	}
	if sizeErr != nil {
		if !errors.Is(sizeErr, ErrAuth) || size > old {
			return sizeErr
		}
	} else if size == old {
		return nil
	}
	h, err := f.header(b, true, v)
	if err != nil {
		return err
	}
	if b == 0 && !c.v2 {
		return f.ftruncate(BackingSize(size, f.sectorSize))
	}
	fk, err := f.fileKey(c, h)
	if err != nil {
		return err
	}
	f.knowHoles(c, fk, h)
	S := int64(f.sectorSize)
	if size > old {
		// The new sectors are holes, but for the last one, which is
		// sealed below: the hole map covers them first, or they are
		// written as zeros where it cannot be kept.
		ok, err := f.addHoles(c, fk, h, (old+S-1)/S, (size-1)/S)
		if err != nil {
			return err
		}
		if !ok {
			return f.fillZeros(c, old, size)
		}
	}
	bufs := getBuffers(f.sectorSize, f.batch)
	defer putBuffers(bufs, f.sectorSize)
	if size > old {
		if old > 0 {
			// The old last sector gets its new length (zero padding)
			// and, in version 2, loses its final flag unless it stays last.
			idx := (old - 1) / S
			oldLen := old - idx*S
			newLen := min(S, size-idx*S)
			if oldLen != newLen || h.isFinal(idx, old, f.sectorSize) != h.isFinal(idx, size, f.sectorSize) {
				if err := f.resize(c, fk, h, bufs, idx, oldLen, newLen, old, size, false, false); err != nil {
					return err
				}
			}
		}
		if err := f.ftruncate(BackingSize(size, f.sectorSize)); err != nil {
			return err
		}
		return f.sealFinalHole(c, fk, h, bufs, size)
	}
	if size%S == 0 && h.ver() < Version2 {
		return f.ftruncate(BackingSize(size, f.sectorSize))
	}
	flagOld := old
	if sizeErr != nil {
		// A damaged tail followed the sectors that remain: none of them
		// was the last.
		flagOld = math.MaxInt64
	}
	idx := (size - 1) / S
	if err := f.resize(c, fk, h, bufs, idx, min(S, old-idx*S), size-idx*S, flagOld, size, true, false); err != nil {
		return err
	}
	f.cutHoles(h, idx+1)
	return nil
}

// refinalize re-seals the last sector of a version 2 file as final after
// a write failed midway, when the file may end on an inner sector.
func (f *File) refinalize(c *Cipher, fk *fileKey, h *header, bufs *buffers) error {
	b, err := f.backingSize()
	if err != nil {
		return err
	}
	size, err := f.plainSize(b)
	if err != nil || size == 0 {
		return err
	}
	idx, n, st, err := f.lastStored(bufs, size)
	if err != nil {
		return err
	}
	if err := c.rlock(); err != nil {
		return err
	}
	aead := fk.aead
	var ok bool
	if aead != nil {
		ok = openSector(aead, bufs.plain[:n], st, h.aad(bufs.aad, idx, true), true) == nil
	}
	c.runlock()
	if ok {
		return nil
	}
	return f.resize(c, fk, h, bufs, idx, n, n, math.MaxInt64, size, false, false)
}

// sealFinalHole seals the last sector of a file of size bytes as zeros
// when it is a hole and the format flags the last sector (version 2):
// nothing would mark the file's end otherwise.
func (f *File) sealFinalHole(c *Cipher, fk *fileKey, h *header, bufs *buffers, size int64) error {
	if h.ver() < Version2 || size == 0 {
		return nil
	}
	idx, n, old, err := f.lastStored(bufs, size)
	if err != nil || !isZero(old) {
		return err
	}
	// The hole was made just now by extending the file: it was never last.
	return f.resize(c, fk, h, bufs, idx, n, n, math.MaxInt64, size, false, true)
}

// lastStored reads the last stored sector of a file of size > 0 bytes
// into bufs.old[0]: its index, plaintext length and stored bytes.
func (f *File) lastStored(bufs *buffers, size int64) (idx, n int64, st []byte, err error) {
	S := int64(f.sectorSize)
	idx = (size - 1) / S
	n = size - idx*S
	st = bufs.old[0][:n+Overhead]
	err = f.preadStored(st, idx)
	return idx, n, st, err
}

// resize re-seals sector idx from oldLen to newLen plaintext bytes (zero
// padding when growing), for a file whose size goes from oldSize to
// newSize: the sector's final flag (version 2) follows the size. An inner
// hole stays a hole: the caller's ftruncate or later writes give it the
// right stored length as zero bytes; a hole that becomes the last sector
// of a version 2 file is sealed as zeros. With shrink set, the backing
// file is cut to end right after the new sector first. made says that the
// caller just made sector idx a hole (Version3 checks any other hole
// against the hole map).
func (f *File) resize(c *Cipher, fk *fileKey, h *header, bufs *buffers, idx, oldLen, newLen, oldSize, newSize int64, shrink, made bool) error {
	old := bufs.old[0][:oldLen+Overhead]
	if err := f.preadStored(old, idx); err != nil {
		return err
	}
	newEnd := f.storedOffset(idx) + newLen + Overhead
	oldFinal, newFinal := h.isFinal(idx, oldSize, f.sectorSize), h.isFinal(idx, newSize, f.sectorSize)
	hole := isZero(old)
	if hole && oldFinal {
		return &AuthError{Path: f.path, Index: idx, Err: ErrNotFinal}
	}
	if hole && !made && h.ver() >= Version3 {
		// Sealing or keeping a zeroed sector would make it look valid.
		if err := c.rlock(); err != nil {
			return err
		}
		var herr error
		if fk.aead == nil {
			herr = ErrClosed
		} else if herr = f.holeErr(fk.aead, h, idx); herr != nil {
			herr = &AuthError{Path: f.path, Index: idx, Err: herr}
		}
		c.runlock()
		if herr != nil {
			return herr
		}
	}
	if hole && !newFinal {
		if shrink {
			return f.ftruncate(newEnd)
		}
		return nil
	}
	out := bufs.sealed[:newLen+Overhead]
	if err := c.rlock(); err != nil {
		f.ref.Store(nil)
		return err
	}
	aead := fk.aead
	if aead == nil {
		c.runlock()
		f.ref.Store(nil)
		return ErrClosed
	}
	pt := bufs.plain[:max(oldLen, newLen)]
	if err := openOne(aead, pt[:oldLen], old, h.aad(bufs.aad, idx, oldFinal)); err != nil {
		c.runlock()
		return &AuthError{Path: f.path, Index: idx, Err: err}
	}
	clear(pt[oldLen:])
	err := sealOne(aead, c.nonces, out, pt[:newLen], h.aad(bufs.aad, idx, newFinal))
	c.runlock()
	if err != nil {
		return err
	}
	if shrink {
		if err := f.ftruncate(newEnd); err != nil {
			return err
		}
	}
	off := f.storedOffset(idx)
	if err := f.reserve(off, off+int64(len(out)), off+int64(len(old))); err != nil {
		return fmt.Errorf("sector: write %s sector %d: %w", f.path, idx, err)
	}
	if n, err := f.pwrite(out, off); err != nil {
		err = fmt.Errorf("sector: write %s sector %d: %w", f.path, idx, err)
		if n > 0 {
			// idx is the last sector: with its old stored bytes back, the
			// file is what it was.
			if _, rerr := f.pwrite(old, off); rerr != nil {
				return errors.Join(err, fmt.Errorf("%w: %s sector %d: %w", ErrTorn, f.path, idx, rerr))
			}
			if terr := f.ftruncate(off + int64(len(old))); terr != nil {
				return errors.Join(err, terr)
			}
		}
		return err
	}
	return nil
}

func (f *File) storedOffset(i int64) int64 { return HeaderSize + i*f.stored }

// pwrite writes all of b at off and reports how many bytes reached the file
// also when it fails. os.File.WriteAt cannot be used where that count
// matters: it reports 0 bytes when a short write (a file system filling up)
// is followed by the error in the same call, and rollback needs to know
// where the write stopped. Writers run alone, so the File's one pwriter
// serves every call without an allocation.
func (f *File) pwrite(b []byte, off int64) (int, error) {
	w := &f.pw
	*w = pwriter{b: b, off: off}
	if cerr := f.rc.Write(f.pwFn); cerr != nil && w.err == nil {
		w.err = cerr
	}
	f.size.Store(-1)
	n, err := w.n, w.err
	*w = pwriter{}
	if err != nil {
		return n, &os.PathError{Op: "write", Path: f.path, Err: err}
	}
	return n, nil
}

// pwriter is one pwrite call's arguments and results, for RawConn.Write.
type pwriter struct {
	b   []byte
	off int64
	n   int
	err error
}

func (w *pwriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		m, err := unix.Pwrite(int(fd), w.b[w.n:], w.off+int64(w.n))
		if err == unix.EINTR {
			continue
		}
		w.n += max(m, 0)
		if err != nil {
			w.err = err
			break
		}
		if m == 0 {
			w.err = io.ErrShortWrite
			break
		}
	}
	return true
}

func (f *File) preadStored(buf []byte, i int64) error {
	if _, err := f.f.ReadAt(buf, f.storedOffset(i)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("sector: read %s sector %d: %w", f.path, i, err)
	}
	return nil
}

func (f *File) ftruncate(n int64) error {
	// Cutting frees what lay beyond n; growing adds a hole.
	f.dense = min(f.dense, n)
	err := f.f.Truncate(n)
	f.size.Store(-1)
	if err != nil {
		return fmt.Errorf("sector: truncate %s backing to %d: %w", f.path, n, err)
	}
	return nil
}

func (f *File) checkCipher(c *Cipher) error {
	if c == nil {
		return fmt.Errorf("sector: %s: nil cipher", f.path)
	}
	if c.sectorSize != f.sectorSize {
		return fmt.Errorf("%w: %s: file uses %d-byte sectors, cipher %d", ErrSectorSize, f.path, f.sectorSize, c.sectorSize)
	}
	if c.Closed() {
		f.ref.Store(nil)
		return ErrClosed
	}
	return nil
}

func (f *File) backingSize() (int64, error) {
	sole := f.soleWriter.Load()
	if sole {
		if b := f.size.Load(); b >= 0 {
			return b, nil
		}
	}
	fi, err := f.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("sector: stat %s: %w", f.path, err)
	}
	if sole {
		f.size.Store(fi.Size())
	}
	return fi.Size(), nil
}

// plainSize is PlainSize plus validation: a partial header is ErrHeader, a
// trailing stored sector of Overhead bytes or less is an *AuthError
// (ErrTruncated); in that case the size without the damaged tail is returned
// too.
func (f *File) plainSize(b int64) (int64, error) {
	if b > 0 && b < HeaderSize {
		return 0, fmt.Errorf("%w: %s: backing file of %d bytes is shorter than the header", ErrHeader, f.path, b)
	}
	p := PlainSize(b, f.sectorSize)
	if b >= HeaderSize {
		if rem := (b - HeaderSize) % f.stored; rem > 0 && rem <= Overhead {
			idx := (b - HeaderSize) / f.stored
			return p, &AuthError{Path: f.path, Index: idx, Err: fmt.Errorf("%w: last stored sector has %d bytes, need more than %d", ErrTruncated, rem, Overhead)}
		}
	}
	return p, nil
}

// header returns the file header, reading it from the backing file once. For
// an empty backing file it creates and writes a new header with a random file
// ID when create is set.
//
// v is the version a new header gets.
func (f *File) header(backing int64, create bool, v uint16) (*header, error) {
	if backing > 0 {
		if h := f.hdr.Load(); h != nil {
			return h, nil
		}
	}
	f.hmu.Lock()
	defer f.hmu.Unlock()
	if backing == 0 {
		if !create {
			return nil, fmt.Errorf("%w: %s: empty backing file has no header", ErrHeader, f.path)
		}
		h := &header{version: v}
		for h.id == ([FileIDSize]byte{}) {
			if _, err := rand.Read(h.id[:]); err != nil {
				return nil, fmt.Errorf("sector: new file ID for %s: %w", f.path, err)
			}
		}
		_, err := f.f.WriteAt(h.marshal(), 0)
		f.size.Store(-1)
		if err != nil {
			err = fmt.Errorf("sector: write header %s: %w", f.path, err)
			// A partial header would make the file unreadable; the file
			// was empty, so it goes back to empty.
			if terr := f.ftruncate(0); terr != nil {
				return nil, errors.Join(err, terr)
			}
			return nil, err
		}
		f.useNewHeader(h)
		return h, nil
	}
	if h := f.hdr.Load(); h != nil {
		return h, nil
	}
	var raw [HeaderSize]byte
	if _, err := f.f.ReadAt(raw[:], 0); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrHeader, f.path, err)
	}
	h, err := parseHeader(raw[:], f.path)
	if err != nil {
		return nil, err
	}
	f.hdr.Store(h)
	return h, nil
}

// FileID returns the file ID from the header, reading it if needed. An empty
// backing file has none yet (ErrHeader).
func (f *File) FileID() ([]byte, error) {
	b, err := f.backingSize()
	if err != nil {
		return nil, err
	}
	h, err := f.header(b, false, Version)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), h.id[:]...), nil
}

// fileKey returns the per-file key for h under c, from the File's cache when
// it was derived by the same Cipher for the same file ID.
// headerKey returns the file's header (created on demand when create is
// set and the backing file is empty) and its per-file key under c.
func (f *File) headerKey(c *Cipher, backing int64, create bool) (*header, *fileKey, error) {
	h, err := f.header(backing, create, c.fileVersion())
	if err != nil {
		return nil, nil, err
	}
	fk, err := f.fileKey(c, h)
	if err != nil {
		return nil, nil, err
	}
	return h, fk, nil
}

func (f *File) fileKey(c *Cipher, h *header) (*fileKey, error) {
	if h.ver() != c.fileVersion() {
		return nil, fmt.Errorf("%w: %s: a sector file of version %d in a volume of sector-file version %d", ErrHeader, f.path, h.ver(), c.fileVersion())
	}
	if r := f.ref.Load(); r != nil && r.c == c && r.id == h.id {
		return r.fk, nil
	}
	fk, err := c.fileKeyFor(&h.id)
	if err != nil {
		f.ref.Store(nil)
		return nil, err
	}
	f.ref.Store(&keyRef{c: c, id: h.id, fk: fk})
	return fk, nil
}

// buffers is the per-call scratch space, pooled per sector size so a large
// write allocates nothing per sector.
type buffers struct {
	sealed []byte    // batch stored sectors
	plain  []byte    // one plaintext sector for partial sectors
	old    [2][]byte // stored head and tail sectors for read-modify-write
	aad    []byte
	// The second goroutine's plain and aad when a chunk is split.
	plain2, aad2 []byte
}

var pools [sizeShiftMax + 1]sync.Pool

const sizeShiftMax = 16 // log2(MaxSectorSize)

func getBuffers(sectorSize int, batch int64) *buffers {
	if b, ok := pools[sizeShift(sectorSize)].Get().(*buffers); ok {
		return b
	}
	stored := sectorSize + Overhead
	return &buffers{
		sealed: make([]byte, int(batch)*stored),
		plain:  make([]byte, sectorSize),
		old:    [2][]byte{make([]byte, stored), make([]byte, stored)},
		aad:    make([]byte, aadSizeMax),
		plain2: make([]byte, sectorSize),
		aad2:   make([]byte, aadSizeMax),
	}
}

func putBuffers(b *buffers, sectorSize int) {
	// Plaintext of partial sectors must not linger in pooled memory.
	clear(b.plain)
	clear(b.plain2)
	pools[sizeShift(sectorSize)].Put(b)
}
