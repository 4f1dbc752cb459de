package server

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/encvol/encvol/kms"
)

// grantsHeader returns the kms.GrantsHeader of a call's raw response and
// whether it was there.
func grantsHeader(t *testing.T, md middleware.Metadata) (string, bool) {
	t.Helper()
	raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response)
	if !ok {
		t.Fatal("no raw HTTP response in the result metadata")
	}
	v, ok := raw.Header[kms.GrantsHeader]
	if !ok {
		return "", false
	}
	return v[0], true
}

// TestGroupGrantOnTheWire: a grant to an IAM group ARN of the principals
// file admits its members; ListGrants names the group by its ARN; a
// Decrypt admitted by grants only carries their names in
// X-Encvol-Grants, the owner's does not.
func TestGroupGrantOnTheWire(t *testing.T) {
	env := startServer(t, Options{})
	env.srv.SetPrincipals(&Principals{Principal: []Principal{admin, reader}, Group: []Group{{Name: "team", Members: []string{reader.Name}}}})
	ctx := context.Background()
	owner, member := newClient(env.url, admin), newClient(env.url, reader)
	md := createKey(t, owner, "team key")
	encCtx := map[string]string{"encvol:volume-id": "vol-1"}
	gdk, err := owner.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: md.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: encCtx})
	if err != nil {
		t.Fatal(err)
	}
	const name = "encvol-share:vol-1:read-only"
	groupARN := "arn:aws:iam::" + kms.DefaultAccount + ":group/team"
	if _, err := owner.CreateGrant(ctx, &awskms.CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: aws.String(groupARN), Name: aws.String(name),
		Operations:  []types.GrantOperation{types.GrantOperationDecrypt, types.GrantOperationDescribeKey},
		Constraints: &types.GrantConstraints{EncryptionContextEquals: encCtx}}); err != nil {
		t.Fatalf("CreateGrant to a group ARN: %v", err)
	}
	if _, err := owner.CreateGrant(ctx, &awskms.CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: aws.String("group:nobody"),
		Operations: []types.GrantOperation{types.GrantOperationDecrypt}}); apiCode(err) != "NotFoundException" {
		t.Fatalf("CreateGrant to an unknown group: %v, want NotFoundException", err)
	}
	lg, err := owner.ListGrants(ctx, &awskms.ListGrantsInput{KeyId: md.KeyId})
	if err != nil || len(lg.Grants) != 1 || aws.ToString(lg.Grants[0].GranteePrincipal) != groupARN {
		t.Fatalf("ListGrants: %v %+v", err, lg)
	}
	out, err := member.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx})
	if err != nil {
		t.Fatalf("member Decrypt: %v", err)
	}
	if v, ok := grantsHeader(t, out.ResultMetadata); !ok || v != "encvol-share%3Avol-1%3Aread-only" {
		t.Fatalf("member's %s = %q (%v)", kms.GrantsHeader, v, ok)
	}
	out, err = owner.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := grantsHeader(t, out.ResultMetadata); ok {
		t.Fatalf("owner's Decrypt carries %s: %q", kms.GrantsHeader, v)
	}
	// Out of the group, out of the grant.
	env.srv.SetPrincipals(&Principals{Principal: []Principal{admin, reader}, Group: []Group{{Name: "team"}}})
	if _, err := member.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("Decrypt after leaving the group: %v", err)
	}
}
