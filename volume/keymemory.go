package volume

import (
	"errors"
	"fmt"

	"github.com/rs/zerolog"
)

// ErrKeyNotLocked is matched by CheckKeyMemory's refusal: the volume's keys
// could not be locked in memory, so they could reach swap.
var ErrKeyNotLocked = errors.New("volume keys cannot be locked in memory")

// keysLocked reports whether the DK and every subkey are mlock'd.
func (u *Unlocked) keysLocked() bool {
	return u.DK.Locked() && u.Subkeys.Content.Locked() && u.Subkeys.Names.Locked() && u.Subkeys.HeaderMAC.Locked()
}

// CheckKeyMemory refuses keys that are not locked in memory: mlock fails
// without CAP_IPC_LOCK when RLIMIT_MEMLOCK is too small (a non-root mount,
// a container, a systemd unit with LimitMEMLOCK=0), and a key that can be
// swapped out can end up on a disk that nobody erases. allowSwap accepts
// that risk with a warning in the log of every such mount.
func CheckKeyMemory(u *Unlocked, allowSwap bool, log zerolog.Logger) error {
	if u.keysLocked() {
		return nil
	}
	if allowSwap {
		log.Warn().Str("volume", u.Header.VolumeID).
			Msg("the volume keys are NOT locked in memory (allow_swap): the kernel may write them to swap; raise the memory lock limit (ulimit -l, LimitMEMLOCK=) to lock them")
		return nil
	}
	return withKind(ErrKeyNotLocked, fmt.Errorf(
		"the data key of volume %s cannot be locked in memory (mlock failed: no CAP_IPC_LOCK and RLIMIT_MEMLOCK too small), so it could be written to swap: "+
			"raise the memory lock limit (ulimit -l unlimited, or LimitMEMLOCK=infinity in a systemd unit), or mount with --allow-swap (-o allow_swap) to accept that risk",
		u.Header.VolumeID))
}
