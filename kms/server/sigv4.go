package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	sigAlgorithm   = "AWS4-HMAC-SHA256"
	amzDateFormat  = "20060102T150405Z"
	scopeDate      = "20060102"
	signingService = "kms"
	// DefaultMaxSkew is how far X-Amz-Date may be from the server clock, as
	// in AWS: it bounds how long a captured request can be replayed.
	DefaultMaxSkew = 5 * time.Minute
)

// The Go signer never signs these headers, so a request that did sign one
// cannot be reproduced with it (and no AWS client signs them).
var unsignableHeaders = map[string]bool{
	"authorization": true, "user-agent": true, "x-amzn-trace-id": true,
	"expect": true, "transfer-encoding": true,
}

// verifier checks AWS Signature Version 4 header authentication. It rebuilds
// the canonical request from the headers the client says it signed and signs
// it again with the principal's secret: the canonicalization is then exactly
// the SDK's, so the server cannot drift from what clients compute.
type verifier struct {
	byKey   map[string]Principal
	region  string // "" accepts any region in the credential scope
	maxSkew time.Duration
	now     func() time.Time
	signer  *v4.Signer
}

type authHeader struct {
	accessKeyID   string
	date          string
	region        string
	service       string
	signedHeaders []string
	signedRaw     string
	signature     string
}

// parseAuthorization splits "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(h string) (*authHeader, *apiError) {
	alg, rest, ok := strings.Cut(h, " ")
	if !ok || alg != sigAlgorithm {
		return nil, errIncompleteSignature("Authorization header must use the " + sigAlgorithm + " algorithm (Signature Version 4)")
	}
	params := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, errIncompleteSignature(fmt.Sprintf("Authorization header parameter %q is not key=value", strings.TrimSpace(part)))
		}
		if _, dup := params[k]; dup {
			return nil, errIncompleteSignature("Authorization header repeats " + k)
		}
		params[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if params[k] == "" {
			return nil, errIncompleteSignature("Authorization header requires '" + k + "' parameter")
		}
	}
	cred := strings.Split(params["Credential"], "/")
	if len(cred) != 5 || cred[4] != "aws4_request" || cred[0] == "" || cred[2] == "" {
		return nil, errIncompleteSignature("Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request")
	}
	a := &authHeader{
		accessKeyID: cred[0], date: cred[1], region: cred[2], service: cred[3],
		signedRaw: params["SignedHeaders"], signature: params["Signature"],
	}
	a.signedHeaders = strings.Split(a.signedRaw, ";")
	return a, nil
}

// requiredSignedHeaders must be covered by every signature. The target
// names the operation, so a signature that did not cover it could be
// replayed as another operation with the same body (a DescribeKey as a
// DisableKey); the content type selects the body's protocol and the date
// bounds the replay window. AWS SDKs and awscli sign all of them.
var requiredSignedHeaders = []string{"host", "content-type", "x-amz-date", "x-amz-target"}

// pendingAuth is a request whose Authorization header passed every check
// that needs no body: the access key is known, the date is fresh, and the
// signed headers are complete. Only its signature, which covers the body's
// hash, remains to be checked.
type pendingAuth struct {
	auth      *authHeader
	principal Principal
	signedAt  time.Time
	clone     *http.Request // the request as signed, without its body
}

// verify authenticates r, whose body has already been read into body, and
// returns the principal that signed it.
func (v *verifier) verify(ctx context.Context, r *http.Request, body []byte) (Principal, *apiError) {
	pa, aerr := v.checkHeaders(r)
	if aerr != nil {
		return Principal{}, aerr
	}
	return v.checkSignature(ctx, pa, body)
}

