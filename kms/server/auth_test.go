package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// keyState is the state of key as admin sees it.
func keyState(t *testing.T, c *awskms.Client, keyID string) types.KeyState {
	t.Helper()
	d, err := c.DescribeKey(context.Background(), &awskms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		t.Fatalf("DescribeKey: %v", err)
	}
	return d.KeyMetadata.KeyState
}

// A DescribeKey and a DisableKey of the same key have the same body, so a
// captured DescribeKey whose signature did not cover X-Amz-Target would
// disable the key if its target were changed.
func TestReplayWithChangedTarget(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	kid := aws.ToString(createKey(t, c, "target").KeyId)
	body := `{"KeyId":"` + kid + `"}`
	toDisable := func(r *http.Request) { r.Header.Set("X-Amz-Target", targetPrefix+"DisableKey") }

	// Signed as every client signs: the signature covers the target.
	status, code, msg := rawCall{target: targetPrefix + "DescribeKey", body: body, mutate: toDisable}.do(t, env.url)
	if status != http.StatusBadRequest || code != "InvalidSignatureException" {
		t.Errorf("signed DescribeKey sent as DisableKey: status %d %s (%s); want 400 InvalidSignatureException", status, code, msg)
	}
	// Signed without the target, which is added afterwards.
	status, code, msg = rawCall{target: targetPrefix + "DescribeKey", body: body,
		prepare: func(r *http.Request) { r.Header.Del("X-Amz-Target") }, mutate: toDisable}.do(t, env.url)
	if status != http.StatusBadRequest || code != "IncompleteSignatureException" || !strings.Contains(msg, "x-amz-target") {
		t.Errorf("DescribeKey signed without its target, sent as DisableKey: status %d %s (%s); want 400 IncompleteSignatureException naming x-amz-target", status, code, msg)
	}
	if st := keyState(t, c, kid); st != types.KeyStateEnabled {
		t.Fatalf("key state after the replays: %s, want Enabled", st)
	}
}

func TestRequiredSignedHeaders(t *testing.T) {
	env := startServer(t, Options{})
	unsign := func(h string) rawCall {
		return rawCall{
			prepare: func(r *http.Request) { r.Header.Del(h) },
			mutate: func(r *http.Request) {
				r.Header.Set(h, map[string]string{"X-Amz-Target": "TrentService.ListKeys", "Content-Type": contentType}[h])
			},
		}
	}
	// The SDK's signer always signs X-Amz-Date, so that case takes it out
	// of SignedHeaders by hand (which also breaks the signature: the
	// missing header must be what the server names).
	noDate := rawCall{mutate: func(r *http.Request) {
		auth := r.Header.Get("Authorization")
		r.Header.Set("Authorization", strings.Replace(auth, ";x-amz-date", "", 1))
	}}
	for name, tc := range map[string]struct {
		call   rawCall
		header string
	}{
		"x-amz-target": {unsign("X-Amz-Target"), "x-amz-target"},
		"content-type": {unsign("Content-Type"), "content-type"},
		"x-amz-date":   {noDate, "x-amz-date"},
	} {
		t.Run(name, func(t *testing.T) {
			status, code, msg := tc.call.do(t, env.url)
			if status != http.StatusBadRequest || code != "IncompleteSignatureException" || !strings.Contains(msg, "SignedHeaders must include "+tc.header) {
				t.Fatalf("status %d %s (%s); want 400 IncompleteSignatureException naming %s", status, code, msg, tc.header)
			}
		})
	}
}

// blockingBody yields prefix, then blocks until released (or the request
// is given up): a server that answers while it blocks has read at most the
// prefix.
type blockingBody struct {
	prefix  []byte
	release <-chan struct{}
	read    atomic.Int64
}

func (b *blockingBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.prefix = b.prefix[n:]
		b.read.Add(int64(n))
		return n, nil
	}
	<-b.release
	return 0, errors.New("body released")
}

func TestUnauthenticatedBodyNotRead(t *testing.T) {
	env := startServer(t, Options{})
	const prefix = 4 << 10
	const declared = DefaultMaxBody - 1024 // a body the server would accept in size
	stranger := Principal{Name: "x", AccessKeyID: "AKIDSTRANGER0000001", SecretAccessKey: "strangerSecretStrangerSecret0001"}
	cases := []struct {
		name     string
		p        Principal
		at       time.Time
		chunked  bool
		edit     func(*http.Request)
		wantCode string
	}{
		{name: "unknown access key", p: stranger, wantCode: "UnrecognizedClientException"},
		{name: "unknown access key, chunked", p: stranger, chunked: true, wantCode: "UnrecognizedClientException"},
		{name: "old date", p: admin, at: time.Now().Add(-time.Hour), wantCode: "InvalidSignatureException"},
		{name: "no date", p: admin, edit: func(r *http.Request) { r.Header.Del("X-Amz-Date") }, wantCode: "IncompleteSignatureException"},
		{name: "no signature", p: admin, edit: func(r *http.Request) { r.Header.Del("Authorization") }, wantCode: "MissingAuthenticationTokenException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The transport waits for the body's Read before it returns
			// from a failed request, so the deadline releases the body.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			body := &blockingBody{prefix: make([]byte, prefix), release: ctx.Done()}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.url+"/", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = declared
			if tc.chunked {
				req.ContentLength = -1
			}
			req.Header.Set("Content-Type", contentType)
			req.Header.Set("X-Amz-Target", targetPrefix+"Encrypt")
			at := tc.at
			if at.IsZero() {
				at = time.Now()
			}
			// The signature covers a body the client never sends in full:
			// the server must refuse before it could find out.
			sum := sha256.Sum256([]byte("the body as signed"))
			creds := aws.Credentials{AccessKeyID: tc.p.AccessKeyID, SecretAccessKey: tc.p.SecretAccessKey}
			if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), signingService, testRegion, at); err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(req)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("no answer while the body blocked after %d bytes (the server waits for the body): %v", body.read.Load(), err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), `"`+tc.wantCode+`"`) {
				t.Fatalf("status %d, body %s; want 400 %s", resp.StatusCode, raw, tc.wantCode)
			}
			if !resp.Close {
				t.Errorf("the server keeps the connection, so it would read the rest of the body to find the next request")
			}
			if n := body.read.Load(); n > prefix {
				t.Fatalf("the client gave %d bytes of body, more than the %d-byte prefix", n, prefix)
			}
		})
	}
}
