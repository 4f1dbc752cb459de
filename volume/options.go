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
	NonEmpty         bool // "nonempty": mount over a directory that holds files
	AllowSwap        bool // "allow_swap": mount even if the keys cannot be locked in memory
	Flags            MountFlags
	// CacheTimeout is cache_timeout=DUR: how long the kernel may keep
	// names and attributes without asking; nil: the default.
	CacheTimeout *time.Duration
}

// MaxCacheTimeout bounds cache_timeout=, so a typo ("60h") cannot hide a
// change made behind the mount for days.
const MaxCacheTimeout = time.Hour

// MountFlag is one mount flag that the kernel (and for the access time
// ones, the daemon) enforces on the mounted volume.
type MountFlag uint

// The mount flags encvol honours besides ro/rw. nosuid and nodev are not
// here: every encvol mount has them.
const (
	FlagNoExec      MountFlag = 1 << iota // noexec: execve(2) of a file in the volume fails with EACCES
	FlagNoAtime                           // noatime: reading never changes an access time
	FlagNoDirAtime                        // nodiratime: listing a directory never changes its access time
	FlagSync                              // sync: write(2) returns after the data reached the backing disk
	FlagNoSymFollow                       // nosymfollow: path lookups do not follow symlinks in the volume
	FlagNoXattr                           // noxattr: extended attributes are refused (EOPNOTSUPP), and the kernel stops asking for them
)

// MountFlags is a set of mount flags, each either given on or off or not
// given (so a later layer only overrides what it names).
type MountFlags struct {
	on, set MountFlag
}

// Has reports whether flag is on.
func (f MountFlags) Has(flag MountFlag) bool { return f.on&flag != 0 }

func (f *MountFlags) put(flag MountFlag, on bool) {
	f.set |= flag
	if on {
		f.on |= flag
	} else {
		f.on &^= flag
	}
}

// under returns top layered over f: what top names wins.
func (f MountFlags) under(top MountFlags) MountFlags {
	return MountFlags{on: f.on&^top.set | top.on, set: f.set | top.set}
}

// flagOptions are the options that set or clear a mount flag.
var flagOptions = map[string]struct {
	flag MountFlag
	on   bool
}{
	"noexec": {FlagNoExec, true}, "exec": {FlagNoExec, false},
	"noatime": {FlagNoAtime, true}, "atime": {FlagNoAtime, false},
	"nodiratime": {FlagNoDirAtime, true}, "diratime": {FlagNoDirAtime, false},
	"sync": {FlagSync, true}, "async": {FlagSync, false},
	"nosymfollow": {FlagNoSymFollow, true}, "symfollow": {FlagNoSymFollow, false},
	"noxattr": {FlagNoXattr, true}, "xattr": {FlagNoXattr, false},
	// relatime is the kernel's default; access times are those of the
	// backing files, which the backing file system updates by its own
	// policy when encvol reads them.
	"relatime": {FlagNoAtime, false},
}

// passiveMountOptions are accepted and change nothing: mount(8), fstab and
// systemd pass them along for themselves (noauto, nofail, _netdev, user,
// ...), or they name what every encvol mount already does: nosuid, nodev
// and default_permissions always.
var passiveMountOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "nofail": true, "_netdev": true, "loud": true, "silent": true,
	"nosuid": true, "nodev": true, "default_permissions": true, "nostrictatime": true,
	"nolazytime": true,
}

// refusedMountOptions are real mount options that encvol cannot honour,
// with the reason given to the user.
var refusedMountOptions = map[string]string{
	"suid": "encvol mounts are always nosuid, since a set-user-ID file in a volume that others can write " +
		"(a shared volume, a restored snapshot or copy) would hand its owner's rights to whoever planted it; leave it out",
	"dev": "encvol mounts are always nodev, since a device file in a volume that others can write " +
		"would open that device to whoever planted it; leave it out",
	"strictatime": "reads served from the kernel's page cache never reach encvol, so it cannot update " +
		"the access time on every read; leave it out (relatime) or use noatime",
	"norelatime": "reads served from the kernel's page cache never reach encvol, so it cannot update " +
		"the access time on every read; leave it out (relatime) or use noatime",
	"dirsync":  "encvol does not write directory changes synchronously; leave it out and fsync(2) the directory where it matters",
	"lazytime": "access and change times are those of the backing files; leave it out and set lazytime on the backing file system",
	"mand":     "Linux no longer supports mandatory locks; leave it out",
}

// knownMountOptions lists what the refusal of an unknown option suggests.
const knownMountOptions = "config=, kms=, key_check_interval=, offline_grace=, on_revoke=, cache_timeout=, ro, rw, allow_other, " +
	"noexec, exec, noatime, atime, nodiratime, diratime, sync, async, nosymfollow, symfollow, noxattr, xattr, nonempty, " +
	"allow_swap, debug, foreground"

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
		case "cache_timeout":
			var d Duration
			if err := d.UnmarshalText([]byte(val)); err != nil {
				return fmt.Errorf("mount option cache_timeout: %w", err)
			}
			if d.D() < 0 || d.D() > MaxCacheTimeout {
				return fmt.Errorf("mount option cache_timeout=%s is outside 0s..%s", val, MaxCacheTimeout)
			}
			c := d.D()
			o.CacheTimeout = &c
		case "on_revoke":
			if val != OnRevokeEIO && val != OnRevokeHang {
				return fmt.Errorf("mount option on_revoke=%s: want %s or %s", val, OnRevokeEIO, OnRevokeHang)
			}
			o.OnRevoke = val
		default:
			if hasVal {
				// x-systemd.*, comment=… and similar carry values meant for
				// other programs.
				if strings.HasPrefix(key, "x-") || key == "comment" {
					continue
				}
				return fmt.Errorf("unknown mount option %q (known: %s)", opt, knownMountOptions)
			}
			if err := o.mergeFlag(key); err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeFlag applies one option that takes no value.
func (o *MountOptionSet) mergeFlag(key string) error {
	t, f := true, false
	switch key {
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
	case "nonempty":
		o.NonEmpty = true
	case "allow_swap":
		o.AllowSwap = true
	default:
		if fo, ok := flagOptions[key]; ok {
			o.Flags.put(fo.flag, fo.on)
			return nil
		}
		if why, ok := refusedMountOptions[key]; ok {
			return fmt.Errorf("mount option %s is refused: %s", key, why)
		}
		if !passiveMountOptions[key] && !strings.HasPrefix(key, "x-") {
			return fmt.Errorf("unknown mount option %q (known: %s)", key, knownMountOptions)
		}
	}
	return nil
}
