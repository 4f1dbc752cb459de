package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kms"
)

// FuzzOperations feeds arbitrary JSON bodies, as an authenticated caller
// sends them, to every operation of the server. Whatever the body, the
// answer must be a response that encodes or an error the client may see
// (a 4xx AWS exception): never a panic and never an internal error, which
// would mean a request reached a state the validation should have refused.
func FuzzOperations(f *testing.F) {
	store, err := kms.Open(f.TempDir(), kms.Options{})
	if err != nil {
		f.Fatalf("open store: %v", err)
	}
	f.Cleanup(func() { _ = store.Close() })
	s := New(store, []Principal{admin, reader}, zerolog.New(io.Discard), Options{})
	names := make([]string, 0, len(s.ops))
	for name := range s.ops {
		names = append(names, name)
	}
	slices.Sort(names)

	ctx := context.Background()
	md, err := store.CreateKey(ctx, admin.Name, kms.CreateKeyInput{Description: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	if err := store.CreateAlias(ctx, admin.Name, "alias/fuzz", md.KeyID); err != nil {
		f.Fatal(err)
	}
	blob, _, err := store.Encrypt(ctx, admin.Name, md.KeyID, []byte("fuzz plaintext"), map[string]string{"purpose": "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(blob)
	key := fmt.Sprintf("%q", md.KeyID)
	seeds := map[string][]string{
		"CreateKey":   {`{"Description":"d","KeyUsage":"ENCRYPT_DECRYPT","KeySpec":"SYMMETRIC_DEFAULT"}`, `{"Origin":"EXTERNAL"}`, `{"Tags":[{"TagKey":"k","TagValue":"v"}]}`},
		"DescribeKey": {`{"KeyId":` + key + `}`, `{"KeyId":"alias/fuzz"}`},
		"Decrypt": {
			`{"CiphertextBlob":"` + b64 + `","EncryptionContext":{"purpose":"fuzz"}}`,
			`{"CiphertextBlob":"` + b64 + `","KeyId":"alias/fuzz","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}`,
		},
		"ReEncrypt":           {`{"CiphertextBlob":"` + b64 + `","SourceEncryptionContext":{"purpose":"fuzz"},"DestinationKeyId":` + key + `}`},
		"Encrypt":             {`{"KeyId":` + key + `,"Plaintext":"aGVsbG8=","EncryptionContext":{"a":"b"}}`},
		"GenerateDataKey":     {`{"KeyId":` + key + `,"KeySpec":"AES_256"}`, `{"KeyId":"alias/fuzz","NumberOfBytes":64}`},
		"ScheduleKeyDeletion": {`{"KeyId":` + key + `,"PendingWindowInDays":7}`},
		"CreateAlias":         {`{"AliasName":"alias/other","TargetKeyId":` + key + `}`},
		"CreateGrant":         {`{"KeyId":` + key + `,"GranteePrincipal":"reader","Operations":["Decrypt"],"Constraints":{"EncryptionContextSubset":{"a":"b"}}}`},
		"ListGrants":          {`{"KeyId":` + key + `,"Limit":1,"Marker":"x"}`},
		"ListKeys":            {`{"Limit":1000}`, `{"Marker":"!"}`},
		"GenerateRandom":      {`{"NumberOfBytes":32}`},
		"ImportKeyMaterial":   {`{"KeyId":` + key + `,"ImportToken":"AA==","EncryptedKeyMaterial":"AA==","ExpirationModel":"KEY_MATERIAL_DOES_NOT_EXPIRE"}`},
		"PutKeyPolicy": {`{"KeyId":` + key + `,"PolicyName":"default","Policy":"{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"admin\"},\"Action\":\"kms:*\",\"Resource\":\"*\"},` +
			`{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":[\"reader\"]},\"Action\":[\"kms:Decrypt\"],\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{\"kms:EncryptionContext:a\":\"b\"}}}]}"}`},
		"GetKeyPolicy":         {`{"KeyId":` + key + `,"PolicyName":"default"}`},
		"TagResource":          {`{"KeyId":` + key + `,"Tags":[{"TagKey":"k","TagValue":"v"}]}`},
		"UntagResource":        {`{"KeyId":` + key + `,"TagKeys":["k"]}`},
		"UpdateKeyDescription": {`{"KeyId":` + key + `,"Description":"d"}`},
		"ListRetirableGrants":  {`{"RetiringPrincipal":"arn:aws:iam::000000000000:user/reader"}`},
		"ListKeyRotations":     {`{"KeyId":` + key + `,"IncludeKeyMaterial":"ALL_KEY_MATERIAL"}`},
	}
	for i, name := range names {
		bodies := append([]string{``, `{}`, `null`, `[]`, `{"KeyId":` + key + `}`}, seeds[name]...)
		for _, b := range bodies {
			f.Add(uint8(i), false, []byte(b))
		}
	}

	f.Fuzz(func(t *testing.T, opIndex uint8, asReader bool, body []byte) {
		name := names[int(opIndex)%len(names)]
		p := admin
		if asReader {
			p = reader
		}
		var rl reqLog
		resp, err := s.ops[name](ctx, p.Name, slices.Clone(body), &rl)
		if err != nil {
			if ae := toAPIError(err); ae.Status >= 500 {
				t.Fatalf("%s %q: internal error %d %s: %v", name, body, ae.Status, ae.Code, err)
			}
			return
		}
		if err := writeResponse(httptest.NewRecorder(), resp); err != nil {
			t.Fatalf("%s %q: response does not encode: %v", name, body, err)
		}
	})
}

// FuzzSignature mutates the Authorization header, the date and the body of
// a request the SDK signed. The verifier may accept a different spelling
// of the same header (spaces, parameter order), but never a request whose
// body or date differ from what was signed, and it refuses everything with
// a 4xx exception, never a panic.
func FuzzSignature(f *testing.F) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	v := New(nil, []Principal{admin, reader}, zerolog.New(io.Discard),
		Options{Region: testRegion, Now: func() time.Time { return at }}).verify
	const body = `{"KeyId":"alias/fuzz"}`
	signed := newSignedRequest(f, body, at)
	if _, aerr := v.verify(context.Background(), signed, []byte(body)); aerr != nil {
		f.Fatalf("the request as signed is refused: %v", aerr)
	}
	auth, date := signed.Header.Get("Authorization"), signed.Header.Get("X-Amz-Date")
	f.Add(auth, date, body)
	f.Add(strings.ReplaceAll(auth, ", ", ","), date, body)
	f.Add(auth, date, body+" ")
	f.Add(auth, "20261203T120001Z", body)
	f.Add(strings.Replace(auth, admin.AccessKeyID, reader.AccessKeyID, 1), date, body)
	f.Add(strings.Replace(auth, "Signature=", "Signature=0", 1), date, body)
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=;;, Signature=x", date, body)
	f.Add("AWS4-HMAC-SHA256 ,,,", "", "")

	f.Fuzz(func(t *testing.T, a, d, b string) {
		req := newSignedRequest(t, b, at)
		req.Header.Set("Authorization", a)
		req.Header.Set("X-Amz-Date", d)
		p, aerr := v.verify(context.Background(), req, []byte(b))
		if aerr != nil {
			if aerr.Status < 400 || aerr.Status >= 500 {
				t.Fatalf("refused with status %d: %v", aerr.Status, aerr)
			}
			return
		}
		if b != body || d != date || p.Name != admin.Name {
			t.Fatalf("accepted a request that was not signed: principal %s date %q body %q authorization %q", p.Name, d, b, a)
		}
	})
}

// newSignedRequest is a Decrypt request with body, signed by admin at at.
func newSignedRequest(tb testing.TB, body string, at time.Time) *http.Request {
	tb.Helper()
	req := httptest.NewRequest(http.MethodPost, "http://kms.test/", strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Target", targetPrefix+"Decrypt")
	sign(tb, req, body, admin, signingService, testRegion, at)
	return req
}
