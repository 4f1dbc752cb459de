package volume

import (
	"fmt"
	"strings"
	"time"
)

// MountOptionSet is a parsed `-o` option string. Pointers and empty
// strings mean "not given", so options from the configuration and the
// command line can be layered.
type MountOptionSet struct {
	Config           string // config=FILE: configuration file (for mount(8) and fstab)
	KMS              string // kms=NAME
	KeyCheckInterval time.Duration
	OfflineGrace     *time.Duration
	OnRevoke         string
	ReadOnly         *bool
	AllowOther       *bool
	Debug            bool
	Foreground       bool // "foreground": like -f, handy in fstab for debugging
}

// ignoredMountOptions are what mount(8), fstab and systemd pass along that
// mean nothing to a FUSE volume or are already its behaviour: FUSE mounts
// are nodev and nosuid regardless, and noauto/nofail/_netdev/x-* steer
// mount(8) and systemd, not the file system.
var ignoredMountOptions = map[string]bool{
	"rw": true, "defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "owner": true, "group": true, "nofail": true, "_netdev": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "noexec": true,
	"atime": true, "noatime": true, "relatime": true, "strictatime": true, "nodiratime": true,
	"async": true, "default_permissions": true, "loud": true, "silent": true,
}

// ParseMountOptions parses a comma-separated option string as given to
// `encvol mount -o` or found in fstab. Unknown options are an error, so a
// typo cannot silently change what a mount does.
func ParseMountOptions(s string) (MountOptionSet, error) {
	var o MountOptionSet
	err := o.Merge(s)
	return o, err
}

// Merge parses s on top of o; later options win.
func (o *MountOptionSet) Merge(s string) error {
	t, f := true, false
	for _, opt := range strings.Split(s, ",") {
		opt = strings.TrimSpace(opt)
		if opt == "" {
			continue
		}
		key, val, hasVal := strings.Cut(opt, "=")
		switch key {
		case "config":
			if val == "" {
				return fmt.Errorf("mount option config= needs a file")
			}
			o.Config = val
		case "kms":
			if val == "" {
				return fmt.Errorf("mount option kms= needs a KMS name")
			}
			o.KMS = val
		case "key_check_interval", "offline_grace":
			var d Duration
			if err := d.UnmarshalText([]byte(val)); err != nil {
				return fmt.Errorf("mount option %s: %w", key, err)
			}
			if key == "key_check_interval" {
				if d.D() < MinKeyCheckInterval {
					return fmt.Errorf("mount option key_check_interval=%s is shorter than the minimum %s", val, MinKeyCheckInterval)
				}
				o.KeyCheckInterval = d.D()
			} else {
				g := d.D()
				o.OfflineGrace = &g
			}
		case "on_revoke":
			if val != OnRevokeEIO && val != OnRevokeHang {
				return fmt.Errorf("mount option on_revoke=%s: want %s or %s", val, OnRevokeEIO, OnRevokeHang)
			}
			o.OnRevoke = val
		case "ro":
			o.ReadOnly = &t
		case "rw":
			o.ReadOnly = &f
		case "allow_other":
			o.AllowOther = &t
		case "debug":
			o.Debug = true
		case "foreground":
			o.Foreground = true
		default:
			if hasVal {
				// x-systemd.*, comment=… and similar carry values meant for
				// other programs.
				if strings.HasPrefix(key, "x-") || key == "comment" {
					continue
				}
				return fmt.Errorf("unknown mount option %q (known: config=, kms=, key_check_interval=, offline_grace=, on_revoke=, ro, rw, allow_other, debug)", opt)
			}
			if ignoredMountOptions[key] || strings.HasPrefix(key, "x-") {
				continue
			}
			return fmt.Errorf("unknown mount option %q (known: config=, kms=, key_check_interval=, offline_grace=, on_revoke=, ro, rw, allow_other, debug)", opt)
		}
	}
	return nil
}
