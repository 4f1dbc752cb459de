package sector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// modelOpsPerSize is the number of random operations per sector size, split
// evenly between the fixed and the random seed.
const modelOpsPerSize = 20000

// TestModel runs random writes, reads, truncates, reopens and key swaps on a
// sector file and checks every result against a plain byte slice. Set
// ENCVOL_SECTOR_SEED to replay the random-seed run.
func TestModel(t *testing.T) {
	randomSeed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ENCVOL_SECTOR_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ENCVOL_SECTOR_SEED: %v", err)
		}
		randomSeed = v
	}
	seeds := []uint64{0x5eed, randomSeed}
	for _, ver := range []int{Version, Version2, Version3} {
		for _, ss := range []int{512, 4096, 65536} {
			for _, seed := range seeds {
				name := fmt.Sprintf("v=%d/ss=%d/seed=%d", ver, ss, seed)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					t.Logf("seed %d (replay: ENCVOL_SECTOR_SEED=%d go test -run 'TestModel/v=%d/ss=%d/' ./sector/)", seed, seed, ver, ss)
					runModel(t, ss, seed, modelOpsPerSize/len(seeds), ver, false)
				})
			}
		}
	}
	// The same with a File that remembers its backing size (SoleWriter).
	t.Run("sole", func(t *testing.T) {
		t.Parallel()
		t.Logf("seed %d (replay: ENCVOL_SECTOR_SEED=%d go test -run 'TestModel/sole' ./sector/)", randomSeed, randomSeed)
		runModel(t, 4096, randomSeed, modelOpsPerSize/len(seeds), Version3, true)
	})
}

type modelRun struct {
	t     *testing.T
	rng   *rand.Rand
	ss    int64
	maxSz int64
	key   testKey
	c     *Cipher
	f     *File
	path  string
	model []byte
	data  []byte // random bytes that writes take slices of
	op    int
	ver   int  // the sector-file version (Version, Version2, Version3)
	sole  bool // Files remember their size (SoleWriter)
	// imprecise: the File was reopened without SettleHoles, so its hole
	// map may still hold sectors written before.
	imprecise bool
}

func runModel(t *testing.T, sectorSize int, seed uint64, ops int, ver int, sole bool) {
	m := &modelRun{
		ver:  ver,
		sole: sole,
		t:    t,
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ss:   int64(sectorSize),
		key:  fixedKey(byte(seed)),
		path: filepath.Join(t.TempDir(), "model"),
	}
	// Keep files a few dozen sectors long (less for big sectors) so that
	// operations keep crossing boundaries and the whole file is compared often.
	m.maxSz = m.ss * 24
	if sectorSize == MaxSectorSize {
		m.maxSz = m.ss * 8
	}
	m.data = make([]byte, 4*m.ss)
	var cs [32]byte
	binary.LittleEndian.PutUint64(cs[:], seed)
	rand.NewChaCha8(cs).Read(m.data)
	m.c = newTestCipher(t, m.key, sectorSize)
	m.useVersion(m.c)
	m.f = openBacking(t, m.path, sectorSize)
	if sole {
		m.f.SoleWriter()
	}
	counts := map[string]int{}
	for m.op = 0; m.op < ops; m.op++ {
		r := m.rng.IntN(100)
		switch {
		case r < 40:
			counts["write"]++
			m.write()
		case r < 70:
			counts["read"]++
			m.read()
		case r < 85:
			counts["truncate"]++
			m.truncate()
		case r < 86:
			counts["settle"]++
			m.settle()
		case r < 88:
			counts["reopen"]++
			m.reopen()
		case r < 89:
			counts["rekey"]++
			m.rekey()
		default:
			counts["size"]++
			m.checkSize()
		}
		if m.op%500 == 0 {
			m.checkAll()
		}
	}
	m.checkAll()
	t.Logf("ops: %v, final size %d", counts, len(m.model))
}

func (m *modelRun) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("op %d (size %d): %s", m.op, len(m.model), fmt.Sprintf(format, args...))
}

// offset picks an offset in [0, limit], biased towards sector boundaries.
func (m *modelRun) offset(limit int64) int64 {
	if limit <= 0 {
		return 0
	}
	if m.rng.IntN(3) == 0 {
		b := m.rng.Int64N(limit/m.ss+1) * m.ss
		b += m.rng.Int64N(5) - 2
		return min(max(b, 0), limit)
	}
	return m.rng.Int64N(limit + 1)
}

func (m *modelRun) length() int64 {
	switch m.rng.IntN(4) {
	case 0:
		return m.rng.Int64N(16) + 1
	case 1:
		return m.ss + m.rng.Int64N(5) - 2
	case 2:
		return m.rng.Int64N(m.ss) + 1
	default:
		return m.rng.Int64N(3*m.ss) + 1
	}
}

func (m *modelRun) write() {
	size := int64(len(m.model))
	off := m.offset(min(size+2*m.ss, m.maxSz-1))
	n := min(m.length(), m.maxSz-off)
	start := m.rng.Int64N(int64(len(m.data)) - n + 1)
	p := m.data[start : start+n]
	got, err := m.f.WriteAt(m.c, p, off)
	if err != nil || got != len(p) {
		m.fail("WriteAt(%d at %d) = %d, %v", n, off, got, err)
	}
	if end := off + n; end > size {
		m.model = append(m.model, make([]byte, end-size)...)
	}
	copy(m.model[off:], p)
}

