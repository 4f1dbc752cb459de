package kmsclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/encvol/encvol/kms"
)

// KeyCheck marks a Decrypt as one of a mount's periodic key checks, so
// the KMS records checks that repeat the previous result as one summary
// per interval instead of one audit record each (changes of result, the
// first and the last check are still recorded one by one). The call is
// authorized and answered exactly as an unmarked one.
type KeyCheck = kms.KeyCheck

type keyCheckCtxKey struct{}

// WithKeyCheck returns ctx marking the Decrypt calls made with it as the
// key checks chk describes. Both backends honour it: the local one tells
// its store, the remote one sends kms.KeyCheckHeader (signed) to the KMS,
// which `encvol kms serve` reads and other AWS-compatible servers ignore.
func WithKeyCheck(ctx context.Context, chk KeyCheck) context.Context {
	return context.WithValue(ctx, keyCheckCtxKey{}, chk)
}

// KeyCheckOf returns the KeyCheck ctx carries, if any: what a Client
// implementation reads to honour WithKeyCheck.
func KeyCheckOf(ctx context.Context) (KeyCheck, bool) {
	chk, ok := ctx.Value(keyCheckCtxKey{}).(KeyCheck)
	return chk, ok
}

// NewMountID returns a random mount ID for KeyCheck.Mount.
func NewMountID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "mnt-" + hex.EncodeToString(b[:])
}

// keyCheckHeader adds kms.KeyCheckHeader to requests whose context carries
// a KeyCheck. It runs in the build step, before the finalize step signs
// the request, so the signature covers the header: a server can tell the
// mark came from the principal that signed.
var keyCheckHeader = middleware.BuildMiddlewareFunc("encvolKeyCheck",
	func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
		if chk, ok := KeyCheckOf(ctx); ok {
			if req, isHTTP := in.Request.(*smithyhttp.Request); isHTTP {
				req.Header.Set(kms.KeyCheckHeader, chk.HeaderValue())
			}
		}
		return next.HandleBuild(ctx, in)
	})

func addKeyCheckHeader(stack *middleware.Stack) error {
	return stack.Build.Add(keyCheckHeader, middleware.After)
}
