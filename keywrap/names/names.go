// Package names encrypts what a directory listing shows: file names (per
// directory, deterministic), symlink targets and extended attributes, and it
// owns the per-directory ID files and the long-name side files on disk.
//
// It lives next to keywrap rather than in fusefs because names are a keyed
// on-disk format derived from the volume key: fusefs only maps file system
// calls and must not hold crypto formats, and sector is about content only.
//
// The scheme (docs/format.md, "Names", has every byte and test vectors):
//
//   - Names: SIV-style deterministic encryption. IV = HMAC-SHA256(macKey,
//     dirID || name)[:16], ciphertext = AES-256-CTR(encKey, IV, name), stored
//     as base64url without padding of IV || ciphertext. Equal names in one
//     directory encrypt equally (lookups need that); the directory ID makes
//     equal names in different directories differ; the IV doubles as the
//     authentication tag.
//   - Symlink targets and xattr values: AES-256-GCM with random 96-bit nonces;
//     in format version 4 a target's additional data names its entry
//     (linkbind.go).
//   - Every key is HKDF-SHA256 of the names subkey with its own label.
package names

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"syscall"

	"github.com/encvol/encvol/keywrap"
)

// HKDF-SHA256 info labels applied to the names subkey (salt empty, 32 bytes
// each). Part of the on-disk format.
const (
	LabelNameMAC      = "encvol v1 names name-mac"
	LabelNameEnc      = "encvol v1 names name-enc"
	LabelXattrNameMAC = "encvol v1 names xattr-name-mac"
	LabelXattrNameEnc = "encvol v1 names xattr-name-enc"
	LabelSymlink      = "encvol v1 names symlink"
	LabelXattrValue   = "encvol v1 names xattr-value"
)

// Limits of the backing and the plaintext file system.
const (
	NameMax        = 255 // longest plaintext name and longest backing name (bytes)
	ivLen          = 16
	gcmNonceLen    = 12
	gcmTagLen      = 16
	symlinkMax     = 4095 // longest backing symlink target the kernel accepts
	XattrNameMax   = 255
	XattrValueMax  = 65536
	xattrUser      = "user."
	XattrPrefix    = "user.encvol." // every encrypted xattr name starts with it
	maxEncodedName = 1024           // bound on decoder input; a 255-byte name encodes to 362
)

var b64 = base64.RawURLEncoding.Strict()

// decodeB64 decodes unpadded base64url and refuses every byte outside the
// alphabet first: encoding/base64 silently skips '\r' and '\n' even in
// strict mode, which would give one name several backing spellings.
func decodeB64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return nil, fmt.Errorf("byte %#x at offset %d is not base64url", c, i)
		}
	}
	return b64.DecodeString(s)
}

// Error is the type of the package's sentinel errors; each carries the errno
// the file system should return for it.
type Error struct {
	msg   string
	errno syscall.Errno
}

func (e *Error) Error() string { return e.msg }

// Errno is the errno a FUSE call should fail with.
func (e *Error) Errno() syscall.Errno { return e.errno }

// Is makes errors.Is(err, syscall.EINVAL) and friends true for the matching
// sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.errno
}

// Sentinel errors. Wrapped errors add which name or file was involved.
var (
	// ErrNameAuth: an encrypted name, long-name side file, symlink target or
	// xattr failed authentication (tampered, or another key).
	ErrNameAuth = &Error{"names: authentication failed", syscall.EIO}
	// ErrDirIDCorrupt: a directory ID file has the wrong size or is all zero.
	ErrDirIDCorrupt = &Error{"names: directory ID file corrupt", syscall.EIO}
	// ErrInvalidName: "", ".", "..", or a name containing '/' or NUL.
	ErrInvalidName = &Error{"names: invalid name", syscall.EINVAL}
	// ErrReservedName: a name the volume uses for its own files.
	ErrReservedName = &Error{"names: reserved name", syscall.EINVAL}
	// ErrNameTooLong: plaintext name > 255 bytes, or a symlink target or
	// xattr name too long to store encrypted.
	ErrNameTooLong = &Error{"names: name too long", syscall.ENAMETOOLONG}
	// ErrXattrNamespace: only the "user." namespace is encrypted and stored.
	ErrXattrNamespace = &Error{"names: only user.* extended attributes are supported", syscall.EOPNOTSUPP}
	// ErrXattrForeign: a backing xattr that encvol did not write; hide it.
	ErrXattrForeign = &Error{"names: not an encvol extended attribute", syscall.ENODATA}
	// ErrXattrTooLarge: the sealed value would exceed the kernel's limit.
	ErrXattrTooLarge = &Error{"names: extended attribute value too large", syscall.E2BIG}
	// ErrClosed: the Codec was closed (the key gate dropped the keys).
	ErrClosed = keywrap.ErrClosed
)

