package sector

import (
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The *4K benchmarks compare one 4 KiB sector through this package (nonce
// generation, per-file key lookup, key-gate lock, AAD) with bare
// crypto/cipher AES-256-GCM using the same 16-byte nonce size. Run them in
// one invocation to compare: go test -run=^$ -bench=4K ./sector/

var benchID = []byte("0123456789abcdef")

func benchPlain() []byte {
	p := make([]byte, DefaultSectorSize)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

func BenchmarkSeal4K(b *testing.B) {
	c := newTestCipher(b, fixedKey(8), DefaultSectorSize)
	pt := benchPlain()
	out := make([]byte, 0, DefaultSectorSize+Overhead)
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = c.SealSector(out[:0], benchID, 7, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen4K(b *testing.B) {
	c := newTestCipher(b, fixedKey(8), DefaultSectorSize)
	sealed, err := c.SealSector(nil, benchID, 7, benchPlain())
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, DefaultSectorSize)
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		if out, err = c.OpenSector(out[:0], benchID, 7, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func rawGCM(b *testing.B) cipher.AEAD {
	blk, err := aes.NewCipher(fixedKey(8))
	if err != nil {
		b.Fatal(err)
	}
	g, err := cipher.NewGCMWithNonceSize(blk, NonceSize)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

func BenchmarkRawGCMSeal4K(b *testing.B) {
	g := rawGCM(b)
	pt := benchPlain()
	nonce := make([]byte, NonceSize)
	aad := make([]byte, aadSize)
	out := make([]byte, 0, DefaultSectorSize+TagSize)
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		out = g.Seal(out[:0], nonce, pt, aad)
	}
}

func BenchmarkRawGCMOpen4K(b *testing.B) {
	g := rawGCM(b)
	nonce := make([]byte, NonceSize)
	aad := make([]byte, aadSize)
	sealed := g.Seal(nil, nonce, benchPlain(), aad)
	out := make([]byte, 0, DefaultSectorSize)
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = g.Open(out[:0], nonce, sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawGCMOpen4KParallel is RawGCMOpen4K on every core at once (one
// AEAD per goroutine, as fsck has one per file): the machine's raw AES-GCM
// decryption rate, which fsck's throughput is measured against
// (scripts/bench.sh). Run with -cpu N for N cores.
func BenchmarkRawGCMOpen4KParallel(b *testing.B) {
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		g := rawGCM(b)
		nonce := make([]byte, NonceSize)
		aad := make([]byte, aadSize)
		sealed := g.Seal(nil, nonce, benchPlain(), aad)
		out := make([]byte, 0, DefaultSectorSize)
		for pb.Next() {
			var err error
			if out, err = g.Open(out[:0], nonce, sealed, aad); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkWrite1MiB writes 1 MiB sequentially through File (wrapping inside
// a 64 MiB file); allocs/op is per MiB written.
func BenchmarkWrite1MiB(b *testing.B) {
	benchFileIO(b, 1<<20, true)
}

func BenchmarkRead1MiB(b *testing.B) {
	benchFileIO(b, 1<<20, false)
}

// BenchmarkWrite512 is the small-write case: 512-byte writes into 4 KiB
// sectors, each a read-modify-write.
func BenchmarkWrite512(b *testing.B) {
	benchFileIO(b, 512, true)
}

// BenchmarkRandomWriteIntoHole writes 4 KiB at random sectors of a 256 MiB
// file that starts as one hole (a Version3 file extended by truncation, as
// fio lays out its file), so the pending hole map splits on nearly every
// write: the write must not cost more as the map fills.
func BenchmarkRandomWriteIntoHole(b *testing.B) {
	const sectors = 256 << 20 / DefaultSectorSize
	c := newTestCipher(b, fixedKey(9), DefaultSectorSize)
	c.UseVersion3()
	f, _ := tempBacking(b, DefaultSectorSize)
	f.SoleWriter()
	if err := f.Truncate(c, sectors*DefaultSectorSize); err != nil {
		b.Fatal(err)
	}
	p := benchPlain()
	rng := rand.New(rand.NewPCG(7, 8))
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.WriteAt(c, p, rng.Int64N(sectors)*DefaultSectorSize); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFileIO(b *testing.B, chunk int, write bool) {
	const span = 64 << 20
	c := newTestCipher(b, fixedKey(8), DefaultSectorSize)
	f, _ := tempBacking(b, DefaultSectorSize)
	p := make([]byte, chunk)
	for i := range p {
		p[i] = byte(i)
	}
	if !write {
		for off := int64(0); off < span; off += int64(chunk) {
			mustWrite(b, f, c, p, off)
		}
	}
	b.SetBytes(int64(chunk))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		var err error
		if write {
			_, err = f.WriteAt(c, p, off)
		} else {
			_, err = f.ReadAt(c, p, off)
		}
		if err != nil {
			b.Fatal(err)
		}
		off = (off + int64(chunk)) % span
	}
}

// BenchmarkSealRatio4K and BenchmarkOpenRatio4K interleave blocks of sector
// and raw operations inside one benchmark, so a busy machine slows both
// alike; they report speed-sector/raw (1.0 = as fast as raw GCM).
func BenchmarkSealRatio4K(b *testing.B) {
	c := newTestCipher(b, fixedKey(8), DefaultSectorSize)
	g := rawGCM(b)
	pt := benchPlain()
	nonce := make([]byte, NonceSize)
	aad := make([]byte, aadSize)
	out := make([]byte, 0, DefaultSectorSize+Overhead)
	ratioBench(b, func() {
		var err error
		if out, err = c.SealSector(out[:0], benchID, 7, pt); err != nil {
			b.Fatal(err)
		}
	}, func() {
		out = g.Seal(out[:0], nonce, pt, aad)
	})
}

func BenchmarkOpenRatio4K(b *testing.B) {
	c := newTestCipher(b, fixedKey(8), DefaultSectorSize)
	g := rawGCM(b)
	sealed, err := c.SealSector(nil, benchID, 7, benchPlain())
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, NonceSize)
	aad := make([]byte, aadSize)
	rawSealed := g.Seal(nil, nonce, benchPlain(), aad)
	out := make([]byte, 0, DefaultSectorSize)
	ratioBench(b, func() {
		var err error
		if out, err = c.OpenSector(out[:0], benchID, 7, sealed); err != nil {
			b.Fatal(err)
		}
	}, func() {
		var err error
		if out, err = g.Open(out[:0], nonce, rawSealed, aad); err != nil {
			b.Fatal(err)
		}
	})
}

// ratioBench runs sector and raw in alternating blocks; b.N counts blocks.
// The reported ratio is the median over blocks of raw time / sector time,
// which a load spike on a shared machine cannot skew the way totals can.
func ratioBench(b *testing.B, sector, raw func()) {
	const block = 8
	var ratios []float64
	b.SetBytes(2 * block * DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		for range block {
			raw()
		}
		t1 := time.Now()
		for range block {
			sector()
		}
		t2 := time.Now()
		if d := t2.Sub(t1); d > 0 {
			ratios = append(ratios, float64(t1.Sub(t0))/float64(d))
		}
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], "sector/raw")
	}
}

// BenchmarkCheck64MiB authenticates a 64 MiB file with CheckSectors on one
// goroutine (what one fsck worker does); compare with RawGCMOpen4K.
func BenchmarkCheck64MiB(b *testing.B) {
	const span = 64 << 20
	c := newTestCipher(b, fixedKey(8), DefaultSectorSize)
	f, _ := tempBacking(b, DefaultSectorSize)
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i)
	}
	for off := int64(0); off < span; off += int64(len(p)) {
		mustWrite(b, f, c, p, off)
	}
	n, err := f.StoredSectors()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(span)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.CheckSectors(c, 0, n, func(e *AuthError) { b.Fatal(e) }); err != nil {
			b.Fatal(err)
		}
	}
}
