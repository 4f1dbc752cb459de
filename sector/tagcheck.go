package sector

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
)

// Why a check can authenticate a sector without decrypting it: a GCM tag is
// E_K(J0) xor GHASH_H(A || pad || C || pad || len(A) || len(C)), with H =
// E_K(0^128) (NIST SP 800-38D). Sealing an empty plaintext under the same
// nonce with the additional data A || pad || C computes the same GHASH over
// the same blocks except the last, the lengths block, which then reads
// len(A || pad || C) || 0. GHASH is linear, so the two tags differ by (L xor
// L')·H, L and L' the two lengths blocks: a constant for a given A and C
// length. fsck therefore hashes each sector with the standard library's
// AES-GCM (carry-less multiplication in hardware) and adds that constant,
// instead of also running AES-CTR over every byte: about half the CPU per
// byte, and no plaintext in memory at all. Mounts keep decrypting with
// cipher.AEAD.Open; only the check uses this.

// aadSlot is the room before a sector's ciphertext in the check buffer: the
// additional data zero-padded to a whole GHASH block.
const aadSlot = (aadSizeMax + 15) / 16 * 16

// tagChecker authenticates stored sectors of one file without decrypting
// them. Its hash key is secret (with it, tags can be forged): close zeroes it.
type tagChecker struct {
	aead cipher.AEAD
	h    gfElem
	// full caches the correction of a whole sector with additional data of
	// fullAAD bytes, the length nearly every sector has.
	fullAAD, fullCT int
	full            gfElem
	tag             [TagSize]byte
}

// gfElem is an element of GF(2^128) in GCM's bit order: hi holds bytes 0-7
// big-endian, lo bytes 8-15.
type gfElem struct{ hi, lo uint64 }

// newTagChecker derives the hash key of file id's subkey. The caller holds
// c.mu shared and passes the file's AEAD.
func (c *Cipher) newTagChecker(aead cipher.AEAD, id *[FileIDSize]byte) (*tagChecker, error) {
	t := &tagChecker{aead: aead, fullAAD: -1}
	var err error
	secretDo(func() {
		var sub [keySize]byte
		if err = fileKeyInto(&sub, c.key.Bytes(), id[:]); err != nil {
			return
		}
		var blk cipher.Block
		blk, err = aes.NewCipher(sub[:])
		clear(sub[:])
		if err != nil {
			return
		}
		var h [16]byte
		blk.Encrypt(h[:], h[:])
		t.h = gfElem{binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])}
		clear(h[:])
	})
	return t, err
}

func (t *tagChecker) close() {
	t.h, t.full = gfElem{}, gfElem{}
	clear(t.tag[:])
}

// check reports whether tag authenticates nonce, the additional data of
// aadLen bytes at the start of slot (zero-padded to aadSlot) and the
// ciphertext that follows it there.
func (t *tagChecker) check(nonce, slot []byte, aadLen int, tag []byte) bool {
	ctLen := len(slot) - aadSlot
	var d gfElem
	if aadLen == t.fullAAD && ctLen == t.fullCT {
		d = t.full
	} else {
		d = t.correction(aadLen, ctLen)
		if t.fullAAD < 0 || ctLen > t.fullCT {
			t.fullAAD, t.fullCT, t.full = aadLen, ctLen, d
		}
	}
	got := t.aead.Seal(t.tag[:0], nonce, nil, slot)
	binary.BigEndian.PutUint64(got[:8], binary.BigEndian.Uint64(got[:8])^d.hi)
	binary.BigEndian.PutUint64(got[8:], binary.BigEndian.Uint64(got[8:])^d.lo)
	return subtle.ConstantTimeCompare(got, tag) == 1
}

// correction is (L xor L')·H for additional data of aadLen bytes and a
// ciphertext of ctLen bytes (lengths in bits, as GCM counts them).
func (t *tagChecker) correction(aadLen, ctLen int) gfElem {
	l := gfElem{uint64(aadLen) * 8, uint64(ctLen) * 8}
	l2 := gfElem{uint64(aadSlot+ctLen) * 8, 0}
	return gfMul(gfElem{l.hi ^ l2.hi, l.lo ^ l2.lo}, t.h)
}

// gfMul is multiplication in GCM's GF(2^128) (SP 800-38D, algorithm 1),
// without branches on y, which is secret.
func gfMul(x, y gfElem) gfElem {
	var z gfElem
	v := y
	for i := range 128 {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		m := -bit
		z.hi ^= v.hi & m
		z.lo ^= v.lo & m
		lsb := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ 0xe1<<56&-lsb
	}
	return z
}