// Errno maps any error from this package (or a wrapped syscall.Errno) to the
// errno a file system call should return; unknown errors map to EIO.
func Errno(err error) syscall.Errno {
	var e *Error
	if errors.As(err, &e) {
		return e.errno
	}
	var n syscall.Errno
	if errors.As(err, &n) {
		return n
	}
	return syscall.EIO
}

func wrap(sentinel *Error, format string, a ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))
}

// key slots inside the Codec's locked key region.
const (
	slotNameMAC = iota
	slotNameEnc
	slotXattrNameMAC
	slotXattrNameEnc
	slotSymlink
	slotXattrValue
	slotMetaMAC
	slotEntryMAC
	numSlots
)

var slotLabels = [numSlots]string{LabelNameMAC, LabelNameEnc, LabelXattrNameMAC, LabelXattrNameEnc, LabelSymlink, LabelXattrValue, LabelMetaMAC, LabelEntryMAC}

// Codec encrypts and decrypts names, symlink targets and xattrs of one volume.
// It is safe for concurrent use. Close zeroizes its keys; every later call
// fails with ErrClosed.
type Codec struct {
	plaintext bool
	// authMeta: the volume's entries carry authenticated metadata (header
	// version 3); set once before the codec is shared.
	authMeta bool
	// bindLinks: symlink targets are bound to their entry (header version
	// 4); set once before the codec is shared.
	bindLinks bool
	// bindEntries: the metadata of regular files and directories names
	// their entry (header version 5); set once before the codec is shared.
	bindEntries bool

	mu     sync.RWMutex // read-held by every operation, write-held by Close
	keys   *keywrap.Key // numSlots × 32 bytes; GUARDED_BY(mu)
	nameBl cipher.Block // AES-256 with slotNameEnc; GUARDED_BY(mu)
	xattBl cipher.Block // AES-256 with slotXattrNameEnc; GUARDED_BY(mu)
	symGCM cipher.AEAD  // GUARDED_BY(mu)
	xvGCM  cipher.AEAD  // GUARDED_BY(mu)
	// pools of keyed HMAC scratch state; GUARDED_BY(mu)
	namePool, xattPool, metaPool, entryPool *sync.Pool
}

// NewCodec derives the names keys from namesKey (keywrap.Subkeys.Names) into
// its own locked memory; namesKey stays owned by the caller. plaintext selects
// the debugging mode in which names and symlink targets are stored as they are
// (content and xattr values are still encrypted).
func NewCodec(namesKey *keywrap.Key, plaintext bool) (*Codec, error) {
	if namesKey == nil {
		return nil, errors.New("names: new codec: nil names key")
	}
	src := namesKey.Bytes()
	if src == nil {
		return nil, fmt.Errorf("names: new codec: %w", keywrap.ErrClosed)
	}
	keys, err := keywrap.RandomKey(numSlots * 32) // overwritten below
	if err != nil {
		return nil, fmt.Errorf("names: new codec: %w", err)
	}
	c := &Codec{plaintext: plaintext, keys: keys}
	kb := keys.Bytes()
	var derr error
	keywrap.Secretly(func() {
		for i, label := range slotLabels {
			k, err := hkdf.Key(sha256.New, src, nil, label, 32)
			if err != nil {
				derr = err
				return
			}
			copy(kb[i*32:], k)
			clear(k)
		}
		if c.nameBl, derr = aes.NewCipher(slot(kb, slotNameEnc)); derr != nil {
			return
		}
		if c.xattBl, derr = aes.NewCipher(slot(kb, slotXattrNameEnc)); derr != nil {
			return
		}
		if c.symGCM, derr = newGCM(slot(kb, slotSymlink)); derr != nil {
			return
		}
		c.xvGCM, derr = newGCM(slot(kb, slotXattrValue))
	})
	c.namePool = newSIVPool(slot(kb, slotNameMAC))
	c.xattPool = newSIVPool(slot(kb, slotXattrNameMAC))
	c.metaPool = newSIVPool(slot(kb, slotMetaMAC))
	c.entryPool = newSIVPool(slot(kb, slotEntryMAC))
	if derr != nil {
		keys.Close()
		return nil, fmt.Errorf("names: new codec: %w", derr)
	}
	return c, nil
}

