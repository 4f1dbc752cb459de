package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kmsclient"
)

func TestShareGrantNames(t *testing.T) {
	for _, ro := range []bool{false, true} {
		name := ShareGrantName("vol-0123abcd", ro)
		vol, gotRO, ok := parseShareGrantName(name)
		if !ok || vol != "vol-0123abcd" || gotRO != ro {
			t.Fatalf("parse(%q) = %q, %v, %v", name, vol, gotRO, ok)
		}
	}
	for _, bad := range []string{"", "encvol-share:", "share:vol-1", "encvol-share::read-only"} {
		if _, _, ok := parseShareGrantName(bad); ok {
			t.Errorf("%q parsed as a share grant", bad)
		}
	}
}

func TestSharedReadOnly(t *testing.T) {
	ro, rw := ShareGrantName("vol-1", true), ShareGrantName("vol-1", false)
	for _, c := range []struct {
		acc  kmsclient.DecryptAccess
		want bool
	}{
		{kmsclient.DecryptAccess{}, false}, // owner, admin, policy, or a KMS that does not say
		{kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{ro}}, true},
		{kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{ro, ro}}, true}, // directly and through a group
		{kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{ro, rw}}, false},
		{kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{ro, kms.UnnamedGrant}}, false},
		{kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{ro, "made-by-hand"}}, false},
		{kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{ShareGrantName("vol-2", true)}}, false},
	} {
		if got := SharedReadOnly(c.acc, "vol-1"); got != c.want {
			t.Errorf("SharedReadOnly(%+v) = %v, want %v", c.acc, got, c.want)
		}
	}
}

// TestUnlockSharedReadOnly: the unlock learns from the KMS that the key is
// held through a read-only share only.
func TestUnlockSharedReadOnly(t *testing.T) {
	f, dir, h := newTestVolume(t)
	f.grants = []string{ShareGrantName(h.VolumeID, true)}
	u, err := Unlock(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if !u.SharedReadOnly {
		t.Fatal("unlock through a read-only share: SharedReadOnly not set")
	}
	f.grants = nil
	u2, err := Unlock(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	if u2.SharedReadOnly {
		t.Fatal("unlock as the owner: SharedReadOnly set")
	}
}

// TestMonitorShareTurnsReadOnly: a read-write mount whose access shrinks to
// a read-only share closes its gate, saying to mount again; when the share
// is read-write again the gate reopens. A read-only mount keeps serving.
func TestMonitorShareTurnsReadOnly(t *testing.T) {
	fx := newMonitorFixture(t, 0, "")
	ctx := context.Background()
	vol := fx.mon.opt.Header.VolumeID
	fx.kms.grants = []string{ShareGrantName(vol, false)}
	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 0)

	fx.kms.grants = []string{ShareGrantName(vol, true)}
	fx.mon.Check(ctx)
	fx.expect(t, false, StateSharedReadOnly, 1)
	if cause := fx.mon.Status().GateCause; !strings.Contains(cause, "mount it again") {
		t.Fatalf("gate cause %q", cause)
	}
	fx.kms.grants = []string{ShareGrantName(vol, false)}
	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 2)

	fx.mon.opt.ReadOnly = true
	fx.kms.grants = []string{ShareGrantName(vol, true)}
	fx.mon.Check(ctx)
	fx.expect(t, true, "Enabled", 2)
}

// TestShareRefusals: the embedded KMS and the service key are refused
// before anything is granted, with the sentence that says why and what to
// run instead.
func TestShareRefusals(t *testing.T) {
	_, dir, h := newTestVolume(t)
	c := &Config{Defaults: Defaults{KMS: "corp"}}
	tgt := ShareTarget{Arg: dir, Backing: dir, Header: h, KMS: "local", KMSConfig: kmsclient.Config{Type: kmsclient.TypeLocal, Path: "/var/lib/encvol/kms"}}
	_, err := c.CheckShareable(context.Background(), nil, tgt)
	if !errors.Is(err, ErrNotShareable) || !strings.Contains(err.Error(), "encvol kms serve --store /var/lib/encvol/kms") {
		t.Fatalf("local KMS: %v", err)
	}
	err = c.serviceKeyShareRefusal(ShareTarget{Arg: "data", Backing: "/srv/enc/data", Header: h, KMS: "corp"})
	want := "`encvol copy data --backing /srv/enc/data-shared --key alias/shared`"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "service key") {
		t.Fatalf("service key refusal %q lacks %s", err, want)
	}
	for _, with := range []string{"", "group:", "a b", "arn:aws:iam::000000000000:user/", "x/y"} {
		if CheckGrantee(with) == nil {
			t.Errorf("--with %q accepted", with)
		}
	}
	for _, with := range []string{"bob", "group:team", "arn:aws:iam::000000000000:user/bob", "arn:aws:iam::000000000000:group/team"} {
		if err := CheckGrantee(with); err != nil {
			t.Errorf("--with %q: %v", with, err)
		}
	}
}
