package kmsclient_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kmsclient"
)

// TestAWSConstrainedGrantAndAccess: a grant made with an
// EncryptionContextEquals constraint through the remote backend binds the
// grantee to that context, ListGrants returns the constraint, and a Decrypt
// asked for its access reports the grant by name for the grantee and no
// grant for the owner.
func TestAWSConstrainedGrantAndAccess(t *testing.T) {
	ts := startServer(t, "")
	alice, bob := ts.admin(t, "alice"), ts.admin(t, "bob")
	ctx := context.Background()
	k := mustCreateKey(t, alice, "")
	ec1, ec2 := volCtx("vol-1"), volCtx("vol-2")
	_, blob1, _, err := alice.GenerateDataKey(ctx, k.KeyID, ec1)
	if err != nil {
		t.Fatal(err)
	}
	_, blob2, _, err := alice.GenerateDataKey(ctx, k.KeyID, ec2)
	if err != nil {
		t.Fatal(err)
	}
	const name = "encvol-share:vol-1:read-only"
	id, err := alice.CreateGrant(ctx, kmsclient.GrantInput{KeyRef: k.KeyID, Grantee: "bob", Name: name,
		Operations: []string{"Decrypt", "DescribeKey"}, Constraints: &kmsclient.GrantConstraints{EncryptionContextEquals: ec1}})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := alice.ListGrants(ctx, k.KeyID)
	if err != nil || len(gs) != 1 || gs[0].GrantID != id || gs[0].Constraints == nil || !maps.Equal(gs[0].Constraints.EncryptionContextEquals, ec1) {
		t.Fatalf("ListGrants = %+v, %v", gs, err)
	}
	var acc kmsclient.DecryptAccess
	dk, err := bob.Decrypt(kmsclient.WithDecryptAccess(ctx, &acc), k.KeyID, blob1, ec1)
	if err != nil {
		t.Fatal(err)
	}
	dk.Close()
	if !acc.ViaGrants || !slices.Equal(acc.Grants, []string{name}) {
		t.Fatalf("bob's access = %+v", acc)
	}
	_, err = bob.Decrypt(ctx, k.KeyID, blob2, ec2)
	wantKind(t, "bob's Decrypt of another volume", err, kmsclient.ErrAccessDenied)

	acc = kmsclient.DecryptAccess{ViaGrants: true}
	dk, err = alice.Decrypt(kmsclient.WithDecryptAccess(ctx, &acc), k.KeyID, blob1, ec1)
	if err != nil {
		t.Fatal(err)
	}
	dk.Close()
	if acc.ViaGrants {
		t.Fatalf("owner's access = %+v", acc)
	}
}

// TestLocalDecryptAccess: the embedded KMS acts as the store's
// administrator, never through a grant.
func TestLocalDecryptAccess(t *testing.T) {
	ctx := context.Background()
	c, err := kmsclient.NewAdmin(ctx, "local", kmsclient.Config{Type: "local", Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := mustCreateKey(t, c, "")
	_, blob, _, err := c.GenerateDataKey(ctx, k.KeyID, volCtx("v"))
	if err != nil {
		t.Fatal(err)
	}
	acc := kmsclient.DecryptAccess{ViaGrants: true, Grants: []string{kms.UnnamedGrant}}
	dk, err := c.Decrypt(kmsclient.WithDecryptAccess(ctx, &acc), "", blob, volCtx("v"))
	if err != nil {
		t.Fatal(err)
	}
	dk.Close()
	if acc.ViaGrants || acc.Grants != nil {
		t.Fatalf("local access = %+v", acc)
	}
}
