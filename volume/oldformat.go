package volume

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// OldFormatNote says what a volume of a header version before 5 lacks and
// the command that converts it; "" for a current volume. A mount logs it
// once, fsck reports it.
func OldFormatNote(h *keywrap.Header) string {
	if h.BindEntries() {
		return ""
	}
	if h.AuthHoles() {
		return fmt.Sprintf("volume format version %d: a file or directory moved, copied or swapped to another name in the backing "+
			"directory reads under that name; format version %d binds each to its name and directory, "+
			"and `encvol copy VOLUME NEWNAME` writes a copy in it",
			h.Version, keywrap.HeaderVersionEntries)
	}
	if h.AuthMeta() {
		return fmt.Sprintf("volume format version %d: an all-zero sector in a backing file reads as a hole (zeros), so a sector "+
			"zeroed in the backing directory is not detected, and a symlink target moved to another symlink still reads; "+
			"nor is a file or directory bound to its name; "+
			"format version %d authenticates holes and binds symlink targets, files and directories to their name, "+
			"and `encvol copy VOLUME NEWNAME` writes a copy in it",
			h.Version, keywrap.HeaderVersionEntries)
	}
	return fmt.Sprintf("volume format version %d: the mode and owner of its files and directories are not authenticated, "+
		"nor is a file's end (a file cut at a sector boundary reads as shorter), nor are holes (a zeroed sector reads as zeros), "+
		"nor is a symlink target, file or directory bound to its name; "+
		"format version %d authenticates all of them, and `encvol copy VOLUME NEWNAME` writes a copy in it",
		h.Version, keywrap.HeaderVersionEntries)
}

// useFormat sets the content cipher and the names codec, each when given,
// to the format of the volume's header version.
func useFormat(h *keywrap.Header, c *sector.Cipher, nc *names.Codec) {
	if !h.AuthMeta() {
		return
	}
	switch {
	case c == nil:
	case h.AuthHoles():
		c.UseVersion3()
	default:
		c.UseVersion2()
	}
	if nc != nil {
		nc.SetAuthMeta()
		if h.AuthHoles() {
			nc.SetBindLinks()
		}
		if h.BindEntries() {
			nc.SetBindEntries()
		}
	}
}

// noteOldFormat logs OldFormatNote once, when the volume is mounted.
func noteOldFormat(log zerolog.Logger, h *keywrap.Header) {
	if note := OldFormatNote(h); note != "" {
		log.Warn().Int("format_version", h.Version).Msg(note)
	}
}