func (m *modelRun) read() {
	size := int64(len(m.model))
	off := m.offset(size + m.ss)
	n := m.length()
	p := make([]byte, n)
	got, err := m.f.ReadAt(m.c, p, off)
	var want []byte
	if off < size {
		want = m.model[off:min(size, off+n)]
	}
	if got != len(want) {
		m.fail("ReadAt(%d at %d) = %d, %v; want %d bytes", n, off, got, err, len(want))
	}
	if int64(len(want)) < n {
		if err != io.EOF {
			m.fail("ReadAt(%d at %d) short read with err %v, want io.EOF", n, off, err)
		}
	} else if err != nil {
		m.fail("ReadAt(%d at %d): %v", n, off, err)
	}
	if !bytes.Equal(p[:got], want) {
		m.fail("ReadAt(%d at %d) content differs at %d", n, off, firstDiff(p[:got], want))
	}
}

func (m *modelRun) truncate() {
	size := int64(len(m.model))
	var n int64
	switch m.rng.IntN(4) {
	case 0:
		n = m.offset(size) // shrink
	case 1:
		n = 0
		if m.rng.IntN(4) != 0 {
			n = m.offset(m.maxSz)
		}
	default:
		n = m.offset(m.maxSz)
	}
	if err := m.f.Truncate(m.c, n); err != nil {
		m.fail("Truncate(%d): %v", n, err)
	}
	if n == 0 {
		m.imprecise = false
	}
	if n <= size {
		m.model = m.model[:n]
	} else {
		m.model = append(m.model, make([]byte, n-size)...)
	}
	m.checkSize()
}

func (m *modelRun) reopen() {
	if m.rng.IntN(2) == 0 {
		// As the mount does before it closes a backing file.
		m.settle()
	} else {
		// As after a crash: the next File does not know which sectors
		// of its map were written, until the file is emptied.
		m.imprecise = true
	}
	if err := m.f.OS().Close(); err != nil {
		m.fail("close: %v", err)
	}
	osf, err := os.OpenFile(m.path, os.O_RDWR, 0)
	if err != nil {
		m.fail("reopen: %v", err)
	}
	m.t.Cleanup(func() { osf.Close() })
	if m.f, err = NewFile(osf, int(m.ss)); err != nil {
		m.fail("NewFile: %v", err)
	}
	if m.sole {
		m.f.SoleWriter()
	}
}

// rekey swaps in a new Cipher over the same key and closes the old one, as
// the key gate does; the old one must then refuse to work.
func (m *modelRun) rekey() {
	old := m.c
	c, err := NewCipher(m.key, int(m.ss))
	if err != nil {
		m.fail("NewCipher: %v", err)
	}
	m.t.Cleanup(c.Close)
	m.useVersion(c)
	old.Close()
	if _, err := m.f.ReadAt(old, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		m.fail("ReadAt with closed cipher: %v, want ErrClosed", err)
	}
	m.c = c
}

// settle shrinks the hole map, which must then hold exactly the sectors
// stored as zeros: a sector
// written since it was a hole is out of it (unless the File was reopened
// without settling since), a hole is never out of it.
func (m *modelRun) settle() {
	if err := m.f.SettleHoles(m.c); err != nil {
		m.fail("SettleHoles: %v", err)
	}
	if m.f.HolesUnsettled() {
		m.fail("HolesUnsettled after SettleHoles")
	}
	if m.ver < Version3 {
		return
	}
	holes, err := m.f.Holes(m.c)
	if err != nil {
		m.fail("Holes: %v", err)
	}
	if bad := mapMismatch(m.t, m.path, m.ss, holes, m.imprecise); bad != "" {
		m.fail("after SettleHoles: %s", bad)
	}
}

func (m *modelRun) useVersion(c *Cipher) {
	switch m.ver {
	case Version2:
		c.UseVersion2()
	case Version3:
		c.UseVersion3()
	}
}

func (m *modelRun) checkSize() {
	got, err := m.f.Size()
	if err != nil || got != int64(len(m.model)) {
		m.fail("Size() = %d, %v; want %d", got, err, len(m.model))
	}
	fi, err := m.f.OS().Stat()
	if err != nil {
		m.fail("stat: %v", err)
	}
	want := BackingSize(int64(len(m.model)), int(m.ss))
	if m.ver >= Version2 && want == 0 && fi.Size() == HeaderSize {
		want = HeaderSize // a version 2 file keeps its header when emptied
	}
	if fi.Size() != want {
		m.fail("backing size %d, want %d", fi.Size(), want)
	}
}

func (m *modelRun) checkAll() {
	m.checkSize()
	got, err := readAll(m.f, m.c)
	if err != nil {
		m.fail("read all: %v", err)
	}
	if !bytes.Equal(got, m.model) {
		m.fail("content differs at %d", firstDiff(got, m.model))
	}
	var bad []int64
	if _, err := m.f.CheckSectors(m.c, 0, math.MaxInt64, func(e *AuthError) { bad = append(bad, e.Index) }); err != nil || len(bad) > 0 {
		m.fail("check: %v, bad sectors %v", err, bad)
	}
}
