package server

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/encvol/encvol/kms"
)

const (
	tfRegion  = "eu-west-2"
	tfAccount = "111122223333"
)

func iamUser(name string) string { return "arn:aws:iam::" + tfAccount + ":user/" + name }

// startIdentityServer serves a store with region tfRegion and account
// tfAccount, accepting requests signed for testRegion.
func startIdentityServer(t *testing.T) *testEnv {
	t.Helper()
	return startServerWith(t, Options{}, kms.Options{Region: tfRegion, Account: tfAccount})
}

// TestIdentityOnTheWire: key ARNs, AWSAccountId, principals and error
// messages carry the configured region and account.
func TestIdentityOnTheWire(t *testing.T) {
	env := startIdentityServer(t)
	ctx := context.Background()
	owner, other := newClient(env.url, admin), newClient(env.url, reader)
	md := createKey(t, owner, "identity")
	if want := "arn:aws:kms:" + tfRegion + ":" + tfAccount + ":key/" + aws.ToString(md.KeyId); aws.ToString(md.Arn) != want ||
		aws.ToString(md.AWSAccountId) != tfAccount {
		t.Fatalf("CreateKey: ARN %s, account %s; want %s", aws.ToString(md.Arn), aws.ToString(md.AWSAccountId), want)
	}
	_, err := other.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: md.KeyId})
	if apiCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), iamUser(reader.Name)) ||
		!strings.Contains(err.Error(), aws.ToString(md.Arn)) || !strings.Contains(err.Error(), "kms:DisableKey") {
		t.Fatalf("DisableKey by a stranger: %v", err)
	}
	g, err := owner.CreateGrant(ctx, &awskms.CreateGrantInput{KeyId: md.Arn, GranteePrincipal: aws.String(iamUser(reader.Name)),
		RetiringPrincipal: aws.String(admin.Name), Operations: []types.GrantOperation{types.GrantOperationDescribeKey}})
	if err != nil {
		t.Fatalf("CreateGrant to an IAM user ARN: %v", err)
	}
	lg, err := owner.ListGrants(ctx, &awskms.ListGrantsInput{KeyId: md.KeyId, GranteePrincipal: aws.String(iamUser(reader.Name))})
	if err != nil || len(lg.Grants) != 1 {
		t.Fatalf("ListGrants by grantee ARN: %v %+v", err, lg)
	}
	if e := lg.Grants[0]; aws.ToString(e.GrantId) != aws.ToString(g.GrantId) || aws.ToString(e.GranteePrincipal) != iamUser(reader.Name) ||
		aws.ToString(e.RetiringPrincipal) != iamUser(admin.Name) || aws.ToString(e.IssuingAccount) != "arn:aws:iam::"+tfAccount+":root" {
		t.Fatalf("grant principals: %+v", e)
	}
	if _, err := other.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: md.Arn}); err != nil {
		t.Fatalf("DescribeKey by the grantee: %v", err)
	}
	_, err = owner.CreateGrant(ctx, &awskms.CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: aws.String("arn:aws:iam::999999999999:user/x"),
		Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
	var badArn *types.InvalidArnException
	if !errors.As(err, &badArn) {
		t.Fatalf("grant to another account's principal: %v, want InvalidArnException", err)
	}
	lr, err := other.ListRetirableGrants(ctx, &awskms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(iamUser(admin.Name))})
	if err != nil || len(lr.Grants) != 0 {
		t.Fatalf("ListRetirableGrants by a stranger: %v %+v", err, lr)
	}
	lr, err = owner.ListRetirableGrants(ctx, &awskms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(iamUser(admin.Name))})
	if err != nil || len(lr.Grants) != 1 || aws.ToString(lr.Grants[0].GrantId) != aws.ToString(g.GrantId) {
		t.Fatalf("ListRetirableGrants: %v %+v", err, lr)
	}
}

