package kmsclient

import (
	"context"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/encvol/encvol/kms"
)

// DecryptAccess is how a KMS admitted a Decrypt, as far as it tells: a
// Decrypt whose context carries one (WithDecryptAccess) fills it in.
type DecryptAccess struct {
	// ViaGrants is set when the caller may use the key only through
	// grants; Grants then names every grant that admitted the call
	// (kms.UnnamedGrant for one without a name). When it is not set the
	// caller owns or administers the key, a key policy admits it, or the
	// KMS does not say (AWS KMS itself): nothing restricts the caller
	// beyond what the KMS enforces.
	ViaGrants bool
	Grants    []string
}

type decryptAccessKey struct{}

// WithDecryptAccess returns ctx asking the Decrypt made with it to report
// into a. Both backends honour it: the remote one reads kms.GrantsHeader,
// which `encvol kms serve` sends; the local one asks its store.
func WithDecryptAccess(ctx context.Context, a *DecryptAccess) context.Context {
	return context.WithValue(ctx, decryptAccessKey{}, a)
}

func decryptAccessOf(ctx context.Context) *DecryptAccess {
	a, _ := ctx.Value(decryptAccessKey{}).(*DecryptAccess)
	return a
}

// ReportDecryptAccess is how a Client implementation answers
// WithDecryptAccess: it records that the Decrypt made with ctx was
// admitted through grants (their names) or without one (nil).
func ReportDecryptAccess(ctx context.Context, grants []string) {
	if a := decryptAccessOf(ctx); a != nil {
		a.ViaGrants, a.Grants = grants != nil, grants
	}
}

// grantsHeader reads kms.GrantsHeader from the response of a call whose
// context asks for it (WithDecryptAccess). It runs in the deserialize
// step, once per attempt, so the answer that ends the call is the one
// reported.
var grantsHeader = middleware.DeserializeMiddlewareFunc("encvolGrants",
	func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
		out, md, err := next.HandleDeserialize(ctx, in)
		if decryptAccessOf(ctx) == nil {
			return out, md, err
		}
		var grants []string
		if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && err == nil {
			if v, present := resp.Header[kms.GrantsHeader]; present && len(v) > 0 {
				grants = kms.ParseGrants(v[0])
			}
		}
		ReportDecryptAccess(ctx, grants)
		return out, md, err
	})

func addGrantsHeader(stack *middleware.Stack) error {
	return stack.Deserialize.Add(grantsHeader, middleware.After)
}