func slot(kb []byte, i int) []byte { return kb[i*32 : (i+1)*32] }

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Close zeroizes the keys and drops the ciphers; idempotent. It waits for
// calls in progress to finish.
func (c *Codec) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		return
	}
	c.keys.Close()
	// The expanded AES keys live on the Go heap; they were allocated under
	// keywrap.Secretly, so with runtime/secret the GC erases them once they
	// become unreachable here.
	c.keys, c.nameBl, c.xattBl, c.symGCM, c.xvGCM = nil, nil, nil, nil, nil
	c.namePool, c.xattPool, c.metaPool, c.entryPool = nil, nil, nil, nil
}

// Plaintext reports whether the codec passes names through (plaintext mode).
func (c *Codec) Plaintext() bool { return c.plaintext }

// acquire read-locks the codec; the returned func releases it.
func (c *Codec) acquire() (func(), error) {
	c.mu.RLock()
	if c.keys == nil {
		c.mu.RUnlock()
		return nil, ErrClosed
	}
	return c.mu.RUnlock, nil
}

// CheckName returns ErrInvalidName for "", ".", "..", names with '/' or NUL,
// and ErrNameTooLong for names over NameMax bytes.
func CheckName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return wrap(ErrInvalidName, "%q", name)
	case strings.ContainsAny(name, "/\x00"):
		return wrap(ErrInvalidName, "%q contains '/' or NUL", name)
	case len(name) > NameMax:
		return wrap(ErrNameTooLong, "%d bytes (max %d)", len(name), NameMax)
	}
	return nil
}

// sivScratch is the per-call state of the SIV construction. Objects are
// pooled (and created under keywrap.Secretly) because runtime/secret makes
// every allocation inside Secretly costly; the keyed HMAC state in them is
// erased by the GC once the pool drops them after Close.
type sivScratch struct {
	mac hash.Hash // HMAC-SHA256 keyed with the MAC key of its pool
	sum [sha256.Size]byte
	ctr [aes.BlockSize]byte
	ks  [aes.BlockSize]byte
}

func newSIVPool(macKey []byte) *sync.Pool {
	return &sync.Pool{New: func() any {
		// Only ever called from inside Secretly (via sivSeal/sivOpen),
		// with the codec read-locked, so macKey is still valid.
		return &sivScratch{mac: hmac.New(sha256.New, macKey)}
	}}
}

// syntheticIV writes HMAC(dirID || pt)[:16] into st.sum[:16].
func (st *sivScratch) syntheticIV(dirID, pt []byte) []byte {
	st.mac.Reset()
	st.mac.Write(dirID)
	st.mac.Write(pt)
	st.mac.Sum(st.sum[:0])
	return st.sum[:ivLen]
}

// ctr XORs src into dst with AES-CTR from the 16-byte initial counter block
// iv, incrementing the whole block as a big-endian integer (SP 800-38A).
// Written out instead of cipher.NewCTR because that allocates per call.
func (st *sivScratch) ctrXOR(bl cipher.Block, iv, dst, src []byte) {
	copy(st.ctr[:], iv)
	for len(src) > 0 {
		bl.Encrypt(st.ks[:], st.ctr[:])
		n := subtle.XORBytes(dst, src, st.ks[:])
		dst, src = dst[n:], src[n:]
		for i := aes.BlockSize - 1; i >= 0; i-- {
			st.ctr[i]++
			if st.ctr[i] != 0 {
				break
			}
		}
	}
	clear(st.ks[:])
}

