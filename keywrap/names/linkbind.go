package names

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// LabelLinkEntry starts the additional data that binds a symlink target to
// its entry (header version 4; docs/format.md, "Symlink targets").
const LabelLinkEntry = "encvol v4 symlink entry"

// ErrLinkEntry: on a volume that binds targets, a well-formed stored
// target that fails authentication for its entry; it always comes wrapped
// together with ErrNameAuth.
var ErrLinkEntry = errors.New("the symlink target does not authenticate for this entry (tampered, or moved here from another symlink)")

// SetBindLinks marks the codec as one of a volume whose symlink targets
// are bound to their entry. Call it before the codec is shared.
func (c *Codec) SetBindLinks() { c.bindLinks = true }

// BindLinks reports whether symlink targets are bound to their entry.
func (c *Codec) BindLinks() bool { return c.bindLinks && !c.plaintext }

// LinkAAD is the additional data of the target of symlink name in the
// directory with ID dirID:
//
//	LabelLinkEntry || 0x00 || dirID (16 bytes) || uint16be(len(name)) || name
//
// The directory ID has a fixed length and the name is length-prefixed, so
// no two entries share it.
func LinkAAD(dirID []byte, name string) ([]byte, error) {
	if len(dirID) != DirIDLen {
		return nil, wrap(ErrDirIDCorrupt, "directory ID has %d bytes, want %d", len(dirID), DirIDLen)
	}
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("symlink name: %w", err)
	}
	aad := make([]byte, 0, len(LabelLinkEntry)+1+DirIDLen+2+len(name))
	aad = append(aad, LabelLinkEntry...)
	aad = append(aad, 0)
	aad = append(aad, dirID...)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(name)))
	return append(aad, name...), nil
}

// linkAAD is LinkAAD on a volume that binds targets, else empty.
func (c *Codec) linkAAD(dirID []byte, name string) ([]byte, error) {
	if !c.bindLinks {
		return nil, nil
	}
	return LinkAAD(dirID, name)
}