// TestDescribeKeyFields: the fields Terraform's provider reads.
func TestDescribeKeyFields(t *testing.T) {
	env := startIdentityServer(t)
	c := newClient(env.url, admin)
	md := createKey(t, c, "fields")
	out, err := c.DescribeKey(context.Background(), &awskms.DescribeKeyInput{KeyId: md.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	m := out.KeyMetadata
	//lint:ignore SA1019 Terraform's provider still reads CustomerMasterKeySpec.
	cmks := m.CustomerMasterKeySpec
	if m.KeyManager != types.KeyManagerTypeCustomer || m.KeySpec != types.KeySpecSymmetricDefault ||
		cmks != types.CustomerMasterKeySpecSymmetricDefault || m.KeyUsage != types.KeyUsageTypeEncryptDecrypt ||
		m.Origin != types.OriginTypeAwsKms || aws.ToBool(m.MultiRegion) || !m.Enabled || m.KeyState != types.KeyStateEnabled ||
		!slices.Equal(m.EncryptionAlgorithms, []types.EncryptionAlgorithmSpec{types.EncryptionAlgorithmSpecSymmetricDefault}) ||
		aws.ToString(m.Description) != "fields" || m.CreationDate == nil {
		t.Fatalf("DescribeKey metadata: %+v", m)
	}
}

func TestAsymmetricAndHMACRefused(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	for _, in := range []awskms.CreateKeyInput{
		{KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt},
		{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify},
		{KeySpec: types.KeySpecHmac256, KeyUsage: types.KeyUsageTypeGenerateVerifyMac},
	} {
		_, err := c.CreateKey(context.Background(), &in)
		var unsup *types.UnsupportedOperationException
		if !errors.As(err, &unsup) || !strings.Contains(err.Error(), string(in.KeySpec)) {
			t.Errorf("CreateKey %s: %v, want UnsupportedOperationException naming the spec", in.KeySpec, err)
		}
	}
}

// TestKeyPolicyOnTheWire: CreateKey's Policy and PutKeyPolicy are
// enforced, refused outside the subset, and read back by GetKeyPolicy.
func TestKeyPolicyOnTheWire(t *testing.T) {
	env := startIdentityServer(t)
	ctx := context.Background()
	owner, other := newClient(env.url, admin), newClient(env.url, reader)
	doc := `{"Version":"2012-10-17","Statement":[
	 {"Sid":"Owner","Effect":"Allow","Principal":{"AWS":"` + iamUser(admin.Name) + `"},"Action":"kms:*","Resource":"*"},
	 {"Sid":"ReaderDecrypts","Effect":"Allow","Principal":{"AWS":"` + iamUser(reader.Name) + `"},"Action":"kms:Decrypt","Resource":"*",
	  "Condition":{"StringEquals":{"kms:EncryptionContext:vol":"v1"}}}]}`
	ck, err := owner.CreateKey(ctx, &awskms.CreateKeyInput{Policy: aws.String(doc),
		Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("storage")}}})
	if err != nil {
		t.Fatalf("CreateKey with Policy and Tags: %v", err)
	}
	keyID := ck.KeyMetadata.KeyId
	encCtx := map[string]string{"vol": "v1"}
	gdk, err := owner.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: keyID, KeySpec: types.DataKeySpecAes256, EncryptionContext: encCtx})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx}); err != nil {
		t.Fatalf("Decrypt by the policy's reader: %v", err)
	}
	_, err = other.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: keyID})
	if apiCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "kms:DisableKey") || !strings.Contains(err.Error(), aws.ToString(ck.KeyMetadata.Arn)) {
		t.Fatalf("DisableKey by a principal named only for kms:Decrypt: %v", err)
	}
	gp, err := owner.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: keyID, PolicyName: aws.String("default")})
	if err != nil || aws.ToString(gp.PolicyName) != "default" || !jsonEqual(t, aws.ToString(gp.Policy), doc) {
		t.Fatalf("GetKeyPolicy = %v, %+v", err, gp)
	}
	lp, err := owner.ListKeyPolicies(ctx, &awskms.ListKeyPoliciesInput{KeyId: keyID})
	if err != nil || !slices.Equal(lp.PolicyNames, []string{"default"}) {
		t.Fatalf("ListKeyPolicies = %v, %+v", err, lp)
	}
	_, err = owner.PutKeyPolicy(ctx, &awskms.PutKeyPolicyInput{KeyId: keyID, Policy: aws.String(strings.Replace(doc, `"kms:Decrypt"`, `"kms:ScheduleKeyDeletion"`, 1))})
	var malformed *types.MalformedPolicyDocumentException
	if !errors.As(err, &malformed) || !strings.Contains(err.Error(), `statement 2 (Sid "ReaderDecrypts")`) || !strings.Contains(err.Error(), "kms:ScheduleKeyDeletion") {
		t.Fatalf("PutKeyPolicy outside the subset: %v", err)
	}
	gp2, err := owner.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: keyID})
	if err != nil || aws.ToString(gp2.Policy) != aws.ToString(gp.Policy) {
		t.Fatalf("a refused policy changed the key's policy: %v\n%s", err, aws.ToString(gp2.Policy))
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, a)
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// TestTagsDescriptionRotationsImport: the remaining management operations
// with AWS's shapes and error names.
func TestTagsDescriptionRotationsImport(t *testing.T) {
	env := startIdentityServer(t)
	ctx := context.Background()
	c := newClient(env.url, admin)
	md := createKey(t, c, "before")
	if _, err := c.TagResource(ctx, &awskms.TagResourceInput{KeyId: md.KeyId, Tags: []types.Tag{
		{TagKey: aws.String("b"), TagValue: aws.String("2")}, {TagKey: aws.String("a"), TagValue: aws.String("1")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagResource(ctx, &awskms.UntagResourceInput{KeyId: md.Arn, TagKeys: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	lt, err := c.ListResourceTags(ctx, &awskms.ListResourceTagsInput{KeyId: md.KeyId})
	if err != nil || len(lt.Tags) != 1 || aws.ToString(lt.Tags[0].TagKey) != "a" || aws.ToString(lt.Tags[0].TagValue) != "1" || lt.Truncated {
		t.Fatalf("ListResourceTags = %v, %+v", err, lt)
	}
	_, err = c.TagResource(ctx, &awskms.TagResourceInput{KeyId: md.KeyId, Tags: []types.Tag{{TagKey: aws.String("aws:x"), TagValue: aws.String("y")}}})
	var tagErr *types.TagException
	if !errors.As(err, &tagErr) {
		t.Fatalf("TagResource with the aws: prefix: %v, want TagException", err)
	}
	if _, err := c.UpdateKeyDescription(ctx, &awskms.UpdateKeyDescriptionInput{KeyId: md.KeyId, Description: aws.String("after")}); err != nil {
		t.Fatal(err)
	}
	if d, err := c.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: md.KeyId}); err != nil || aws.ToString(d.KeyMetadata.Description) != "after" {
		t.Fatalf("description after UpdateKeyDescription: %v %+v", err, d)
	}

	if _, err := c.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: md.KeyId}); err != nil {
		t.Fatal(err)
	}
	lr, err := c.ListKeyRotations(ctx, &awskms.ListKeyRotationsInput{KeyId: md.KeyId})
	if err != nil || len(lr.Rotations) != 1 || lr.Rotations[0].RotationType != types.RotationTypeOnDemand ||
		aws.ToString(lr.Rotations[0].KeyId) != aws.ToString(md.Arn) || lr.Rotations[0].RotationDate == nil {
		t.Fatalf("ListKeyRotations = %v, %+v", err, lr)
	}

	_, err = c.DeleteImportedKeyMaterial(ctx, &awskms.DeleteImportedKeyMaterialInput{KeyId: md.KeyId})
	var unsup *types.UnsupportedOperationException
	if !errors.As(err, &unsup) {
		t.Fatalf("DeleteImportedKeyMaterial of an AWS_KMS key: %v, want UnsupportedOperationException", err)
	}
	ext, err := c.CreateKey(ctx, &awskms.CreateKeyInput{Origin: types.OriginTypeExternal})
	if err != nil {
		t.Fatal(err)
	}
	del, err := c.DeleteImportedKeyMaterial(ctx, &awskms.DeleteImportedKeyMaterialInput{KeyId: ext.KeyMetadata.KeyId})
	if err != nil || aws.ToString(del.KeyId) != aws.ToString(ext.KeyMetadata.Arn) {
		t.Fatalf("DeleteImportedKeyMaterial of a key without material: %v %+v", err, del)
	}
}
