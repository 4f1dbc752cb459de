package sector

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

// TestGFMulKnownAnswer: the first GHASH step of test case 2 of the GCM
// specification (McGrew and Viega): H = E_0(0), X1 = C1·H.
func TestGFMulKnownAnswer(t *testing.T) {
	elem := func(s string) gfElem {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 16 {
			t.Fatalf("bad hex %q", s)
		}
		var e gfElem
		for i := range 8 {
			e.hi = e.hi<<8 | uint64(b[i])
			e.lo = e.lo<<8 | uint64(b[8+i])
		}
		return e
	}
	h := elem("66e94bd4ef8a2c3b884cfa59ca342b2e")
	c := elem("0388dace60b6a392f328c2b971b2fe78")
	if got, want := gfMul(c, h), elem("5e2ec746917062882c85b0685353deb7"); got != want {
		t.Errorf("C1·H = %016x%016x, want %016x%016x", got.hi, got.lo, want.hi, want.lo)
	}
	one := gfElem{hi: 1 << 63} // the polynomial 1
	if got := gfMul(one, h); got != h {
		t.Errorf("1·H = %016x%016x, want H", got.hi, got.lo)
	}
}

// TestTagCheckAgreesWithOpen: for random keys, nonces, additional data of
// both sector-file versions and ciphertexts of every length class, the
// tag check accepts exactly what cipher.AEAD.Open accepts, also after a
// bit of the nonce, the additional data, the ciphertext or the tag flips.
func TestTagCheckAgreesWithOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	c := newTestCipher(t, fixedKey(9), DefaultSectorSize)
	for round := range 300 {
		var id [FileIDSize]byte
		fill(id[:])
		fk, err := c.fileKeyFor(&id)
		if err != nil {
			t.Fatal(err)
		}
		c.mu.RLock()
		tc, err := c.newTagChecker(fk.aead, &id)
		c.mu.RUnlock()
		if err != nil {
			t.Fatal(err)
		}
		adLen := []int{aadSize, aadSizeMax}[round%2]
		ptLen := []int{1, 15, 16, 17, 512, 4095, DefaultSectorSize}[round%7]
		nonce := make([]byte, NonceSize)
		ad := make([]byte, adLen)
		pt := make([]byte, ptLen)
		fill(nonce)
		fill(ad)
		fill(pt)
		sealed := fk.aead.Seal(nil, nonce, pt, ad)
		ct, tag := sealed[:ptLen], sealed[ptLen:]
		// Each case flips one bit (or none) of one part.
		for part := range 5 {
			n2, ad2, ct2, tag2 := clone(nonce), clone(ad), clone(ct), clone(tag)
			target := [][]byte{nil, n2, ad2, ct2, tag2}[part]
			if target != nil {
				target[rng.IntN(len(target))] ^= 1 << rng.IntN(8)
			}
			_, openErr := fk.aead.Open(nil, n2, append(clone(ct2), tag2...), ad2)
			slot := make([]byte, aadSlot+len(ct2))
			copy(slot, ad2)
			copy(slot[aadSlot:], ct2)
			if got, want := tc.check(n2, slot, len(ad2), tag2), openErr == nil; got != want {
				t.Fatalf("round %d part %d (ad %d, ct %d bytes): check = %v, Open accepts = %v", round, part, adLen, ptLen, got, want)
			}
		}
		tc.close()
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// BenchmarkTagCheck4K is the per-sector cost of fsck's check, to set
// against BenchmarkRawGCMOpen4K.
func BenchmarkTagCheck4K(b *testing.B) {
	blk, err := aes.NewCipher(make([]byte, keySize))
	if err != nil {
		b.Fatal(err)
	}
	g, err := cipher.NewGCMWithNonceSize(blk, NonceSize)
	if err != nil {
		b.Fatal(err)
	}
	tc := &tagChecker{aead: g, fullAAD: -1, h: gfElem{hi: 1}}
	nonce := make([]byte, NonceSize)
	slot := make([]byte, aadSlot+DefaultSectorSize)
	tag := make([]byte, TagSize)
	b.SetBytes(DefaultSectorSize)
	b.ReportAllocs()
	for b.Loop() {
		tc.check(nonce, slot, aadSizeMax, tag)
	}
}
