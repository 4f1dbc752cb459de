package fusefs

import (
	"os"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// EXPERIMENT-REMOVE: temporary knobs for measurements.
func expTweak(o *fs.Options) {
	if os.Getenv("ENCVOL_EXP_NOWB") != "" {
		o.ExtraCapabilities &^= fuse.CAP_WRITEBACK_CACHE
	}
	if os.Getenv("ENCVOL_EXP_KILLPRIV") != "" {
		o.ExtraCapabilities |= fuse.CAP_HANDLE_KILLPRIV_V2
	}
	if os.Getenv("ENCVOL_EXP_NOKP") != "" {
		o.ExtraCapabilities &^= fuse.CAP_HANDLE_KILLPRIV_V2
	}
	if os.Getenv("ENCVOL_EXP_IGNSEC") != "" {
		o.IgnoreSecurityLabels = true
	}
}
