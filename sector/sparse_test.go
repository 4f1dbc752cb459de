package sector

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

func blocks(t *testing.T, f *File) int64 {
	t.Helper()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.OS().Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

// TestSparse checks that extending by truncate or by writing past EOF does
// not allocate the gap on the backing file system.
func TestSparse(t *testing.T) {
	const gib = 1 << 30
	c := newTestCipher(t, fixedKey(3), DefaultSectorSize)
	f, _ := tempBacking(t, DefaultSectorSize)
	mustWrite(t, f, c, []byte("start"), 0)
	before := blocks(t, f)

	if err := f.Truncate(c, gib+100); err != nil {
		t.Fatal(err)
	}
	afterTrunc := blocks(t, f)
	// The re-sealed first sector may take a block or two (512-byte units).
	if afterTrunc-before > 64 {
		t.Fatalf("truncate up to 1 GiB allocated %d blocks (before %d)", afterTrunc-before, before)
	}
	mustWrite(t, f, c, []byte("end"), 2*gib)
	afterWrite := blocks(t, f)
	if afterWrite-afterTrunc > 64 {
		t.Fatalf("write 1 GiB past EOF allocated %d blocks", afterWrite-afterTrunc)
	}
	t.Logf("st_blocks (512 B): %d after first write, %d after truncate to 1 GiB, %d after write at 2 GiB", before, afterTrunc, afterWrite)
	// Holes read as zeros, including across hole/data boundaries.
	p := make([]byte, 3*DefaultSectorSize)
	if n, err := f.ReadAt(c, p, gib-DefaultSectorSize); err != nil || n != len(p) || !isZero(p) {
		t.Fatalf("hole read: %d, %v, zero=%v", n, err, isZero(p))
	}
	p = make([]byte, 10)
	if _, err := f.ReadAt(c, p, 2*gib-7); err != nil || !bytes.Equal(p, []byte("\x00\x00\x00\x00\x00\x00\x00end")) {
		t.Fatalf("read across hole end: %q, %v", p, err)
	}
	if _, err := f.ReadAt(c, p[:5], 0); err != nil || string(p[:5]) != "start" {
		t.Fatalf("start: %q %v", p[:5], err)
	}
	if s, _ := f.Size(); s != 2*gib+3 {
		t.Fatalf("size %d", s)
	}
}

// TestLargeFile exercises offsets beyond 4 GiB (sector indexes > 2^20, backing
// offsets > 2^32).
func TestLargeFile(t *testing.T) {
	const off = 5<<30 + 12345
	for _, ss := range []int{512, 65536} {
		c := newTestCipher(t, fixedKey(4), ss)
		f, _ := tempBacking(t, ss)
		data := make([]byte, 3*ss+17)
		for i := range data {
			data[i] = byte(i * 13)
		}
		mustWrite(t, f, c, data, off)
		got := make([]byte, len(data)+20)
		n, err := f.ReadAt(c, got, off-10)
		if n != len(data)+10 || !isZero(got[:10]) || !bytes.Equal(got[10:n], data) {
			t.Fatalf("ss %d: read back %d, %v", ss, n, err)
		}
		if err := f.Truncate(c, off+int64(ss)+1); err != nil {
			t.Fatal(err)
		}
		n, err = f.ReadAt(c, got, off)
		if n != ss+1 || !bytes.Equal(got[:n], data[:n]) {
			t.Fatalf("ss %d: after truncate: %d, %v", ss, n, err)
		}
	}
}

// TestConcurrent runs readers, a writer and key swaps at once; the test's
// RWMutex plays the caller's per-file lock. Run under -race.
func TestConcurrent(t *testing.T) {
	const ss = 512
	key := fixedKey(5)
	var (
		mu     sync.RWMutex
		cipher = newTestCipher(t, key, ss)
		model  = make([]byte, 40*ss)
	)
	f, _ := tempBacking(t, ss)
	mustWrite(t, f, cipher, model, 0)
	var cmu sync.Mutex // guards cipher (the key gate's role)
	current := func() *Cipher { cmu.Lock(); defer cmu.Unlock(); return cipher }

	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			p := make([]byte, 3*ss)
			for time.Now().Before(deadline) {
				off := rng.Int64N(int64(len(model)) - int64(len(p)))
				mu.RLock()
				n, err := f.ReadAt(current(), p, off)
				if errors.Is(err, ErrClosed) {
					mu.RUnlock()
					continue // swapped under us; retry with the new one
				}
				if err != nil || n != len(p) || !bytes.Equal(p, model[off:off+int64(n)]) {
					mu.RUnlock()
					errs <- errors.Join(errors.New("concurrent read mismatch"), err)
					return
				}
				mu.RUnlock()
			}
		}(uint64(r))
	}
	wg.Add(2)
	go func() { // writer
		defer wg.Done()
		rng := rand.New(rand.NewPCG(9, 9))
		for time.Now().Before(deadline) {
			off := rng.Int64N(int64(len(model)) - 2*ss)
			p := make([]byte, rng.IntN(2*ss)+1)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			mu.Lock()
			_, err := f.WriteAt(current(), p, off)
			if err == nil {
				copy(model[off:], p)
			}
			mu.Unlock()
			if err != nil && !errors.Is(err, ErrClosed) {
				errs <- err
				return
			}
		}
	}()
	go func() { // key gate: swap ciphers, closing the old one while I/O runs
		defer wg.Done()
		for time.Now().Before(deadline) {
			nc, err := NewCipher(key, ss)
			if err != nil {
				errs <- err
				return
			}
			cmu.Lock()
			old := cipher
			cipher = nc
			cmu.Unlock()
			old.Close()
			runtime.Gosched()
		}
		cmu.Lock()
		t.Cleanup(cipher.Close)
		cmu.Unlock()
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkContent(t, f, current(), model)
}

