package volume

import (
	"bufio"
	"fmt"
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	return parseEncvolMounts(bufio.NewScanner(f), os.Geteuid())
}

// parseEncvolMounts reads mountinfo lines: "ID PARENT MAJ:MIN ROOT
// MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
func parseEncvolMounts(sc *bufio.Scanner, euid int) ([]MountEntry, error) {
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var out []MountEntry
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) {
			continue
		}
		if fields[sep+1] != "fuse.encvol" {
			continue
		}
		if euid != 0 && !ownedBy(fields[sep+3:], euid) {
			continue
		}
		out = append(out, MountEntry{Mountpoint: unescapeMountinfo(fields[4]), Source: unescapeMountinfo(fields[sep+2])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// ownedBy reports whether FUSE super options name uid as the mounting user.
func ownedBy(superOpts []string, uid int) bool {
	if len(superOpts) == 0 {
		return false
	}
	for _, o := range strings.Split(superOpts[0], ",") {
		if v, ok := strings.CutPrefix(o, "user_id="); ok {
			n, err := strconv.Atoi(v)
			return err == nil && n == uid
		}
	}
	return false
}
