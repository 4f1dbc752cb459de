package volume

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseMountOptions: any option string (from fstab, mount(8) or -o)
// is either refused with an error or parsed; a parsed one means the same
// when repeated, since later options win and repeating changes nothing.
func FuzzParseMountOptions(f *testing.F) {
	for _, s := range []string{
		"", "ro", "rw,allow_other", "config=/etc/encvol/encvol.toml,noauto,nofail,_netdev",
		"kms=corp,key_check_interval=2s,offline_grace=0s,on_revoke=eio",
		"on_revoke=hang,debug,foreground", "x-systemd.automount,comment=x=y", "key_check_interval=1ns",
		"offline_grace=-5m", " ro , , rw ", "unknown", "config=",
		"noexec,noatime,exec,nodiratime,sync,nosymfollow,nonempty", "suid", "nodev,nosuid,relatime", "strictatime",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseMountOptions(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("%q: empty error", s)
			}
			return
		}
		if o.KeyCheckInterval != 0 && o.KeyCheckInterval < MinKeyCheckInterval {
			t.Fatalf("%q: key_check_interval %v below the minimum accepted", s, o.KeyCheckInterval)
		}
		if o.OnRevoke != "" && o.OnRevoke != OnRevokeEIO && o.OnRevoke != OnRevokeHang {
			t.Fatalf("%q: on_revoke %q accepted", s, o.OnRevoke)
		}
		twice, err := ParseMountOptions(s + "," + s)
		if err != nil {
			t.Fatalf("%q repeated: %v", s, err)
		}
		if !reflect.DeepEqual(o, twice) {
			t.Fatalf("%q: once %+v, repeated %+v", s, o, twice)
		}
	})
}

// FuzzParseConfig: any configuration file is either refused with an error
// or yields a configuration whose KMS choice and volumes resolve to an
// answer or an error, never a panic.
func FuzzParseConfig(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "config.example.toml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(example))
	f.Add("")
	f.Add("[kms.local]\ntype = \"local\"\npath = \"kms\"\n")
	f.Add("[defaults]\nkms = \"a\"\nkey_check_interval = \"1s\"\noffline_grace = \"0s\"\non_revoke = \"eio\"\n" +
		"[kms.a]\ntype = \"aws\"\nendpoint = \"http://127.0.0.1:1\"\nregion = \"us-east-1\"\n" +
		"[volumes.v]\nbacking = \"b\"\nmountpoint = \"m\"\nkey = \"alias/k\"\noptions = \"ro,allow_other\"\n")
	f.Add("[volumes.x]\nbacking = 3\n")
	f.Add("[kms]\n[kms.\"\"]\ntype = \"local\"\n")
	dir := f.TempDir()
	path := filepath.Join(dir, "encvol.toml")
	f.Fuzz(func(t *testing.T, data string) {
		c, err := ParseConfig(path, []byte(data))
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		_, _, _ = c.KMSFor("")
		for name, v := range c.Volumes {
			_, _ = c.ResolveMount([]string{name}, MountOptionSet{})
			_, _ = c.ResolveMount([]string{v.Backing, filepath.Join(dir, "mnt")}, MountOptionSet{ReadOnly: new(true)})
		}
	})
}
