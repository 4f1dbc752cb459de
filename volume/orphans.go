package volume

import (
	"os"
	"strconv"
	"strings"
)

// MountEntry is one encvol file system in the mount table.
type MountEntry struct {
	Mountpoint string
	Source     string // the backing directory (encvol mounts name it as the source)
}

// EncvolMounts lists the mounts of type fuse.encvol in /proc/self/mountinfo
// that belong to this user (root sees every user's). Together with the
// control sockets it finds mounts whose daemon is gone: the kernel keeps
// such a mount, but every call on it fails with ENOTCONN until it is
// unmounted.
func EncvolMounts() ([]MountEntry, error) {
	var out []MountEntry
	err := scanMountinfo(encvolMountsInto(&out, os.Geteuid()))
	return out, err
}

// encvolMountsInto returns a mountinfo line visitor that appends the
// fuse.encvol mounts of euid (all of them for root) to out. Lines read
// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
// SUPEROPTIONS".
func encvolMountsInto(out *[]MountEntry, euid int) func(fields []string) bool {
	return func(fields []string) bool {
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || fields[sep+1] != "fuse.encvol" {
			return true
		}
		if euid != 0 && !ownedBy(fields[sep+3], euid) {
			return true
		}
		*out = append(*out, MountEntry{Mountpoint: unescapeMountinfo(fields[4]), Source: unescapeMountinfo(fields[sep+2])})
		return true
	}
}

// ownedBy reports whether FUSE super options name uid as the mounting user.
func ownedBy(superOpts string, uid int) bool {
	for _, o := range strings.Split(superOpts, ",") {
		if v, ok := strings.CutPrefix(o, "user_id="); ok {
			n, err := strconv.Atoi(v)
			return err == nil && n == uid
		}
	}
	return false
}