// checkHeaders runs every authentication check that needs no body, so that
// a request from an unknown key, with a stale date or with incomplete
// signed headers is refused before the server reads its body.
func (v *verifier) checkHeaders(r *http.Request) (*pendingAuth, *apiError) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return nil, &apiError{Code: "MissingAuthenticationTokenException", Status: http.StatusBadRequest,
			Message: "Request is missing Authentication Token: sign it with AWS Signature Version 4"}
	}
	if len(vals) > 1 {
		return nil, errIncompleteSignature("more than one Authorization header")
	}
	a, aerr := parseAuthorization(vals[0])
	if aerr != nil {
		return nil, aerr
	}
	p, ok := v.byKey[a.accessKeyID]
	if !ok {
		return nil, &apiError{Code: "UnrecognizedClientException", Status: http.StatusBadRequest,
			Message: "The security token included in the request is invalid: unknown access key ID " + a.accessKeyID}
	}
	if a.service != signingService {
		return nil, errInvalidSignature("Credential should be scoped to correct service: 'kms'.")
	}
	if v.region != "" && a.region != v.region {
		return nil, errInvalidSignature(fmt.Sprintf("Credential should be scoped to a valid region, not '%s': this server serves region '%s'.", a.region, v.region))
	}
	if tok := r.Header.Get("X-Amz-Security-Token"); tok != "" {
		return nil, &apiError{Code: "UnrecognizedClientException", Status: http.StatusBadRequest,
			Message: "The security token included in the request is invalid: this server accepts only long-term access keys, unset the session token"}
	}
	dateStr := r.Header.Get("X-Amz-Date")
	if dateStr == "" {
		return nil, errIncompleteSignature("Authorization header requires existence of a 'X-Amz-Date' header")
	}
	signedAt, err := time.Parse(amzDateFormat, dateStr)
	if err != nil {
		return nil, errIncompleteSignature("X-Amz-Date must have the form YYYYMMDDTHHMMSSZ")
	}
	if signedAt.Format(scopeDate) != a.date {
		return nil, errInvalidSignature("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP")
	}
	now := v.now()
	switch {
	case signedAt.Before(now.Add(-v.maxSkew)):
		return nil, errInvalidSignature(fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %s.)",
			dateStr, now.Add(-v.maxSkew).UTC().Format(amzDateFormat), now.UTC().Format(amzDateFormat), v.maxSkew))
	case signedAt.After(now.Add(v.maxSkew)):
		return nil, errInvalidSignature(fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %s.)",
			dateStr, now.Add(v.maxSkew).UTC().Format(amzDateFormat), now.UTC().Format(amzDateFormat), v.maxSkew))
	}

	// Rebuild the request with only the headers the client signed.
	clone := &http.Request{
		Method: r.Method,
		URL:    &url.URL{Scheme: "http", Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Host:   r.Host,
		Header: make(http.Header, len(a.signedHeaders)),
	}
	if r.TLS != nil {
		clone.URL.Scheme = "https"
	}
	for _, h := range a.signedHeaders {
		switch {
		case h == "host":
			continue
		case h == "content-length":
			if r.ContentLength < 0 {
				return nil, errInvalidSignature("content-length is signed but the request has no Content-Length header")
			}
			clone.ContentLength = r.ContentLength
			continue
		case h != strings.ToLower(h) || h == "":
			return nil, errIncompleteSignature("SignedHeaders must be lower-case header names separated by ';'")
		case unsignableHeaders[h]:
			return nil, errInvalidSignature("header " + h + " must not be signed")
		}
		hv := r.Header.Values(h)
		if len(hv) == 0 {
			return nil, errInvalidSignature("signed header " + h + " is missing from the request")
		}
		clone.Header[textproto.CanonicalMIMEHeaderKey(h)] = hv
	}
	var missing []string
	for _, h := range requiredSignedHeaders {
		if !slices.Contains(a.signedHeaders, h) {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		return nil, errIncompleteSignature(fmt.Sprintf("SignedHeaders must include %s (it has %s): sign the request with an AWS SDK or awscli, which sign them",
			strings.Join(missing, ", "), a.signedRaw))
	}
	return &pendingAuth{auth: a, principal: p, signedAt: signedAt, clone: clone}, nil
}

// checkSignature signs the request pa stands for again, with body, and
// compares the result with the signature the client sent.
func (v *verifier) checkSignature(ctx context.Context, pa *pendingAuth, body []byte) (Principal, *apiError) {
	a, p := pa.auth, pa.principal
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey}
	if err := v.signer.SignHTTP(ctx, creds, pa.clone, hex.EncodeToString(sum[:]), a.service, a.region, pa.signedAt); err != nil {
		return Principal{}, &apiError{Code: "KMSInternalException", Status: http.StatusInternalServerError, Message: "cannot compute the request signature"}
	}
	want, perr := parseAuthorization(pa.clone.Header.Get("Authorization"))
	if perr != nil {
		return Principal{}, &apiError{Code: "KMSInternalException", Status: http.StatusInternalServerError, Message: "cannot compute the request signature"}
	}
	// The signature covers the SignedHeaders list itself, so comparing the
	// signatures alone is enough; the list check only sharpens the message.
	if !hmac.Equal([]byte(want.signature), []byte(a.signature)) {
		msg := "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
		if want.signedRaw != a.signedRaw {
			msg += " (SignedHeaders must be sorted and name each signed header once.)"
		}
		return Principal{}, errInvalidSignature(msg)
	}
	return p, nil
}

func errIncompleteSignature(msg string) *apiError {
	return &apiError{Code: "IncompleteSignatureException", Status: http.StatusBadRequest, Message: msg}
}

func errInvalidSignature(msg string) *apiError {
	return &apiError{Code: "InvalidSignatureException", Status: http.StatusBadRequest, Message: msg}
}
