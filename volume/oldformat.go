package volume

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/keywrap"
)

// OldFormatNote says what a volume of a header version before 3 lacks and
// the command that converts it; "" for a current volume. A mount logs it
// once, fsck reports it.
func OldFormatNote(h *keywrap.Header) string {
	if h.AuthMeta() {
		return ""
	}
	return fmt.Sprintf("volume format version %d: the mode and owner of its files and directories are not authenticated, "+
		"nor is a file's end (a file cut at a sector boundary reads as shorter); format version %d authenticates both, "+
		"and `encvol copy VOLUME NEWNAME` writes a copy in it",
		h.Version, keywrap.HeaderVersionAuth)
}

// noteOldFormat logs OldFormatNote once, when the volume is mounted.
func noteOldFormat(log zerolog.Logger, h *keywrap.Header) {
	if note := OldFormatNote(h); note != "" {
		log.Warn().Int("format_version", h.Version).Msg(note)
	}
}
