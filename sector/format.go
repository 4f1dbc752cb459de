// Package sector implements the encvol sector-file format: an 18-byte file
// header followed by sectors that are each sealed with AES-256-GCM under a
// per-file subkey. A File reads and writes plaintext at any offset and length,
// truncates in both directions and keeps never-written regions sparse on the
// backing file system. docs/format.md describes every byte.
//
// The package knows nothing about volumes, FUSE or KMS: it gets a content key
// through KeySource and an *os.File, and nothing more.
package sector

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Format constants. Sector sizes are plaintext bytes per sector.
const (
	DefaultSectorSize = 4096
	MinSectorSize     = 512
	MaxSectorSize     = 65536
	// HeaderSize is the size of the file header: 2-byte version + 16-byte file ID.
	HeaderSize = 18
	// Version is the sector-file format of volumes of header version 1 and
	// 2; Version2 that of header version 3 (see Cipher.UseVersion2);
	// Version3 that of header version 4 (see Cipher.UseVersion3).
	Version  = 1
	Version2 = 2
	Version3 = 3
	// FileIDSize is the length of the random file ID in the header.
	FileIDSize = 16
	// NonceSize is the length of the random GCM nonce stored before each sector.
	NonceSize = 16
	// TagSize is the length of the GCM tag stored after each sector.
	TagSize = 16
	// Overhead is what sealing adds to every stored sector (nonce + tag).
	Overhead = NonceSize + TagSize

	aadSize = 2 + FileIDSize + 8
	// aadSizeMax is the additional data of version 2: a final-sector flag
	// follows the index.
	aadSizeMax = aadSize + 1
)

// Errors. Authentication failures are reported as *AuthError, which matches
// ErrAuth and one of ErrTagMismatch, ErrTruncated or ErrBadHole with errors.Is.
var (
	// ErrAuth: a stored sector failed authentication (tampered, moved between
	// positions or files, truncated, or the key is wrong). No data is returned.
	ErrAuth = errors.New("sector: authentication failed")
	// ErrTagMismatch: the GCM tag did not verify.
	ErrTagMismatch = errors.New("GCM tag mismatch (sector modified, moved, from another file, or wrong key)")
	// ErrTruncated: the stored sector is too short to hold nonce, tag and one byte.
	ErrTruncated = errors.New("stored sector truncated")
	// ErrBadHole: the nonce is all zero (the hole marker) but the rest of the
	// stored sector is not, so it is neither a hole nor a sealed sector.
	ErrBadHole = errors.New("damaged hole sector")
	// ErrHeader: the file header is short, has an unknown version or an all-zero file ID.
	ErrHeader = errors.New("sector: bad file header")
	// ErrClosed: the Cipher was closed (keys dropped); nothing can be read or written.
	ErrClosed = errors.New("sector: cipher closed")
	// ErrTooLarge: an offset or size beyond what the format can address in an int64 backing file.
	ErrTooLarge = errors.New("sector: offset or size too large")
	// ErrTorn: a failed write (full file system) left a sector half written
	// that could not be put back; it no longer authenticates.
	ErrTorn = errors.New("sector: sector torn by a failed write")
	// ErrNotFinal: (version 2) the last stored sector of the file is a hole,
	// so nothing marks where the file ends: its end was cut or zeroed.
	ErrNotFinal = errors.New("the last sector is a hole, not a sealed final sector (file cut or its end zeroed)")
	// ErrSectorSize: a sector size is not a power of two in [MinSectorSize, MaxSectorSize],
	// or a File and a Cipher disagree on it.
	ErrSectorSize = errors.New("sector: invalid sector size")
)

// AuthError reports which stored sector of which backing file failed
// authentication. Err is ErrTagMismatch, ErrTruncated or ErrBadHole.
type AuthError struct {
	Path  string
	Index int64
	Err   error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("sector: authentication failed: %s sector %d: %v", e.Path, e.Index, e.Err)
}

// Unwrap lets errors.Is match both ErrAuth and the specific cause.
func (e *AuthError) Unwrap() []error { return []error{ErrAuth, e.Err} }

// ValidSectorSize reports whether n is a power of two in [MinSectorSize, MaxSectorSize].
func ValidSectorSize(n int) bool {
	return n >= MinSectorSize && n <= MaxSectorSize && n&(n-1) == 0
}

func checkSectorSize(n int) error {
	if !ValidSectorSize(n) {
		return fmt.Errorf("%w: %d (want a power of two from %d to %d)", ErrSectorSize, n, MinSectorSize, MaxSectorSize)
	}
	return nil
}

// MaxPlainSize is the largest plaintext size whose backing file size still
// fits in an int64; -1 for an invalid sector size.
func MaxPlainSize(sectorSize int) int64 {
	if !ValidSectorSize(sectorSize) {
		return -1
	}
	ss := int64(sectorSize + Overhead)
	return (math.MaxInt64 - HeaderSize) / ss * int64(sectorSize)
}

