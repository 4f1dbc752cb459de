package names

import (
	"encoding/binary"
	"fmt"

	"github.com/encvol/encvol/keywrap"
)

// LabelEntryMAC derives the key of the entry tags that bind the metadata
// of a regular file or directory to its name and directory (header
// version 5; docs/format.md, "Version 5: entries bound to their name").
const LabelEntryMAC = "encvol v5 names entry-mac"

// EntryTagLen is the length of an entry tag.
const EntryTagLen = 16

// SetBindEntries marks the codec as one of a volume whose regular files
// and directories are bound to their entry. Call it before the codec is
// shared.
func (c *Codec) SetBindEntries() { c.bindEntries = true }

// BindEntries reports whether regular files and directories are bound to
// their entry.
func (c *Codec) BindEntries() bool { return c.bindEntries }

// EntryTag returns
//
//	HMAC-SHA256(entry MAC key, dirID (16 bytes) || uint16be(len(name)) || name)[:16]
//
// which names the entry name of the directory with ID dirID without
// showing either. The directory ID has a fixed length and the name is
// length-prefixed, so no two entries share the input.
func (c *Codec) EntryTag(dirID []byte, name string) ([]byte, error) {
	if len(dirID) != DirIDLen {
		return nil, wrap(ErrDirIDCorrupt, "directory ID has %d bytes, want %d", len(dirID), DirIDLen)
	}
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("entry name: %w", err)
	}
	release, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	msg := make([]byte, 0, 2+len(name))
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(name)))
	msg = append(msg, name...)
	out := make([]byte, EntryTagLen)
	keywrap.Secretly(func() {
		st := c.entryPool.Get().(*sivScratch)
		copy(out, st.syntheticIV(dirID, msg))
		c.entryPool.Put(st)
	})
	return out, nil
}
