package sector

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"weak"
)

// KeySource yields the 32-byte content key. *keywrap.Key satisfies it; this
// package never imports keywrap so that the format stays independent of how
// keys are held.
type KeySource interface{ Bytes() []byte }

// FileKeyInfo is the HKDF info prefix for per-file subkeys; the 16-byte file
// ID follows it.
const FileKeyInfo = "encvol v1 file"

const keySize = 32

// Cipher seals and opens sectors with AES-256-GCM under per-file subkeys
// derived from the content key. It is safe for concurrent use.
//
// Close drops every per-file AEAD derived from it (also those cached by live
// Files), after which every operation fails with ErrClosed. Close waits for
// in-flight sealing/opening to finish, so once it returns the content key and
// its subkeys are no longer used by this package and the caller may zeroize
// the key.
type Cipher struct {
	key        KeySource
	sectorSize int

	// mu is held shared while deriving keys or running AEAD operations, and
	// exclusively by Close. GUARDS closed and the aead field of every fileKey
	// handed out by this Cipher.
	mu     sync.RWMutex
	closed bool

	// nonces makes the per-sector nonces; see nonceGen.
	nonces *nonceGen

	// v2: the Cipher reads and writes sector files of Version2 (volume
	// header version 3): every file keeps its header and file ID for life,
	// also when empty (its metadata is bound to the file ID), and its last
	// sector is sealed as final. Set once before the Cipher is shared.
	v2 bool
	// v3: sector files of Version3 (volume header version 4): Version2
	// plus the hole map (holes.go). Implies v2.
	v3 bool

	// regMu GUARDS reg. Lock order: mu before regMu.
	regMu sync.Mutex
	// reg maps file IDs to the per-file keys that are still referenced by some
	// File. Weak pointers keep the map from pinning keys of files nobody uses;
	// a cleanup removes dead entries.
	reg map[[FileIDSize]byte]weak.Pointer[fileKey]
}

// fileKey is the AEAD for one file ID. aead is nil once the Cipher is closed.
type fileKey struct {
	aead cipher.AEAD // GUARDED_BY Cipher.mu
}

// NewCipher returns a Cipher for content (a 32-byte key) and sectorSize.
// It does not copy or own the key: content must stay valid until Close
// returns, and the caller closes it afterwards.
func NewCipher(content KeySource, sectorSize int) (*Cipher, error) {
	if err := checkSectorSize(sectorSize); err != nil {
		return nil, err
	}
	if content == nil {
		return nil, errors.New("sector: new cipher: nil content key")
	}
	if n := len(content.Bytes()); n != keySize {
		return nil, fmt.Errorf("sector: new cipher: content key is %d bytes, want %d", n, keySize)
	}
	ng, err := newNonceGen()
	if err != nil {
		return nil, err
	}
	return &Cipher{
		key:        content,
		sectorSize: sectorSize,
		nonces:     ng,
		reg:        make(map[[FileIDSize]byte]weak.Pointer[fileKey]),
	}, nil
}

// UseVersion2 makes the Cipher read and write sector files of Version2,
// the format of volume header version 3: Truncate(0) keeps a file's header
// and file ID (volumes bind metadata to it), and the last sector of a file
// carries a final flag in its additional data, so a file cut at a sector
// boundary fails authentication. Files of the other version are refused
// (ErrHeader). Call it before the Cipher is shared.
func (c *Cipher) UseVersion2() { c.v2 = true }

// UseVersion3 makes the Cipher read and write sector files of Version3,
// the format of volume header version 4: Version2, and an all-zero stored
// sector is a hole only inside the file's authenticated hole map
// (HolesXattr). Call it before the Cipher is shared.
func (c *Cipher) UseVersion3() { c.v2, c.v3 = true, true }

// FileVersion is the sector-file version the Cipher reads and writes.
func (c *Cipher) FileVersion() int { return int(c.fileVersion()) }

// fileVersion is the sector-file version the Cipher reads and writes.
func (c *Cipher) fileVersion() uint16 {
	if c.v3 {
		return Version3
	}
	if c.v2 {
		return Version2
	}
	return Version
}

// SectorSize is the plaintext sector size this Cipher seals.
func (c *Cipher) SectorSize() int { return c.sectorSize }