// TestRegistryForgetsDeadFiles checks the Cipher does not pin per-file keys
// of files nobody uses any more.
func TestRegistryForgetsDeadFiles(t *testing.T) {
	c := newTestCipher(t, fixedKey(6), 512)
	for i := 0; i < 50; i++ {
		id := make([]byte, FileIDSize)
		id[0], id[1] = byte(i), 1
		if _, err := c.SealSector(nil, id, 0, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		c.regMu.Lock()
		n := len(c.reg)
		c.regMu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry still holds %d entries", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSizes(t *testing.T) {
	for _, ss := range []int{512, 4096, 65536} {
		for _, n := range []int64{0, 1, int64(ss) - 1, int64(ss), int64(ss) + 1, 10*int64(ss) + 7, MaxPlainSize(ss)} {
			b := BackingSize(n, ss)
			if b < 0 || PlainSize(b, ss) != n {
				t.Fatalf("ss %d: BackingSize(%d) = %d, PlainSize back = %d", ss, n, b, PlainSize(b, ss))
			}
		}
		if BackingSize(MaxPlainSize(ss)+1, ss) != -1 || BackingSize(-1, ss) != -1 {
			t.Fatal("out-of-range sizes accepted")
		}
		if PlainSize(HeaderSize-1, ss) != 0 || PlainSize(HeaderSize+Overhead, ss) != 0 {
			t.Fatal("short backing sizes")
		}
	}
	for _, bad := range []int{0, 256, 1000, 131072, -4096} {
		if ValidSectorSize(bad) || PlainSize(100, bad) != -1 || BackingSize(100, bad) != -1 {
			t.Fatalf("sector size %d accepted", bad)
		}
		if _, err := NewCipher(fixedKey(1), bad); !errors.Is(err, ErrSectorSize) {
			t.Fatalf("NewCipher(%d): %v", bad, err)
		}
	}
	if _, err := NewCipher(testKey(make([]byte, 16)), 4096); err == nil {
		t.Fatal("16-byte key accepted")
	}
}
