package sector

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"testing"
)

// TestFileKeyMatchesHKDF pins the allocation-free derivation to the
// library HKDF it replaces.
func TestFileKeyMatchesHKDF(t *testing.T) {
	for range 200 {
		master := make([]byte, keySize)
		id := make([]byte, FileIDSize)
		rand.Read(master)
		rand.Read(id)
		want, err := hkdf.Key(sha256.New, master, nil, FileKeyInfo+string(id), keySize)
		if err != nil {
			t.Fatal(err)
		}
		got, err := deriveFileKey(master, id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("derived %x, crypto/hkdf %x", got, want)
		}
	}
	if _, err := deriveFileKey(make([]byte, 31), make([]byte, FileIDSize)); err == nil {
		t.Fatal("short content key accepted")
	}
}

// TestFileKeyNoAllocs: the derivation must stay off the heap (see
// fileKeyInto for why).
func TestFileKeyNoAllocs(t *testing.T) {
	master := fixedKey(7)
	id := make([]byte, FileIDSize)
	var dst [keySize]byte
	if n := testing.AllocsPerRun(100, func() {
		if err := fileKeyInto(&dst, master, id); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("fileKeyInto allocates %v times per call", n)
	}
}

// TestParallelChunks covers the two-goroutine sealing and opening of large
// chunks: unaligned large writes over existing data (partial first and last
// sectors in different halves), reads at odd offsets, and a tampered sector
// in the second half that must stop the read exactly there.
func TestParallelChunks(t *testing.T) {
	const ss = 4096
	c := newTestCipher(t, fixedKey(3), ss)
	f, path := tempBacking(t, ss)
	model := make([]byte, 3<<20)
	rand.Read(model)
	mustWrite(t, f, c, model, 0)
	for _, w := range []struct{ off, n int }{{1000, 1 << 20}, {ss*7 + 5, 700 << 10}, {0, 256 << 10}, {3<<20 - 300<<10 - 17, 300<<10 + 17}} {
		p := make([]byte, w.n)
		rand.Read(p)
		mustWrite(t, f, c, p, int64(w.off))
		copy(model[w.off:], p)
	}
	checkContent(t, f, c, model)
	for _, r := range []struct{ off, n int }{{1, 1 << 20}, {ss * 3, 512 << 10}, {123457, 200 << 10}} {
		p := make([]byte, r.n)
		n, err := f.ReadAt(c, p, int64(r.off))
		if err != nil || n != r.n {
			t.Fatalf("ReadAt(%d at %d) = %d, %v", r.n, r.off, n, err)
		}
		if !bytes.Equal(p, model[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt(%d at %d): content differs at %d", r.n, r.off, firstDiff(p, model[r.off:r.off+r.n]))
		}
	}

	// Flip one byte of sector 200 (second half of a 1 MiB read from 0).
	const bad = 200
	osf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer osf.Close()
	at := int64(HeaderSize) + bad*int64(ss+Overhead) + NonceSize + 10
	var b [1]byte
	if _, err := osf.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := osf.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1<<20)
	n, err := f.ReadAt(c, p, 0)
	wantAuth(t, err, bad, ErrTagMismatch)
	if n != bad*ss {
		t.Fatalf("read %d bytes before the bad sector, want %d", n, bad*ss)
	}
	if !bytes.Equal(p[:n], model[:n]) {
		t.Fatal("bytes before the bad sector differ")
	}
	// A write whose partial last sector is the bad one must refuse too.
	if _, err := f.WriteAt(c, make([]byte, bad*ss+5-ss), ss); err == nil {
		t.Fatal("write over a tampered partial sector succeeded")
	}
}

// TestSmallIOAllocations guards the per-request cost of small reads and
// writes (4 KiB random I/O): the split halves must not put the state of
// every call on the heap. What remains is mostly the fstat of the size
// check (the race detector adds one).
func TestSmallIOAllocations(t *testing.T) {
	const ss = 4096
	c := newTestCipher(t, fixedKey(5), ss)
	f, _ := tempBacking(t, ss)
	mustWrite(t, f, c, make([]byte, 64<<10), 0)
	p := make([]byte, ss)
	reads := testing.AllocsPerRun(200, func() {
		if _, err := f.ReadAt(c, p, 3*ss); err != nil {
			t.Fatal(err)
		}
	})
	writes := testing.AllocsPerRun(200, func() {
		if _, err := f.WriteAt(c, p, 5*ss+100); err != nil {
			t.Fatal(err)
		}
	})
	if reads > 3 || writes > 3 {
		t.Fatalf("allocations per 4 KiB call: read %v, write %v; want at most 3", reads, writes)
	}
}
