package keywrap

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// HKDF-SHA256 info labels for the subkeys of the DK (salt is empty). They are
// part of the on-disk format: changing one makes every volume unreadable.
const (
	LabelContent   = "encvol v1 content"
	LabelNames     = "encvol v1 names"
	LabelHeaderMAC = "encvol v1 header-mac"
	// LabelSnapshotManifest derives the HMAC-SHA256 key of a snapshot's
	// manifest (docs/format.md, "Snapshots").
	LabelSnapshotManifest = "encvol v1 snapshot-manifest"
)

// SubkeyLen is the length of every subkey in Subkeys. The names subkey is 32
// bytes too: package names expands it further with its own labels.
const SubkeyLen = 32

// DeriveSubkey returns HKDF-SHA256(ikm = dk, salt = empty, info = label) of n
// bytes in locked memory. The computation runs under Secretly and the heap copy
// of the output is zeroed before it returns.
func DeriveSubkey(dk *Key, label string, n int) (*Key, error) {
	if dk == nil {
		return nil, fmt.Errorf("keywrap: derive %q: nil key", label)
	}
	if n <= 0 || n > 255*sha256.Size {
		return nil, fmt.Errorf("keywrap: derive %q: length %d out of range", label, n)
	}
	out, err := allocKey(n)
	if err != nil {
		return nil, fmt.Errorf("keywrap: derive %q: %w", label, err)
	}
	dk.mu.RLock()
	defer dk.mu.RUnlock()
	if dk.mem == nil {
		out.Close()
		return nil, fmt.Errorf("keywrap: derive %q: %w", label, ErrClosed)
	}
	var derr error
	Secretly(func() {
		b, err := hkdf.Key(sha256.New, dk.mem[:dk.n], nil, label, n)
		if err != nil {
			derr = err
			return
		}
		copy(out.mem, b)
		clear(b)
	})
	if derr != nil {
		out.Close()
		return nil, fmt.Errorf("keywrap: derive %q: %w", label, derr)
	}
	return out, nil
}

// Subkeys are the three 32-byte keys derived from a DK. Closing them does not
// close the DK.
type Subkeys struct {
	Content   *Key // sector content (package sector expands it per file)
	Names     *Key // names, symlinks, xattrs (package names expands it)
	HeaderMAC *Key // HMAC-SHA256 key of the volume header
}

// DeriveSubkeys derives Content, Names and HeaderMAC, each SubkeyLen bytes.
func DeriveSubkeys(dk *Key) (*Subkeys, error) {
	s := &Subkeys{}
	var err error
	if s.Content, err = DeriveSubkey(dk, LabelContent, SubkeyLen); err != nil {
		return nil, err
	}
	if s.Names, err = DeriveSubkey(dk, LabelNames, SubkeyLen); err != nil {
		s.Close()
		return nil, err
	}
	if s.HeaderMAC, err = DeriveSubkey(dk, LabelHeaderMAC, SubkeyLen); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close zeroizes all three subkeys; idempotent, nil-safe.
func (s *Subkeys) Close() {
	if s == nil {
		return
	}
	s.Content.Close()
	s.Names.Close()
	s.HeaderMAC.Close()
}
