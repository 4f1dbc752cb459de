package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/encvol/encvol/kms"
)

// withMark sends kms.KeyCheckHeader: v on one call, inside the SigV4
// signature (added before the finalize step signs) or outside it.
func withMark(v string, signed bool) func(*awskms.Options) {
	mw := func(ctx context.Context, req any) {
		if r, ok := req.(*smithyhttp.Request); ok {
			r.Header.Set(kms.KeyCheckHeader, v)
		}
	}
	return func(o *awskms.Options) {
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			if signed {
				return s.Build.Add(middleware.BuildMiddlewareFunc("testMark", func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
					mw(ctx, in.Request)
					return next.HandleBuild(ctx, in)
				}), middleware.After)
			}
			return s.Finalize.Add(middleware.FinalizeMiddlewareFunc("testMark", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				mw(ctx, in.Request)
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
		})
	}
}

// TestKeyCheckHeader: a signed mark makes a Decrypt a key check, audited
// as summaries and logged at debug level; an unsigned mark changes
// nothing; a malformed signed mark is refused.
func TestKeyCheckHeader(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	ctx := context.Background()
	md := createKey(t, c, "key checks")
	encCtx := map[string]string{"encvol:volume-id": "vol-checked"}
	gdk, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: md.KeyId, NumberOfBytes: aws.Int32(32), EncryptionContext: encCtx})
	if err != nil {
		t.Fatal(err)
	}
	in := &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx}
	for range 5 {
		if _, err := c.Decrypt(ctx, in, withMark("mnt-srv", true)); err != nil {
			t.Fatalf("marked Decrypt: %v", err)
		}
	}
	if _, err := c.Decrypt(ctx, in, withMark("mnt-srv", false)); err != nil {
		t.Fatalf("Decrypt with an unsigned mark: %v", err)
	}
	if _, err := c.Decrypt(ctx, in, withMark("mnt srv", true)); apiCode(err) != "ValidationException" || !strings.Contains(err.Error(), kms.KeyCheckHeader) {
		t.Fatalf("Decrypt with a malformed mark: %v, want a ValidationException naming %s", err, kms.KeyCheckHeader)
	}
	if _, err := c.Decrypt(ctx, in, withMark("mnt-srv; last", true)); err != nil {
		t.Fatalf("last marked Decrypt: %v", err)
	}

	recs, err := env.store.Audit(ctx, kms.AuditFilter{KeyRef: *md.KeyId, Operation: kms.OpDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		switch {
		case r.KeyCheck == nil:
			got = append(got, "plain/"+r.Principal)
		default:
			got = append(got, r.KeyCheck.Event+"/"+r.KeyCheck.Mount+"/"+r.Principal+"/"+strings.Repeat("x", r.KeyCheck.Checks))
		}
	}
	want := "first/mnt-srv/admin/x plain/admin summary/mnt-srv/admin/xxxx last/mnt-srv/admin/x"
	if strings.Join(got, " ") != want {
		t.Fatalf("Decrypt records:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	levels := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(env.logs.String()), "\n") {
		var l struct{ Level, Message, Op, KeyCheck string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "kms request" && l.Op == "Decrypt" {
			levels[l.Level]++
		}
	}
	// The six checks are routine; the unsigned one and the refused one
	// are not.
	if levels["debug"] != 6 || levels["info"] != 2 {
		t.Fatalf("Decrypt request log levels %v, want 6 debug (the checks) and 2 info", levels)
	}
}