// sivSeal returns IV || AES-CTR(IV, pt) with IV = HMAC(macKey, dirID||pt)[:16].
func sivSeal(pool *sync.Pool, bl cipher.Block, dirID, pt []byte) []byte {
	out := make([]byte, ivLen+len(pt))
	keywrap.Secretly(func() {
		st := pool.Get().(*sivScratch)
		copy(out, st.syntheticIV(dirID, pt))
		st.ctrXOR(bl, out[:ivLen], out[ivLen:], pt)
		pool.Put(st)
	})
	return out
}

// sivOpen reverses sivSeal and reports whether the IV authenticates.
func sivOpen(pool *sync.Pool, bl cipher.Block, dirID, ct []byte) ([]byte, bool) {
	if len(ct) <= ivLen {
		return nil, false
	}
	pt := make([]byte, len(ct)-ivLen)
	ok := false
	keywrap.Secretly(func() {
		st := pool.Get().(*sivScratch)
		st.ctrXOR(bl, ct[:ivLen], pt, ct[ivLen:])
		ok = subtle.ConstantTimeCompare(st.syntheticIV(dirID, pt), ct[:ivLen]) == 1
		pool.Put(st)
	})
	if !ok {
		return nil, false
	}
	return pt, true
}

// EncryptName returns the backing name for name in the directory with ID
// dirID. The result is deterministic for (key, dirID, name). If the encoded
// name is longer than NameMax, backing is LongNamePrefix + base64url(sha256
// (encoded)) and longFull is the encoded name, which the caller must store
// with WriteLongName (before creating the entry); otherwise longFull is "".
//
// In plaintext mode the name is returned unchanged; names the volume reserves
// (IsReservedPlaintext) are refused with ErrReservedName.
func (c *Codec) EncryptName(dirID []byte, name string) (backing string, longFull string, err error) {
	if err := CheckName(name); err != nil {
		return "", "", err
	}
	release, err := c.acquire()
	if err != nil {
		return "", "", err
	}
	defer release()
	if c.plaintext {
		if IsReservedPlaintext(name) {
			return "", "", wrap(ErrReservedName, "%q is used by encvol itself", name)
		}
		return name, "", nil
	}
	if len(dirID) != DirIDLen {
		return "", "", wrap(ErrDirIDCorrupt, "directory ID has %d bytes, want %d", len(dirID), DirIDLen)
	}
	enc := b64.EncodeToString(sivSeal(c.namePool, c.nameBl, dirID, []byte(name)))
	if len(enc) <= NameMax {
		return enc, "", nil
	}
	return longNameFor(enc), enc, nil
}

