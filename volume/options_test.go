package volume

import (
	"strings"
	"testing"
	"time"
)

func TestMountOptionFlags(t *testing.T) {
	o, err := ParseMountOptions("noexec,noatime,exec,nodiratime,sync,nosymfollow,nosuid,nodev,nonempty,relatime,noxattr")
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[MountFlag]bool{
		FlagNoExec: false, FlagNoAtime: false, FlagNoDirAtime: true, FlagSync: true, FlagNoSymFollow: true,
		FlagNoXattr: true,
	} {
		if o.Flags.Has(flag) != want {
			t.Errorf("flag %d: %v, want %v", flag, o.Flags.Has(flag), want)
		}
	}
	if !o.NonEmpty {
		t.Error("nonempty not parsed")
	}

	// The configuration's options, then the command line's: what the
	// command line names wins, the rest stays.
	base, _ := ParseMountOptions("noexec,noatime,sync,noxattr")
	top, _ := ParseMountOptions("exec,nodiratime,xattr")
	got := layerOptions(base, top).Flags
	for flag, want := range map[MountFlag]bool{
		FlagNoExec: false, FlagNoAtime: true, FlagNoDirAtime: true, FlagSync: true, FlagNoSymFollow: false,
		FlagNoXattr: false,
	} {
		if got.Has(flag) != want {
			t.Errorf("layered flag %d: %v, want %v", flag, got.Has(flag), want)
		}
	}

	for opt, want := range map[string]string{
		"suid":           "mount option suid is refused: encvol mounts are always nosuid",
		"dev":            "mount option dev is refused: encvol mounts are always nodev",
		"ro,strictatime": "mount option strictatime is refused", "norelatime": "mount option norelatime is refused",
		"dirsync": "mount option dirsync is refused", "lazytime": "mount option lazytime is refused",
		"mand": "mount option mand is refused", "max_read=4096": `unknown mount option "max_read=4096"`,
		"auto_unmount": `unknown mount option "auto_unmount"`,
	} {
		if _, err := ParseMountOptions(opt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want an error saying %q, got %v", opt, want, err)
		}
	}
}

// TestMountOptionCacheTimeout: cache_timeout= takes a duration from 0s (no
// caching) to MaxCacheTimeout and reaches the mount; anything else is
// refused by name.
func TestMountOptionCacheTimeout(t *testing.T) {
	o, err := ParseMountOptions("cache_timeout=5s")
	if err != nil || o.CacheTimeout == nil || *o.CacheTimeout != 5*time.Second {
		t.Fatalf("cache_timeout=5s: %v %v", o.CacheTimeout, err)
	}
	if (MountSpec{CacheTimeout: o.CacheTimeout}).fsCacheTimeout() != 5*time.Second {
		t.Error("5s does not reach the file system")
	}
	o, err = ParseMountOptions("cache_timeout=0s")
	if err != nil || (MountSpec{CacheTimeout: o.CacheTimeout}).fsCacheTimeout() >= 0 {
		t.Errorf("cache_timeout=0s must turn caching off: %v", err)
	}
	if (MountSpec{}).fsCacheTimeout() != 0 {
		t.Error("no option must leave the file system's default")
	}
	for _, bad := range []string{"cache_timeout=", "cache_timeout=soon", "cache_timeout=-1s", "cache_timeout=2h"} {
		if _, err := ParseMountOptions(bad); err == nil || !strings.Contains(err.Error(), "cache_timeout") {
			t.Errorf("%s: %v, want an error naming cache_timeout", bad, err)
		}
	}
}
