package volume

import (
	"os"
	"strconv"
	"strings"
)

// FSType is the file system type every encvol mount carries in the mount
// table ("fuse." plus the name the file system gives itself).
const FSType = "fuse.encvol"

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

// MountType returns the file system type of what is mounted at path (as
// the mount table spells it, e.g. "fuse.encvol", "tmpfs"), or "" when
// nothing is. path must be canonical (CanonicalMountpoint). With several
// mounts stacked on path it names the topmost, the one an unmount would
// remove. Only the mount table is read: path itself is not touched, so a
// hung FUSE server cannot block the answer.
func MountType(path string) (string, error) {
	var fstype string
	err := scanMountinfo(mountTypeInto(path, &fstype))
	return fstype, err
}

// mountTypeInto returns a mountinfo line visitor that sets *fstype to the
// type of the last mount at path. Later lines are later mounts, which sit
// on top of earlier ones at the same place.
func mountTypeInto(path string, fstype *string) func(fields []string) bool {
	return func(fields []string) bool {
		if l, ok := parseMountinfoLine(fields); ok && l.mountpoint == path {
			*fstype = l.fstype
		}
		return true
	}
}

// encvolMountsInto returns a mountinfo line visitor that appends the
// fuse.encvol mounts of euid (all of them for root) to out.
func encvolMountsInto(out *[]MountEntry, euid int) func(fields []string) bool {
	return func(fields []string) bool {
		l, ok := parseMountinfoLine(fields)
		if !ok || l.fstype != FSType {
			return true
		}
		if euid != 0 && !ownedBy(l.superOpts, euid) {
			return true
		}
		*out = append(*out, MountEntry{Mountpoint: l.mountpoint, Source: l.source})
		return true
	}
}

// mountinfoLine is what encvol reads of one mount table line.
type mountinfoLine struct {
	mountpoint, fstype, source, superOpts string
}

// parseMountinfoLine reads the fields of one /proc/self/mountinfo line,
// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
// SUPEROPTIONS"; ok is false for a line of another shape.
func parseMountinfoLine(fields []string) (mountinfoLine, bool) {
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+3 >= len(fields) {
		return mountinfoLine{}, false
	}
	return mountinfoLine{
		mountpoint: unescapeMountinfo(fields[4]),
		fstype:     fields[sep+1],
		source:     unescapeMountinfo(fields[sep+2]),
		superOpts:  fields[sep+3],
	}, true
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
