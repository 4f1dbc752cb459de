package sector

import (
	"cmp"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The hole map of a Version3 sector file: the sector ranges that may be
// holes (all-zero stored sectors). Anywhere else an all-zero stored sector
// is an authentication failure (ErrZeroed), so zeroing a sector of the
// backing file no longer reads as zeros.
//
// The map only has to cover the real holes, not match them: a sealed
// sector inside it still authenticates itself. So it is extended before a
// hole is made (a write past the end, an extending truncate), and a crash
// leaves it too large, never too small. While a File writes, the map on
// the backing file only grows; the sectors written into former holes are
// dropped from it by SettleHoles, once they are durable (holesettle.go).

// HolesXattr is the backing extended attribute that holds the sealed hole
// map. Files without holes have none.
const HolesXattr = "user.encvol.holes"

// HolesInfo starts the additional data of a sealed hole map; the sector-file
// version and the file ID follow. At 30 bytes it cannot equal the 27-byte
// additional data of a sector sealed under the same key.
const HolesInfo = "encvol holes\x00"

// holesAADSize is len(HolesInfo) + version + file ID.
const holesAADSize = len(HolesInfo) + 2 + FileIDSize

// MaxHoleExtents bounds the map, so the attribute stays far below the one
// block some file systems give all of a file's attributes. Beyond it the
// smallest holes are written as sealed zeros (fitExtents): the map never
// covers a sector that holds data.
const MaxHoleExtents = 64

// holeMapFormat is the first plaintext byte of a hole map.
const holeMapFormat = 1

// ErrZeroed: (Version3) an all-zero stored sector outside the file's hole
// map, where the file never had a hole: the sector was zeroed.
var ErrZeroed = errors.New("all-zero sector outside the file's hole map (zeroed in the backing file)")

// ErrHoleMap: the file's hole map is malformed or fails authentication, so
// none of its holes can be trusted.
var ErrHoleMap = errors.New("sector: hole map damaged or not this file's")

// Extent is the sector range [Start, End).
type Extent struct{ Start, End int64 }

// holeMap is a decoded map: sorted extents, none empty, none touching.
type holeMap struct {
	h   *header // the file header it belongs to
	ext []Extent
}

func (m *holeMap) contains(i int64) bool {
	if m == nil {
		return false
	}
	k, _ := slices.BinarySearchFunc(m.ext, i, func(e Extent, i int64) int {
		switch {
		case e.End <= i:
			return -1
		case e.Start > i:
			return 1
		}
		return 0
	})
	return k < len(m.ext) && m.ext[k].Start <= i && i < m.ext[k].End
}

// covers reports whether every sector of [lo, hi) is in the map.
func (m *holeMap) covers(lo, hi int64) bool {
	if lo >= hi {
		return true
	}
	if m == nil {
		return false
	}
	// Extents never touch, so one extent holds the whole range or none.
	i, j := m.overlapRange(lo, hi)
	return j == i+1 && m.ext[i].Start <= lo && hi <= m.ext[i].End
}

// normalizeExtents sorts ext in place, drops empty extents, joins those
// that touch, and merges the closest neighbours until at most limit are
// left (a superset of the sectors: only for the map in memory that
// SettleHoles writes later, holesettle.go).
func normalizeExtents(ext []Extent, limit int) []Extent {
	slices.SortFunc(ext, func(a, b Extent) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	merged := ext[:0]
	for _, e := range ext {
		if e.End <= e.Start {
			continue
		}
		if n := len(merged); n > 0 && e.Start <= merged[n-1].End {
			merged[n-1].End = max(merged[n-1].End, e.End)
			continue
		}
		merged = append(merged, e)
	}
	return mergeClosest(merged, limit)
}

// mergeClosest merges neighbours of ext (sorted, disjoint) in place until
// at most limit extents are left, the smallest gaps first (the fewest
// sealed sectors lose the hole check), the first of equal gaps first.
// Closing one gap leaves every other gap as it was, so this closes the
// len(ext)-limit smallest at once.
func mergeClosest(ext []Extent, limit int) []Extent {
	excess := len(ext) - max(limit, 1)
	if excess <= 0 {
		return ext
	}
	gap := func(k int) int64 { return ext[k+1].Start - ext[k].End }
	order := make([]int, len(ext)-1)
	for k := range order {
		order[k] = k
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(gap(a), gap(b)) })
	closed := make([]bool, len(ext)-1)
	for _, k := range order[:excess] {
		closed[k] = true
	}
	out := ext[:1]
	for k := 1; k < len(ext); k++ {
		if closed[k-1] {
			out[len(out)-1].End = ext[k].End
		} else {
			out = append(out, ext[k])
		}
	}
	return out
}

// encodeHoles is the plaintext of a map: format byte, extent count
// (uint16) and each extent's start and end sector (uint64), big endian.
func encodeHoles(ext []Extent) []byte {
	b := make([]byte, 3, 3+16*len(ext))
	b[0] = holeMapFormat
	binary.BigEndian.PutUint16(b[1:], uint16(len(ext)))
	for _, e := range ext {
		b = binary.BigEndian.AppendUint64(b, uint64(e.Start))
		b = binary.BigEndian.AppendUint64(b, uint64(e.End))
	}
	return b
}

// decodeHoles parses a map's plaintext and checks that it is normalized
// (sorted, non-empty, non-touching extents within the addressable range),
// as encodeHoles writes it.
func decodeHoles(b []byte) ([]Extent, error) {
	if len(b) < 3 || b[0] != holeMapFormat {
		return nil, fmt.Errorf("%w: unknown hole map format", ErrHoleMap)
	}
	n := int(binary.BigEndian.Uint16(b[1:]))
	if n > MaxHoleExtents || len(b) != 3+16*n {
		return nil, fmt.Errorf("%w: %d bytes for %d extents", ErrHoleMap, len(b), n)
	}
	ext := make([]Extent, n)
	prev := int64(-1)
	for k := range ext {
		s := binary.BigEndian.Uint64(b[3+16*k:])
		e := binary.BigEndian.Uint64(b[3+16*k+8:])
		if s >= e || e > 1<<62 || int64(s) <= prev {
			return nil, fmt.Errorf("%w: extent %d [%d, %d) out of order", ErrHoleMap, k, s, e)
		}
		ext[k] = Extent{int64(s), int64(e)}
		prev = int64(e)
	}
	return ext, nil
}

// holesAAD is HolesInfo || version || file ID.
func (h *header) holesAAD() []byte {
	a := make([]byte, 0, holesAADSize)
	a = append(a, HolesInfo...)
	a = binary.BigEndian.AppendUint16(a, h.ver())
	return append(a, h.id[:]...)
}

// sealHoles seals a map's plaintext: nonce || ciphertext || tag under the
// file's sector key, with holesAAD.
func sealHoles(aead cipher.AEAD, ng *nonceGen, h *header, ext []Extent) []byte {
	pt := encodeHoles(ext)
	out := make([]byte, NonceSize, NonceSize+len(pt)+TagSize)
	ng.next(out)
	return aead.Seal(out, out[:NonceSize], pt, h.holesAAD())
}

// openHoles authenticates and decodes a sealed map.
func openHoles(aead cipher.AEAD, h *header, sealed []byte) ([]Extent, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrHoleMap, len(sealed))
	}
	pt, err := aead.Open(nil, sealed[:NonceSize], sealed[NonceSize:], h.holesAAD())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHoleMap, ErrTagMismatch)
	}
	return decodeHoles(pt)
}
