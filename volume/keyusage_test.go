package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/kmsclient"
)

func TestKeyUsageGuard(t *testing.T) {
	now := time.Now()
	vols := []KeyUse{{VolumeID: "vol-1", Backing: "/srv/b", Mountpoint: "/mnt/b", Mounted: true}, {VolumeID: "vol-2", LastUsed: &now}}
	for _, c := range []struct {
		op       string
		force    bool
		keys     int
		vols     []KeyUse
		refused  bool
		noteWant string
	}{
		{GuardDisable, false, 2, nil, false, ""},
		{GuardDisable, false, 2, vols, true, ""},
		{GuardDisable, true, 2, vols, false, "--force"},
		{GuardDisable, false, 1, vols, false, "only customer key"},
		{GuardDisable, false, 0, vols, true, ""}, // the KMS would not list its keys
		{GuardDeletion, false, 1, vols, true, ""},
		{GuardDeletion, true, 1, vols, false, "--force"},
		{GuardDeletion, false, -1, vols, false, "may not administer"},
	} {
		u := &KeyUsage{KMS: "local", KeyID: "k1", Arn: "arn:k1", Aliases: []string{"alias/b"}, CustomerKeys: c.keys, Window: "720h", Volumes: c.vols}
		if c.keys < 0 {
			u.NotAdmin = true
		}
		note, err := u.Guard(c.op, c.force)
		name := fmt.Sprintf("%s force=%v keys=%d volumes=%d", c.op, c.force, c.keys, len(c.vols))
		if c.refused {
			if !errors.Is(err, ErrKeyInUse) {
				t.Errorf("%s: %v, want a refusal", name, err)
				continue
			}
			for _, want := range []string{"alias/b", "vol-1 mounted on /mnt/b", "vol-2", "--force", "1 mounted on this host", "1 unwrapped under it within 720h"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: refusal does not say %q: %v", name, want, err)
				}
			}
			continue
		}
		if err != nil || !strings.Contains(note, c.noteWant) {
			t.Errorf("%s: note %q, err %v; want note with %q", name, note, err, c.noteWant)
		}
	}
}

// TestFindKeyUsage: configured volumes whose header names the key (by ARN,
// found through an alias), volumes in the audit log within the window, and
// a volume rekeyed away placed where it is now.
func TestFindKeyUsage(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	body := fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n[volumes.cfgd]\nbacking = %q\n[volumes.moved]\nbacking = %q\n",
		filepath.Join(dir, "kms"), filepath.Join(dir, "cfgd"), filepath.Join(dir, "moved"))
	fx := &kaFixture{t: t, dir: dir, adm: map[string]kmsclient.Admin{}}
	cfg, err := ParseConfig(filepath.Join(dir, "c.toml"), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	fx.cfg = cfg
	adm, err := kmsclient.NewAdmin(ctx, "local", cfg.KMS["local"])
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	fx.adm["local"] = adm
	a := fx.key("local", "alias/a")
	b := fx.key("local", "alias/b")
	_, hc := fx.volume("cfgd", "local", "alias/a")
	_, hm := fx.volume("moved", "local", "alias/a")
	_, hx := fx.volume("unlisted", "local", "alias/a")
	if _, err := Rekey(ctx, fx.rekeyOpts(filepath.Join(dir, "moved"), "local", "local", "alias/b")); err != nil {
		t.Fatal(err)
	}

	u, err := FindKeyUsage(ctx, cfg, "local", adm, "alias/a")
	if err != nil {
		t.Fatal(err)
	}
	if u.Arn != a.Arn || u.CustomerKeys != 2 || u.AuditNote != "" || len(u.Aliases) != 1 || u.Aliases[0] != "alias/a" {
		t.Fatalf("usage %+v", u)
	}
	got := map[string]KeyUse{}
	for _, v := range u.Volumes {
		got[v.VolumeID] = v
	}
	if v := got[hc.VolumeID]; !v.Configured || v.Name != "cfgd" || v.LastUsed == nil {
		t.Errorf("configured volume: %+v", v)
	}
	if v := got[hm.VolumeID]; v.Configured || v.LastUsed == nil || v.Name != "moved" || v.CurrentKeyID != b.Arn || !strings.Contains(v.Where(), "now under") {
		t.Errorf("volume rekeyed away: %+v", v)
	}
	if v := got[hx.VolumeID]; v.Configured || v.LastUsed == nil || v.Backing != "" {
		t.Errorf("volume in the audit log only: %+v", v)
	}
	if len(got) != 3 {
		t.Errorf("volumes %+v", u.Volumes)
	}

	// A zero window leaves the audit log out: only the configured volume.
	zero := Duration(0)
	cfg.Policy.KeyInUseWindow = &zero
	if u, err = FindKeyUsage(ctx, cfg, "local", adm, a.KeyID); err != nil {
		t.Fatal(err)
	}
	if len(u.Volumes) != 1 || u.Volumes[0].VolumeID != hc.VolumeID || !strings.Contains(u.AuditNote, "key_in_use_window is 0") {
		t.Fatalf("zero window: %+v", u)
	}
	if err := os.RemoveAll(filepath.Join(dir, "cfgd")); err != nil {
		t.Fatal(err)
	}
	if u, err = FindKeyUsage(ctx, cfg, "local", adm, a.Arn); err != nil || len(u.Volumes) != 0 {
		t.Fatalf("no volumes: %+v, %v", u, err)
	}
}
