package kms

import (
	"crypto/rand"
	"crypto/sha256"
	"reflect"
	"testing"
	"time"
)

func TestTagsAndDescription(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md, err := s.CreateKey(bg, "alice", CreateKeyInput{Description: "first", Tags: []Tag{{"team", "storage"}, {"env", "test"}}})
	if err != nil {
		t.Fatal(err)
	}
	tags := func() []Tag {
		t.Helper()
		got, err := s.ListResourceTags(bg, "alice", md.KeyID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := tags(), []Tag{{"env", "test"}, {"team", "storage"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("tags after CreateKey = %v, want %v", got, want)
	}
	if err := s.TagResource(bg, "alice", md.Arn, []Tag{{"env", "prod"}, {"owner", "ops"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.UntagResource(bg, "alice", md.KeyID, []string{"team", "absent"}); err != nil {
		t.Fatal(err)
	}
	if got, want := tags(), []Tag{{"env", "prod"}, {"owner", "ops"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("tags after TagResource/UntagResource = %v, want %v", got, want)
	}
	for _, bad := range [][]Tag{{{"aws:x", "y"}}, {{"", "y"}}, {{"k", string(make([]byte, 257))}}, {{"k", "1"}, {"k", "2"}}} {
		wantCode(t, s.TagResource(bg, "alice", md.KeyID, bad), CodeTag)
		_, err := s.CreateKey(bg, "alice", CreateKeyInput{Tags: bad})
		wantCode(t, err, CodeTag)
	}
	wantCode(t, s.TagResource(bg, "bob", md.KeyID, []Tag{{"x", "y"}}), CodeAccessDenied)
	_, err = s.ListResourceTags(bg, "bob", md.KeyID)
	wantCode(t, err, CodeAccessDenied)

	if err := s.UpdateKeyDescription(bg, "alice", md.KeyID, "second"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.DescribeKey(bg, "alice", md.KeyID); got.Description != "second" {
		t.Fatalf("description after UpdateKeyDescription = %q", got.Description)
	}
	wantCode(t, s.UpdateKeyDescription(bg, "bob", md.KeyID, "mine"), CodeAccessDenied)

	if _, err := s.ScheduleKeyDeletion(bg, "alice", md.KeyID, 7); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.UpdateKeyDescription(bg, "alice", md.KeyID, "third"), CodeInvalidState)
	wantCode(t, s.TagResource(bg, "alice", md.KeyID, []Tag{{"x", "y"}}), CodeInvalidState)
	if len(tags()) != 2 {
		t.Fatal("ListResourceTags must work on a key pending deletion")
	}
	svc, err := s.ServiceKey(bg, "alice")
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.TagResource(bg, LocalPrincipal, svc.KeyID, []Tag{{"x", "y"}}), CodeUnsupportedOperation)
	wantCode(t, s.UpdateKeyDescription(bg, LocalPrincipal, svc.KeyID, "x"), CodeUnsupportedOperation)
}

func TestListKeyRotations(t *testing.T) {
	clk := newClock()
	s := openTest(t, t.TempDir(), clk)
	md := mustKey(t, s, "alice")
	rots, err := s.ListKeyRotations(bg, "alice", md.KeyID, false)
	if err != nil || len(rots) != 0 {
		t.Fatalf("rotations of a new key = %v, %v", rots, err)
	}
	if err := s.RotateKeyOnDemand(bg, "alice", md.KeyID); err != nil {
		t.Fatal(err)
	}
	onDemandAt := clk.Now()
	if err := s.EnableKeyRotation(bg, "alice", md.KeyID, 90); err != nil {
		t.Fatal(err)
	}
	clk.Advance(91 * 24 * time.Hour)
	rots, err = s.ListKeyRotations(bg, "alice", md.KeyID, false)
	if err != nil || len(rots) != 2 {
		t.Fatalf("rotations = %+v, %v; want an on-demand and an automatic one", rots, err)
	}
	if rots[0].Type != RotationOnDemand || !rots[0].Date.Equal(onDemandAt) || rots[0].Version != 2 || rots[0].Current ||
		rots[1].Type != RotationAutomatic || rots[1].Version != 3 || !rots[1].Current {
		t.Fatalf("rotations = %+v", rots)
	}
	all, err := s.ListKeyRotations(bg, "alice", md.KeyID, true)
	if err != nil || len(all) != 3 || all[0].Version != 1 || all[0].Type != "" {
		t.Fatalf("all key material = %+v, %v", all, err)
	}
	_, err = s.ListKeyRotations(bg, "bob", md.KeyID, false)
	wantCode(t, err, CodeAccessDenied)
}

// TestRotationTypeOfOldStores: versions written before the rotation type
// was recorded are told apart by the on-demand count.
func TestRotationTypeOfOldStores(t *testing.T) {
	at := func(d int) time.Time { return time.Date(2030, 1, d, 0, 0, 0, 0, time.UTC) }
	last := at(3)
	k := &keyRec{OnDemand: 1, LastOnDemand: &last, Versions: []*versionRec{
		{Version: 1, Created: at(1)}, {Version: 2, Created: at(2)}, {Version: 3, Created: at(3)},
	}}
	if got := k.rotationType(1); got != RotationAutomatic {
		t.Errorf("version 2 = %s, want AUTOMATIC", got)
	}
	if got := k.rotationType(2); got != RotationOnDemand {
		t.Errorf("version 3 = %s, want ON_DEMAND", got)
	}
	k.OnDemand, k.LastOnDemand = 2, nil
	if k.rotationType(1) != RotationOnDemand || k.rotationType(2) != RotationOnDemand {
		t.Error("with two on-demand rotations counted, both versions are on-demand ones")
	}
}

func TestDeleteImportedKeyMaterial(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	md, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{Origin: OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 32)
	rand.Read(material)
	imp := func() {
		t.Helper()
		p, err := s.GetParametersForImport(bg, LocalPrincipal, md.KeyID, WrapRSAOAEPSHA256, "RSA_2048")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ImportKeyMaterial(bg, LocalPrincipal, md.KeyID, p.ImportToken, wrapMaterial(t, p, sha256.New(), material), nil); err != nil {
			t.Fatal(err)
		}
	}
	imp()
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.DeleteImportedKeyMaterial(bg, "bob", md.KeyID), CodeAccessDenied)
	if err := s.DeleteImportedKeyMaterial(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.DescribeKey(bg, LocalPrincipal, md.KeyID); got.KeyState != StatePendingImport || got.ValidTo != nil {
		t.Fatalf("after DeleteImportedKeyMaterial: %+v", got)
	}
	_, _, err = s.Decrypt(bg, LocalPrincipal, blob, nil, "")
	wantCode(t, err, CodeInvalidState)
	if err := s.DeleteImportedKeyMaterial(bg, LocalPrincipal, md.KeyID); err != nil {
		t.Fatalf("second DeleteImportedKeyMaterial: %v", err)
	}
	imp()
	if pt, _, err := s.Decrypt(bg, LocalPrincipal, blob, nil, ""); err != nil {
		t.Fatalf("Decrypt after re-importing the same material: %v", err)
	} else {
		clear(pt)
	}
	normal := mustKey(t, s, LocalPrincipal)
	wantCode(t, s.DeleteImportedKeyMaterial(bg, LocalPrincipal, normal.KeyID), CodeUnsupportedOperation)
}

func TestListRetirableGrants(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	k1, k2, k3 := mustKey(t, s, "alice"), mustKey(t, s, "alice"), mustKey(t, s, "dave")
	var want []string
	for _, k := range []KeyMetadata{k1, k2, k3} {
		id, _, err := s.CreateGrant(bg, k.Owner, GrantInput{KeyRef: k.KeyID, GranteePrincipal: "bob", RetiringPrincipal: "carol", Operations: []string{OpDecrypt}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
		if _, _, err := s.CreateGrant(bg, k.Owner, GrantInput{KeyRef: k.KeyID, GranteePrincipal: "bob", Operations: []string{OpEncrypt}}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(gs []Grant) map[string]bool {
		m := map[string]bool{}
		for _, g := range gs {
			m[g.GrantID] = true
		}
		return m
	}
	gs, err := s.ListRetirableGrants(bg, "carol", s.PrincipalARN("carol"))
	if err != nil || len(gs) != 3 || !ids(gs)[want[0]] || !ids(gs)[want[1]] || !ids(gs)[want[2]] {
		t.Fatalf("carol's retirable grants = %+v, %v", gs, err)
	}
	gs, err = s.ListRetirableGrants(bg, "alice", "carol")
	if err != nil || len(gs) != 2 || ids(gs)[want[2]] {
		t.Fatalf("carol's retirable grants as alice sees them = %+v, %v", gs, err)
	}
	if gs, _ := s.ListRetirableGrants(bg, "bob", "carol"); len(gs) != 0 {
		t.Fatalf("bob sees carol's retirable grants: %+v", gs)
	}
	_, err = s.ListRetirableGrants(bg, "carol", "arn:aws:iam::999999999999:user/carol")
	wantCode(t, err, CodeInvalidArn)
}