// DecryptName returns the plaintext name of a backing entry in the directory
// with ID dirID. For a long name, pass the side file content (ReadLongName)
// instead of the backing name. Tampered or foreign names fail with an error
// wrapping ErrNameAuth.
func (c *Codec) DecryptName(dirID []byte, backing string) (string, error) {
	release, err := c.acquire()
	if err != nil {
		return "", err
	}
	defer release()
	if c.plaintext {
		if err := CheckName(backing); err != nil {
			return "", err
		}
		if IsReservedPlaintext(backing) {
			return "", wrap(ErrReservedName, "%q is used by encvol itself", backing)
		}
		return backing, nil
	}
	if len(dirID) != DirIDLen {
		return "", wrap(ErrDirIDCorrupt, "directory ID has %d bytes, want %d", len(dirID), DirIDLen)
	}
	if IsLongName(backing) {
		return "", wrap(ErrInvalidName, "%s is a long name: decrypt the content of its side file", backing)
	}
	if len(backing) > maxEncodedName {
		return "", wrap(ErrNameAuth, "encoded name of %d bytes", len(backing))
	}
	raw, err := decodeB64(backing)
	if err != nil {
		return "", wrap(ErrNameAuth, "%q is not base64url: %v", clip(backing), err)
	}
	pt, ok := sivOpen(c.namePool, c.nameBl, dirID, raw)
	if !ok {
		return "", wrap(ErrNameAuth, "name %q", clip(backing))
	}
	name := string(pt)
	if err := CheckName(name); err != nil {
		// Only the key holder can produce such a name; treat as tampering.
		return "", wrap(ErrNameAuth, "name %q decrypts to an invalid name", clip(backing))
	}
	return name, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// EncryptSymlink returns the encrypted form of a symlink target:
// base64url(nonce || AES-256-GCM(target)), randomized. On a volume that
// binds symlink targets (SetBindLinks) the additional data names the entry
// the target belongs to, the plaintext name in the directory with ID dirID
// (LinkAAD), so a target moved to another symlink fails to open; otherwise
// dirID and name are not used and the additional data is empty. In
// plaintext mode the target is returned unchanged. Targets up to 4095
// bytes (PATH_MAX - 1) are accepted; an encrypted form longer than a
// backing symlink can hold is stored in a side file (StoreLink).
func (c *Codec) EncryptSymlink(dirID []byte, name, target string) (string, error) {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return "", wrap(ErrInvalidName, "symlink target empty or contains NUL")
	}
	release, err := c.acquire()
	if err != nil {
		return "", err
	}
	defer release()
	if c.plaintext {
		if len(target) > symlinkMax {
			return "", wrap(ErrNameTooLong, "symlink target of %d bytes", len(target))
		}
		return target, nil
	}
	if len(target) > symlinkMax {
		return "", wrap(ErrNameTooLong, "symlink target of %d bytes (max %d)", len(target), symlinkMax)
	}
	aad, err := c.linkAAD(dirID, name)
	if err != nil {
		return "", err
	}
	sealed, err := seal(c.symGCM, []byte(target), aad)
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(sealed), nil
}

// DecryptSymlink reverses EncryptSymlink for the symlink name in the
// directory with ID dirID; tampering, and on a volume that binds targets
// a target stored for another entry, fail with ErrNameAuth.
func (c *Codec) DecryptSymlink(dirID []byte, name, stored string) (string, error) {
	release, err := c.acquire()
	if err != nil {
		return "", err
	}
	defer release()
	if c.plaintext {
		return stored, nil
	}
	if len(stored) > maxStoredLink {
		return "", wrap(ErrNameAuth, "stored symlink target of %d bytes", len(stored))
	}
	raw, err := decodeB64(stored)
	if err != nil {
		return "", wrap(ErrNameAuth, "symlink target is not base64url: %v", err)
	}
	aad, err := c.linkAAD(dirID, name)
	if err != nil {
		return "", err
	}
	pt, err := open(c.symGCM, raw, aad)
	if err != nil || len(pt) == 0 {
		if c.bindLinks && len(raw) >= gcmNonceLen+gcmTagLen {
			return "", fmt.Errorf("%w: %w", ErrNameAuth, ErrLinkEntry)
		}
		return "", wrap(ErrNameAuth, "symlink target")
	}
	return string(pt), nil
}

// seal returns nonce || GCM(pt, aad) with a fresh random 96-bit nonce.
func seal(g cipher.AEAD, pt, aad []byte) ([]byte, error) {
	var nonce [gcmNonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("names: nonce: %w", err)
	}
	return sealNonce(g, nonce[:], pt, aad), nil
}

// sealNonce is seal with a given nonce (test vectors need a fixed one).
func sealNonce(g cipher.AEAD, nonce, pt, aad []byte) []byte {
	out := make([]byte, gcmNonceLen, gcmNonceLen+len(pt)+gcmTagLen)
	copy(out, nonce)
	var res []byte
	keywrap.Secretly(func() { res = g.Seal(out, out, pt, aad) })
	return res
}

func open(g cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < gcmNonceLen+gcmTagLen {
		return nil, ErrNameAuth
	}
	// Allocated outside Secretly: the plaintext is the caller's, and
	// erasing it later would only cost GC time.
	pt := make([]byte, 0, len(sealed)-gcmNonceLen-gcmTagLen)
	var err error
	keywrap.Secretly(func() {
		pt, err = g.Open(pt, sealed[:gcmNonceLen], sealed[gcmNonceLen:], aad)
	})
	return pt, err
}

