package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/encvol/encvol/kms"
)

func TestToAPIError(t *testing.T) {
	const generic = "internal error; see the server log"
	cases := []struct {
		err    error
		code   string
		status int
		msg    string
	}{
		{&kms.Error{Code: kms.CodeDisabled, Message: "arn is disabled."}, "DisabledException", 409, "arn is disabled."},
		{fmt.Errorf("wrapped: %w", &kms.Error{Code: kms.CodeNotFound, Message: "gone"}), "NotFoundException", 404, "gone"},
		{&kms.Error{Code: kms.CodeInternal, Message: "read key state /secret/path: EIO"}, "KMSInternalException", 500, generic},
		{validationError("bad"), "ValidationException", 400, "bad"},
		{fmt.Errorf("disk on fire"), "KMSInternalException", 500, generic},
		{context.Canceled, "DependencyTimeoutException", 503, "the request was cancelled or timed out"},
	}
	for _, tc := range cases {
		ae := toAPIError(tc.err)
		if ae.Code != tc.code || ae.Status != tc.status || ae.Message != tc.msg {
			t.Errorf("%v: got %s/%d %q, want %s/%d %q", tc.err, ae.Code, ae.Status, ae.Message, tc.code, tc.status, tc.msg)
		}
	}
}

func TestSecretResponseEncoding(t *testing.T) {
	for _, rest := range []any{dataKeyOutput{CiphertextBlob: []byte{1, 2, 3}, KeyId: "arn:k"}, empty{}} {
		pt := []byte{0xde, 0xad, 0xbe, 0xef}
		rec := httptest.NewRecorder()
		if err := writeResponse(rec, &secretResponse{plaintext: pt, rest: rest}); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Plaintext      []byte
			CiphertextBlob []byte
			KeyId          string
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("response %q is not JSON: %v", rec.Body.String(), err)
		}
		if string(got.Plaintext) != "\xde\xad\xbe\xef" {
			t.Errorf("Plaintext = %x", got.Plaintext)
		}
		if _, ok := rest.(dataKeyOutput); ok && (got.KeyId != "arn:k" || len(got.CiphertextBlob) != 3) {
			t.Errorf("other fields lost: %s", rec.Body.String())
		}
		if pt[0] != 0 || pt[3] != 0 {
			t.Errorf("plaintext buffer not zeroed after writing: %x", pt)
		}
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != contentType {
			t.Errorf("status %d content type %q", rec.Code, rec.Header().Get("Content-Type"))
		}
	}
}