// PlainSize converts a backing file size to the plaintext size it holds,
// without opening the file. Backing files shorter than HeaderSize hold 0
// bytes; a trailing stored sector of Overhead bytes or less (which cannot be
// valid) is not counted. It returns -1 for a negative size or an invalid
// sector size.
func PlainSize(backingSize int64, sectorSize int) int64 {
	if !ValidSectorSize(sectorSize) || backingSize < 0 {
		return -1
	}
	if backingSize < HeaderSize {
		return 0
	}
	body := backingSize - HeaderSize
	ss := int64(sectorSize + Overhead)
	full, rem := body/ss, body%ss
	n := full * int64(sectorSize)
	if rem > Overhead {
		n += rem - Overhead
	}
	return n
}

// BackingSize is the backing file size for a plaintext size: 0 for 0, else
// header + full sectors + a short last sector. It returns -1 for a negative
// size, a size above MaxPlainSize or an invalid sector size.
// PlainSize(BackingSize(n, s), s) == n for every valid n.
func BackingSize(plainSize int64, sectorSize int) int64 {
	if !ValidSectorSize(sectorSize) || plainSize < 0 || plainSize > MaxPlainSize(sectorSize) {
		return -1
	}
	if plainSize == 0 {
		return 0
	}
	s := int64(sectorSize)
	full, rem := plainSize/s, plainSize%s
	n := HeaderSize + full*(s+Overhead)
	if rem > 0 {
		n += rem + Overhead
	}
	return n
}

// header is the parsed 18-byte sector-file header.
type header struct {
	id      [FileIDSize]byte
	version uint16 // Version, Version2 or Version3; 0 means Version
}

func (h *header) marshal() []byte {
	b := make([]byte, HeaderSize)
	binary.BigEndian.PutUint16(b, h.ver())
	copy(b[2:], h.id[:])
	return b
}

func (h *header) ver() uint16 {
	if h.version == 0 {
		return Version
	}
	return h.version
}

// aad writes the additional data of sector index into dst and returns it:
// version || file ID || index, and in version 2 a final byte that is 1 for
// the file's last sector, so that a file cut at a sector boundary fails.
func (h *header) aad(dst []byte, index int64, final bool) []byte {
	v := h.ver()
	binary.BigEndian.PutUint16(dst, v)
	copy(dst[2:2+FileIDSize], h.id[:])
	binary.BigEndian.PutUint64(dst[2+FileIDSize:aadSize], uint64(index))
	if v < Version2 {
		return dst[:aadSize]
	}
	dst[aadSize] = 0
	if final {
		dst[aadSize] = 1
	}
	return dst[:aadSizeMax]
}

// isFinal reports whether sector i is the last of a file of size bytes
// and the format flags it (version 2).
func (h *header) isFinal(i, size int64, sectorSize int) bool {
	return h.ver() >= Version2 && size > 0 && i == (size-1)/int64(sectorSize)
}

// parseHeader validates the header bytes; path only names the file in errors.
func parseHeader(b []byte, path string) (*header, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, want %d", ErrHeader, path, len(b), HeaderSize)
	}
	v := binary.BigEndian.Uint16(b)
	if v != Version && v != Version2 && v != Version3 {
		return nil, fmt.Errorf("%w: %s: unknown format version %d (this build reads versions %d to %d)", ErrHeader, path, v, Version, Version3)
	}
	h := &header{version: v}
	copy(h.id[:], b[2:HeaderSize])
	if h.id == ([FileIDSize]byte{}) {
		return nil, fmt.Errorf("%w: %s: all-zero file ID", ErrHeader, path)
	}
	return h, nil
}

// fillAAD writes version || fileID || index (big endian) into dst[:aadSize].
func fillAAD(dst []byte, id *[FileIDSize]byte, index int64) {
	binary.BigEndian.PutUint16(dst, Version)
	copy(dst[2:2+FileIDSize], id[:])
	binary.BigEndian.PutUint64(dst[2+FileIDSize:aadSize], uint64(index))
}

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// log2 of a valid sector size, used to index buffer pools.
func sizeShift(sectorSize int) int { return bits.TrailingZeros(uint(sectorSize)) }

// NewFileHeader returns the header of a new sector file of c's version
// with a fresh random file ID, for callers that give an empty file its ID
// before any content (volumes that bind metadata to it: Version2 and
// later).
func NewFileHeader(c *Cipher) ([]byte, error) {
	if c == nil || !c.v2 {
		return nil, errors.New("sector: new file header: only sector files of version 2 and later are created ahead of their content")
	}
	h := &header{version: c.fileVersion()}
	for h.id == ([FileIDSize]byte{}) {
		if _, err := rand.Read(h.id[:]); err != nil {
			return nil, fmt.Errorf("sector: new file ID: %w", err)
		}
	}
	return h.marshal(), nil
}

// ParseFileID returns the file ID of the header at the start of b, which
// must hold at least HeaderSize bytes (ErrHeader otherwise, or for an
// unknown version or an all-zero ID). path only names the file in errors.
func ParseFileID(b []byte, path string) ([]byte, error) {
	h, err := parseHeader(b, path)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), h.id[:]...), nil
}
