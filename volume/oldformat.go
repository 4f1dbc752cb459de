package volume

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// OldFormatNote says what a volume of a header version before 3 lacks and
// the command that converts it; "" for a current volume. A mount logs it
// once, fsck reports it.
func OldFormatNote(h *keywrap.Header) string {
	if h.AuthHoles() {
		return ""
	}
	if h.AuthMeta() {
		return fmt.Sprintf("volume format version %d: an all-zero sector in a backing file reads as a hole (zeros), so a sector "+
			"zeroed in the backing directory is not detected, and a symlink target moved to another symlink still reads; "+
			"format version %d authenticates holes and binds symlink targets to their symlink, "+
			"and `encvol copy VOLUME NEWNAME` writes a copy in it",
			h.Version, keywrap.HeaderVersionHoles)
	}
	return fmt.Sprintf("volume format version %d: the mode and owner of its files and directories are not authenticated, "+
		"nor is a file's end (a file cut at a sector boundary reads as shorter), nor are holes (a zeroed sector reads as zeros), "+
		"nor is a symlink target bound to its symlink; "+
		"format version %d authenticates all four, and `encvol copy VOLUME NEWNAME` writes a copy in it",
		h.Version, keywrap.HeaderVersionHoles)
}

// useFormat sets the content cipher and, when given, the names codec to
// the format of the volume's header version.
func useFormat(h *keywrap.Header, c *sector.Cipher, nc *names.Codec) {
	switch {
	case h.AuthHoles():
		c.UseVersion3()
	case h.AuthMeta():
		c.UseVersion2()
	default:
		return
	}
	if nc != nil {
		nc.SetAuthMeta()
		if h.AuthHoles() {
			nc.SetBindLinks()
		}
	}
}

// noteOldFormat logs OldFormatNote once, when the volume is mounted.
func noteOldFormat(log zerolog.Logger, h *keywrap.Header) {
	if note := OldFormatNote(h); note != "" {
		log.Warn().Int("format_version", h.Version).Msg(note)
	}
}