// EncryptXattrName maps "user.X" to the backing name "user.encvol." +
// base64url(SIV(X)) (deterministic, with the xattr name keys and an empty
// directory ID). In plaintext mode the name is returned unchanged. Other
// namespaces fail with ErrXattrNamespace.
func (c *Codec) EncryptXattrName(name string) (string, error) {
	x, ok := strings.CutPrefix(name, xattrUser)
	if !ok {
		return "", wrap(ErrXattrNamespace, "%q", clip(name))
	}
	if x == "" || strings.IndexByte(x, 0) >= 0 || len(name) > XattrNameMax {
		return "", wrap(ErrInvalidName, "xattr name %q", clip(name))
	}
	release, err := c.acquire()
	if err != nil {
		return "", err
	}
	defer release()
	if c.plaintext {
		return name, nil
	}
	if n := len(XattrPrefix) + b64.EncodedLen(ivLen+len(x)); n > XattrNameMax {
		return "", wrap(ErrNameTooLong, "xattr name of %d bytes encodes to %d (max %d)", len(name), n, XattrNameMax)
	}
	return XattrPrefix + b64.EncodeToString(sivSeal(c.xattPool, c.xattBl, nil, []byte(x))), nil
}

// DecryptXattrName reverses EncryptXattrName. A backing xattr encvol did not
// write (wrong namespace or prefix) fails with ErrXattrForeign, so listxattr
// can hide it; a tampered one with ErrNameAuth.
func (c *Codec) DecryptXattrName(stored string) (string, error) {
	release, err := c.acquire()
	if err != nil {
		return "", err
	}
	defer release()
	if c.plaintext {
		if !strings.HasPrefix(stored, xattrUser) {
			return "", wrap(ErrXattrForeign, "%q", clip(stored))
		}
		return stored, nil
	}
	enc, ok := strings.CutPrefix(stored, XattrPrefix)
	if !ok {
		return "", wrap(ErrXattrForeign, "%q", clip(stored))
	}
	if len(stored) > XattrNameMax {
		return "", wrap(ErrNameAuth, "xattr name of %d bytes", len(stored))
	}
	raw, err := decodeB64(enc)
	if err != nil {
		return "", wrap(ErrNameAuth, "xattr name %q is not base64url", clip(stored))
	}
	pt, ok := sivOpen(c.xattPool, c.xattBl, nil, raw)
	if !ok || strings.IndexByte(string(pt), 0) >= 0 {
		return "", wrap(ErrNameAuth, "xattr name %q", clip(stored))
	}
	return xattrUser + string(pt), nil
}

// SealXattrValue encrypts an xattr value for storage under the backing xattr
// name backingName (the result of EncryptXattrName): nonce || AES-256-GCM(val)
// with additional data = backingName, so a value cannot be moved to another
// attribute. On a volume with authenticated metadata entry is the file or
// directory ID of the entry that holds the attribute, and the additional
// data is backingName || 0x00 || entry, so a value cannot be moved to
// another entry either (nil entry: the name alone, as older volumes and
// encvol's own attributes have it). Values are sealed in plaintext mode too.
func (c *Codec) SealXattrValue(backingName string, entry, val []byte) ([]byte, error) {
	if len(val)+gcmNonceLen+gcmTagLen > XattrValueMax {
		return nil, wrap(ErrXattrTooLarge, "%d bytes (max %d)", len(val), XattrValueMax-gcmNonceLen-gcmTagLen)
	}
	release, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	return seal(c.xvGCM, val, xattrAAD(backingName, entry))
}

// xattrAAD is the additional data of an attribute value.
func xattrAAD(backingName string, entry []byte) []byte {
	if entry == nil {
		return []byte(backingName)
	}
	aad := make([]byte, 0, len(backingName)+1+len(entry))
	aad = append(aad, backingName...)
	aad = append(aad, 0)
	return append(aad, entry...)
}

// OpenXattrValue reverses SealXattrValue; a tampered value, one stored
// under another name, or on another entry fails with ErrNameAuth.
func (c *Codec) OpenXattrValue(backingName string, entry, sealed []byte) ([]byte, error) {
	release, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	pt, err := open(c.xvGCM, sealed, xattrAAD(backingName, entry))
	if err != nil {
		return nil, wrap(ErrNameAuth, "value of xattr %q", clip(backingName))
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}