// Close drops all derived per-file AEADs and makes every later operation
// through this Cipher (including Files that cached its keys) fail with
// ErrClosed. It is idempotent and safe to call concurrently with I/O.
func (c *Cipher) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.regMu.Lock()
	for id, wp := range c.reg {
		if fk := wp.Value(); fk != nil {
			fk.aead = nil
		}
		delete(c.reg, id)
	}
	c.regMu.Unlock()
	c.key = nil
}

// Closed reports whether Close has been called.
func (c *Cipher) Closed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// rlock takes the shared lock for AEAD use; it fails (without holding the
// lock) when the Cipher is closed.
func (c *Cipher) rlock() error {
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (c *Cipher) runlock() { c.mu.RUnlock() }

// fileKeyFor returns the (shared) per-file key for id, deriving it if no live
// File holds it.
func (c *Cipher) fileKeyFor(id *[FileIDSize]byte) (*fileKey, error) {
	if err := c.rlock(); err != nil {
		return nil, err
	}
	defer c.runlock()
	return c.fileKeyLocked(id)
}

// fileKeyLocked is fileKeyFor for callers that hold c.mu shared.
func (c *Cipher) fileKeyLocked(id *[FileIDSize]byte) (*fileKey, error) {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if wp, ok := c.reg[*id]; ok {
		if fk := wp.Value(); fk != nil {
			return fk, nil
		}
	}
	aead, err := c.derive(id)
	if err != nil {
		return nil, err
	}
	fk := &fileKey{aead: aead}
	wp := weak.Make(fk)
	c.reg[*id] = wp
	runtime.AddCleanup(fk, c.forget, regEntry{id: *id, wp: wp})
	return fk, nil
}

type regEntry struct {
	id [FileIDSize]byte
	wp weak.Pointer[fileKey]
}

// forget removes a registry entry whose fileKey was collected, unless the
// slot was already reused for a newer key.
func (c *Cipher) forget(e regEntry) {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if cur, ok := c.reg[e.id]; ok && cur == e.wp {
		delete(c.reg, e.id)
	}
}

// derive builds the AES-256-GCM AEAD (16-byte nonces) for file id. It runs
// under runtime/secret when available so the subkey and the AES key schedule
// are erased once unreachable.
func (c *Cipher) derive(id *[FileIDSize]byte) (cipher.AEAD, error) {
	var aead cipher.AEAD
	var err error
	secretDo(func() {
		var sub [keySize]byte
		if err = fileKeyInto(&sub, c.key.Bytes(), id[:]); err != nil {
			return
		}
		aead, err = newSectorAEAD(sub[:])
		clear(sub[:])
	})
	return aead, err
}

// deriveFileKey is HKDF-SHA256(content key, salt = nil, info = FileKeyInfo ||
// file ID), 32 bytes.
func deriveFileKey(master, fileID []byte) ([]byte, error) {
	var sub [keySize]byte
	if err := fileKeyInto(&sub, master, fileID); err != nil {
		return nil, err
	}
	out := append([]byte(nil), sub[:]...)
	clear(sub[:])
	return out, nil
}

// fileKeyInto is deriveFileKey into dst, computed on the stack: HKDF with a
// 32-byte output is one HMAC for Extract and one for Expand (RFC 5869), and
// both messages fit one SHA-256 block. Why not crypto/hkdf: under
// runtime/secret every heap allocation is tracked for erasure and costs
// about 1.5 µs; the library's ~20 allocations per call made key derivation
// the largest daemon cost of opening a file (about 20 µs per file, now 2 µs).
// TestFileKeyMatchesHKDF pins it to crypto/hkdf.
func fileKeyInto(dst *[keySize]byte, master, fileID []byte) error {
	if len(master) != keySize {
		return fmt.Errorf("sector: derive file key: content key is %d bytes, want %d (closed?)", len(master), keySize)
	}
	if len(fileID) != FileIDSize {
		return fmt.Errorf("sector: derive file key: file ID of %d bytes, want %d", len(fileID), FileIDSize)
	}
	// Extract: PRK = HMAC(salt, IKM); a nil salt is HashLen zero bytes.
	var zeros [sha256.Size]byte
	prk := hmacSHA256(zeros[:], master, nil)
	// Expand: T(1) = HMAC(PRK, info || 0x01) is all 32 bytes we need.
	var info [len(FileKeyInfo) + FileIDSize + 1]byte
	n := copy(info[:], FileKeyInfo)
	n += copy(info[n:], fileID)
	info[n] = 1
	*dst = hmacSHA256(prk[:], info[:], nil)
	clear(prk[:])
	return nil
}

// hmacSHA256 is HMAC-SHA256(key, a || b) (RFC 2104) for a key of at most one
// block and a message of at most one block, without heap allocations.
func hmacSHA256(key, a, b []byte) [sha256.Size]byte {
	const bs = sha256.BlockSize
	if len(key) > bs || len(a)+len(b) > bs {
		panic("sector: hmacSHA256 input beyond one block")
	}
	var buf [2 * bs]byte
	for i := range bs {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		buf[i] = k ^ 0x36
	}
	m := copy(buf[bs:], a)
	m += copy(buf[bs+m:], b)
	inner := sha256.Sum256(buf[:bs+m])
	for i := range bs {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		buf[i] = k ^ 0x5c
	}
	copy(buf[bs:], inner[:])
	sum := sha256.Sum256(buf[:bs+sha256.Size])
	clear(buf[:])
	clear(inner[:])
	return sum
}

func newSectorAEAD(fileKey []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(fileKey)
	if err != nil {
		return nil, fmt.Errorf("sector: file key: %w", err)
	}
	aead, err := cipher.NewGCMWithNonceSize(blk, NonceSize)
	if err != nil {
		return nil, fmt.Errorf("sector: file key: %w", err)
	}
	return aead, nil
}

// SealSector seals one sector of plaintext (1..SectorSize bytes) for file
// fileID at index with a fresh random nonce and appends nonce || ciphertext ||
// tag to dst. It is the exact per-sector operation File uses.
func (c *Cipher) SealSector(dst []byte, fileID []byte, index int64, plaintext []byte) ([]byte, error) {
	id, err := checkSectorArgs(fileID, index)
	if err != nil {
		return nil, err
	}
	if len(plaintext) == 0 || len(plaintext) > c.sectorSize {
		return nil, fmt.Errorf("sector: seal: plaintext of %d bytes, want 1..%d", len(plaintext), c.sectorSize)
	}
	out, tail := grow(dst, len(plaintext)+Overhead)
	aad := getAAD()
	defer putAAD(aad)
	if err := c.rlock(); err != nil {
		return nil, err
	}
	defer c.runlock()
	fk, err := c.fileKeyLocked(&id)
	if err != nil {
		return nil, err
	}
	fillAAD(aad[:], &id, index)
	if err := sealOne(fk.aead, c.nonces, tail, plaintext, aad[:]); err != nil {
		return nil, err
	}
	return out, nil
}

// OpenSector authenticates and decrypts one stored sector (as SealSector
// produced, or an all-zero hole) and appends the plaintext to dst. Failures
// are *AuthError (Path empty) matching ErrAuth; nothing is appended then.
func (c *Cipher) OpenSector(dst []byte, fileID []byte, index int64, stored []byte) ([]byte, error) {
	id, err := checkSectorArgs(fileID, index)
	if err != nil {
		return nil, err
	}
	if len(stored) > c.sectorSize+Overhead {
		return nil, &AuthError{Index: index, Err: fmt.Errorf("%w: stored sector of %d bytes exceeds %d", ErrTruncated, len(stored), c.sectorSize+Overhead)}
	}
	aad := getAAD()
	defer putAAD(aad)
	if err := c.rlock(); err != nil {
		return nil, err
	}
	defer c.runlock()
	fk, err := c.fileKeyLocked(&id)
	if err != nil {
		return nil, err
	}
	fillAAD(aad[:], &id, index)
	out, pt := grow(dst, max(len(stored)-Overhead, 0))
	if err := openOne(fk.aead, pt, stored, aad[:]); err != nil {
		return nil, &AuthError{Index: index, Err: err}
	}
	return out, nil
}

func checkSectorArgs(fileID []byte, index int64) (id [FileIDSize]byte, err error) {
	if len(fileID) != FileIDSize {
		return id, fmt.Errorf("sector: file ID of %d bytes, want %d", len(fileID), FileIDSize)
	}
	if index < 0 {
		return id, fmt.Errorf("sector: negative sector index %d", index)
	}
	copy(id[:], fileID)
	return id, nil
}

// aadPool avoids a heap allocation per sector: AAD passed through the
// cipher.AEAD interface escapes.
var aadPool = sync.Pool{New: func() any { return new([aadSize]byte) }}

func getAAD() *[aadSize]byte  { return aadPool.Get().(*[aadSize]byte) }
func putAAD(a *[aadSize]byte) { aadPool.Put(a) }

// grow extends b by n bytes and returns the whole slice and the new tail.
func grow(b []byte, n int) (whole, tail []byte) {
	l := len(b)
	if cap(b)-l < n {
		nb := make([]byte, l, l+n)
		copy(nb, b)
		b = nb
	}
	b = b[:l+n]
	return b, b[l:]
}

// nonceGen produces 16-byte nonces as AES-256(K, prefix || counter) with a
// random K and 64-bit prefix per Cipher and an atomic 64-bit counter. Within
// one Cipher the nonces are distinct (AES is a permutation and the inputs
// never repeat); across Ciphers (mounts, processes, machines) they are as
// good as uniformly random 128-bit values, which is what the collision bound
// in docs/format.md assumes. It costs one AES block instead of a getrandom
// system call per sector. K protects nothing secret: nonces are stored in
// the clear.
type nonceGen struct {
	blk    cipher.Block
	prefix uint64
	ctr    atomic.Uint64
}

func newNonceGen() (*nonceGen, error) {
	var seed [keySize + 8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("sector: nonce generator seed: %w", err)
	}
	blk, err := aes.NewCipher(seed[:keySize])
	if err != nil {
		return nil, fmt.Errorf("sector: nonce generator: %w", err)
	}
	return &nonceGen{blk: blk, prefix: binary.BigEndian.Uint64(seed[keySize:])}, nil
}

// next writes a fresh nonce into dst[:NonceSize].
func (g *nonceGen) next(dst []byte) {
	for {
		binary.BigEndian.PutUint64(dst[:8], g.prefix)
		binary.BigEndian.PutUint64(dst[8:NonceSize], g.ctr.Add(1))
		g.blk.Encrypt(dst[:NonceSize], dst[:NonceSize])
		// An all-zero nonce marks a hole; skip the (2^-128) unlucky value.
		if !isZero(dst[:NonceSize]) {
			return
		}
	}
}

// sealOne writes nonce || ciphertext || tag of pt into out, which must be
// exactly len(pt)+Overhead bytes and must not overlap pt.
func sealOne(aead cipher.AEAD, ng *nonceGen, out, pt, aad []byte) error {
	nonce := out[:NonceSize]
	ng.next(nonce)
	aead.Seal(out[NonceSize:NonceSize], nonce, pt, aad)
	return nil
}

// openSector is openOne for a sector whose final flag is final: the last
// sector of a version 2 file is always sealed, so a hole there means the
// file's end was cut or zeroed.
func openSector(aead cipher.AEAD, pt, stored, aad []byte, final bool) error {
	if final && len(stored) > Overhead && isZero(stored[:NonceSize]) {
		clear(pt)
		return ErrNotFinal
	}
	return openOne(aead, pt, stored, aad)
}

// openOne decrypts stored (nonce || ciphertext || tag, or an all-zero hole)
// into pt, which must be exactly len(stored)-Overhead bytes. The returned
// error is one of ErrTruncated, ErrBadHole, ErrTagMismatch; pt is zeroed on
// failure so no unauthenticated bytes leak to callers that ignore errors.
func openOne(aead cipher.AEAD, pt, stored, aad []byte) error {
	if len(stored) <= Overhead {
		return fmt.Errorf("%w: %d bytes, need more than %d", ErrTruncated, len(stored), Overhead)
	}
	nonce := stored[:NonceSize]
	if isZero(nonce) {
		if isZero(stored[NonceSize:]) {
			clear(pt)
			return nil
		}
		return ErrBadHole
	}
	if _, err := aead.Open(pt[:0], nonce, stored[NonceSize:], aad); err != nil {
		clear(pt)
		return ErrTagMismatch
	}
	return nil
}
