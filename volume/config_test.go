package volume

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigExampleParses(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "config.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Defaults.KeyCheckInterval.D(); got != 5*time.Second {
		t.Errorf("key_check_interval = %v", got)
	}
	v, err := c.Volume("data")
	if err != nil {
		t.Fatal(err)
	}
	if v.OnRevoke != OnRevokeHang || v.OfflineGrace == nil || v.OfflineGrace.D() != 5*time.Minute || v.Key != "alias/app-data" {
		t.Errorf("volume data = %+v", v)
	}
	name, kc, err := c.KMSFor("")
	if err != nil || name != "local" || kc.Type != "local" {
		t.Errorf("KMSFor(\"\") = %q %+v %v", name, kc, err)
	}
	if name, _, err := c.KMSFor("corp"); err != nil || name != "corp" {
		t.Errorf("KMSFor(corp) = %q %v", name, err)
	}
	if c.Policy.RequireCustomerKey || c.KeyInUseWindow() != DefaultKeyInUseWindow {
		t.Errorf("[policy] = %+v", c.Policy)
	}
}

func TestDefaultConfig(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	name, kc, err := c.KMSFor("")
	if err != nil || name != DefaultKMSName || kc.Type != "local" || kc.Path != DefaultKMSPath() {
		t.Fatalf("default KMS = %q %+v %v", name, kc, err)
	}
	if c.Defaults.KeyCheckInterval.D() != DefaultKeyCheckInterval || c.Defaults.OfflineGrace.D() != DefaultOfflineGrace || c.Defaults.OnRevoke != OnRevokeEIO {
		t.Errorf("defaults = %+v", c.Defaults)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "encvol.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigGood(t *testing.T) {
	p := writeConfig(t, `
[kms.a]
type = "local"
path = "kms"
[defaults]
key_check_interval = "500ms"
offline_grace = "0s"
[volumes.v]
backing = "b"
mountpoint = "/mnt/v"
sector_size = 512
import_from = "plain"
`)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if c.KMS["a"].Path != filepath.Join(dir, "kms") {
		t.Errorf("relative kms path not resolved: %q", c.KMS["a"].Path)
	}
	if c.Volumes["v"].Backing != filepath.Join(dir, "b") {
		t.Errorf("relative backing not resolved: %q", c.Volumes["v"].Backing)
	}
	jobs, err := c.ImportJobs()
	if err != nil || len(jobs) != 1 || jobs[0].Name != "v" || jobs[0].PlainDir != filepath.Join(dir, "plain") || jobs[0].Target.Backing != filepath.Join(dir, "b") || jobs[0].Target.KMSName != "a" {
		t.Errorf("import jobs %+v %v (import_from resolved against the file's directory)", jobs, err)
	}
	if c.Defaults.KeyCheckInterval.D() != 500*time.Millisecond || c.Defaults.OfflineGrace.D() != 0 || c.Defaults.OnRevoke != "eio" {
		t.Errorf("defaults = %+v", c.Defaults)
	}
	if name, _, err := c.KMSFor(""); err != nil || name != "a" {
		t.Errorf("the only KMS is the default: %q %v", name, err)
	}
	if _, _, err := c.KMSFor("b"); err == nil || !strings.Contains(err.Error(), `no KMS named "b"`) {
		t.Errorf("unknown KMS: %v", err)
	}
}

func TestConfigBad(t *testing.T) {
	local := "[kms.a]\ntype = \"local\"\npath = \"/k\"\n"
	cases := []struct{ name, body, want string }{
		{"unknown top key", "colour = 1\n" + local, "unknown key colour"},
		{"unknown kms key", "[kms.a]\ntype = \"local\"\npath = \"/k\"\npaht = \"x\"\n", "unknown key kms.a.paht"},
		{"unknown volume key", local + "[volumes.v]\nbacking = \"/b\"\nmountpiont = \"/m\"\n", "unknown key volumes.v.mountpiont"},
		{"syntax", local + "[defaults\n", "line 5"},
		{"bare number duration", local + "[defaults]\nkey_check_interval = 5\n", "key_check_interval"},
		{"bad duration", local + "[defaults]\noffline_grace = \"soon\"\n", `"soon" is not a duration`},
		{"too short interval", local + "[defaults]\nkey_check_interval = \"1ms\"\n", "shorter than the minimum"},
		{"bad on_revoke", local + "[defaults]\non_revoke = \"panic\"\n", `on_revoke = "panic"`},
		{"no kms", "[defaults]\non_revoke = \"eio\"\n", "no [kms.NAME] table"},
		{"kms without type", "[kms.a]\npath = \"/k\"\n", "[kms.a]: type is missing"},
		{"local without path", "[kms.a]\ntype = \"local\"\n", "[kms.a]: type = \"local\" needs path"},
		{"unknown default kms", local + "[defaults]\nkms = \"b\"\n", `kms = "b": no [kms.b] table`},
		{"volume without backing", local + "[volumes.v]\nmountpoint = \"/m\"\n", "[volumes.v]: backing is missing"},
		{"volume unknown kms", local + "[volumes.v]\nbacking = \"/b\"\nkms = \"z\"\n", "[volumes.v]: kms = \"z\""},
		{"volume bad sector", local + "[volumes.v]\nbacking = \"/b\"\nsector_size = 1000\n", "sector_size: 1000 is not a power of two"},
		{"volume bad options", local + "[volumes.v]\nbacking = \"/b\"\noptions = \"ro,frobnicate\"\n", `unknown mount option "frobnicate"`},
		{"wrong type", local + "[volumes.v]\nbacking = 3\n", "backing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.body)
			_, err := LoadConfig(p)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.body)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestKMSForAmbiguous(t *testing.T) {
	p := writeConfig(t, "[kms.a]\ntype = \"local\"\npath = \"/a\"\n[kms.b]\ntype = \"local\"\npath = \"/b\"\n")
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.KMSFor(""); err == nil || !strings.Contains(err.Error(), "--kms NAME") {
		t.Errorf("two KMS and no default: %v", err)
	}
}

func TestFindConfig(t *testing.T) {
	if _, err := FindConfig(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("an explicit missing file must be an error")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if _, err := os.Stat(SystemConfigPath); err == nil {
		t.Logf("%s exists; skipping the lookup order check", SystemConfigPath)
		return
	}
	if p, err := FindConfig(""); err != nil || p != "" {
		t.Errorf("no file: %q %v", p, err)
	}
	want := filepath.Join(dir, "encvol", "encvol.toml")
	if err := os.MkdirAll(filepath.Dir(want), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(want, []byte("[kms.a]\ntype=\"local\"\npath=\"/k\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := FindConfig(""); err != nil || p != want {
		t.Errorf("user file: %q %v", p, err)
	}
}

func TestMountOptions(t *testing.T) {
	o, err := ParseMountOptions("rw,nodev,nosuid,noauto,user,nofail,_netdev,defaults,x-systemd.automount,config=/etc/e.toml,kms=corp,key_check_interval=500ms,offline_grace=1m,on_revoke=hang,allow_other,ro,debug")
	if err != nil {
		t.Fatal(err)
	}
	if o.Config != "/etc/e.toml" || o.KMS != "corp" || o.KeyCheckInterval != 500*time.Millisecond ||
		o.OfflineGrace == nil || *o.OfflineGrace != time.Minute || o.OnRevoke != "hang" || o.AllowOther == nil || !*o.AllowOther ||
		o.ReadOnly == nil || !*o.ReadOnly || !o.Debug {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range []string{"frob", "config=", "key_check_interval=5", "on_revoke=maybe", "size=1G"} {
		if _, err := ParseMountOptions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/t\04`: `/t\04`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveMountPrecedence(t *testing.T) {
	_, backing, h := newTestVolume(t)
	mnt := t.TempDir()
	p := writeConfig(t, `
[kms.fake]
type = "local"
path = "/k1"
[kms.other]
type = "local"
path = "/k2"
[defaults]
key_check_interval = "3s"
on_revoke = "hang"
on_key_event = "true"
[volumes.v]
backing = "`+backing+`"
mountpoint = "`+mnt+`"
offline_grace = "0s"
options = "ro,key_check_interval=7s"
`)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	// The header names KMS "fake", which this configuration knows.
	spec, err := c.ResolveMount([]string{"v"}, MountOptionSet{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.KMS != "fake" || !spec.ReadOnly || spec.KeyCheckInterval != 7*time.Second || spec.OfflineGrace != 0 ||
		spec.OnRevoke != "hang" || spec.OnKeyEvent != "true" || spec.Header.VolumeID != h.VolumeID || spec.Name != "v" {
		t.Errorf("by name: %+v", spec)
	}
	o, err := ParseMountOptions("rw,kms=other,offline_grace=1m,on_revoke=eio")
	if err != nil {
		t.Fatal(err)
	}
	spec, err = c.ResolveMount([]string{backing, mnt}, o)
	if err != nil {
		t.Fatal(err)
	}
	if spec.KMS != "other" || spec.ReadOnly || spec.KeyCheckInterval != 3*time.Second || spec.OfflineGrace != time.Minute || spec.OnRevoke != "eio" {
		t.Errorf("by path with -o: %+v", spec)
	}
	if _, err := c.ResolveMount([]string{backing}, MountOptionSet{}); err == nil || !strings.Contains(err.Error(), "no MOUNTPOINT given") {
		t.Errorf("path without mountpoint: %v", err)
	}
	if _, err := c.ResolveMount([]string{t.TempDir(), mnt}, MountOptionSet{}); err == nil || !strings.Contains(err.Error(), "is not an encvol volume") {
		t.Errorf("not a volume: %v", err)
	}
}
