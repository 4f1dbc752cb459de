package server

import (
	"net/http"
	"slices"
	"strings"

	"github.com/encvol/encvol/kms"
)

// keyCheckOf reads the kms.KeyCheckHeader of an authenticated Decrypt. A
// mark the signature does not cover is ignored, so the call is audited in
// full: whoever added it did not sign the request. A signed but malformed
// mark is refused, since a client that signs it means it.
func keyCheckOf(r *http.Request) (*kms.KeyCheck, *apiError) {
	vals := r.Header.Values(kms.KeyCheckHeader)
	if len(vals) == 0 {
		return nil, nil
	}
	a, aerr := parseAuthorization(r.Header.Get("Authorization"))
	if aerr != nil || !slices.Contains(a.signedHeaders, strings.ToLower(kms.KeyCheckHeader)) {
		return nil, nil
	}
	if len(vals) > 1 {
		return nil, validationError("%s is given %d times; send it once", kms.KeyCheckHeader, len(vals))
	}
	chk, err := kms.ParseKeyCheck(vals[0])
	if err != nil {
		return nil, toAPIError(err)
	}
	return &chk, nil
}
