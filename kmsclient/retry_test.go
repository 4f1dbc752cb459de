package kmsclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAWSRetryPolicy checks the SDK error mapping and that answers which
// state the key's condition are never retried (the SDK's default list
// would retry LimitExceededException and any 5xx), while transient server
// failures are retried a bounded number of times.
func TestAWSRetryPolicy(t *testing.T) {
	tests := []struct {
		status    int
		code, msg string
		want      error
		attempts  int32
	}{
		{409, "DisabledException", "arn:k is disabled.", ErrDisabled, 1},
		{409, "KMSInvalidStateException", "arn:k is pending deletion.", ErrPendingDeletion, 1},
		{409, "KMSInvalidStateException", "arn:k is pending import.", ErrPendingImport, 1},
		// A misbehaving server sending a key state with a 5xx still is not retried.
		{500, "KMSInvalidStateException", "arn:k is pending deletion.", ErrPendingDeletion, 1},
		{404, "NotFoundException", "no such key", ErrNotFound, 1},
		{400, "AccessDeniedException", "no grant", ErrAccessDenied, 1},
		{400, "UnrecognizedClientException", "unknown key id", ErrAccessDenied, 1},
		{400, "InvalidSignatureException", "bad signature", ErrAccessDenied, 1},
		{400, "InvalidCiphertextException", "", ErrInvalidCiphertext, 1},
		{400, "IncorrectKeyException", "", ErrInvalidCiphertext, 1},
		{400, "LimitExceededException", "too many grants", ErrInvalidRequest, 1},
		{400, "ValidationException", "bad", ErrInvalidRequest, 1},
		{500, "KMSInternalException", "boom", ErrUnreachable, awsMaxAttempts},
		{503, "SomethingOdd", "proxy down", ErrUnreachable, awsMaxAttempts},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%s", tt.status, tt.code), func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(tt.status)
				fmt.Fprintf(w, `{"__type":%q,"message":%q}`, tt.code, tt.msg)
			}))
			defer srv.Close()
			c, err := NewAdmin(context.Background(), "stub", Config{Type: TypeAWS, Endpoint: srv.URL, Region: "us-east-1", AccessKeyID: "AKIA", SecretAccessKey: "s"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = c.Decrypt(ctx, "alias/k", []byte("blob"), map[string]string{VolumeContextKey: "vol-1"})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want kind %v", err, tt.want)
			}
			var ke *Error
			if !errors.As(err, &ke) || ke.Code != tt.code || ke.KMS != "stub" || ke.Op != "Decrypt" {
				t.Fatalf("error details = %+v", ke)
			}
			if got := hits.Load(); got != tt.attempts {
				t.Fatalf("server saw %d attempts, want %d", got, tt.attempts)
			}
		})
	}
}

// TestAWSDefaultKeyMissing: the error tells the user what to do.
func TestAWSDefaultKeyMissing(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(404)
		fmt.Fprint(w, `{"__type":"NotFoundException","message":"Alias arn:aws:kms:us-east-1:0:alias/encvol/default is not found."}`)
	}))
	defer srv.Close()
	c, err := New(context.Background(), "corp", Config{Type: TypeAWS, Endpoint: srv.URL, AccessKeyID: "AKIA", SecretAccessKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.DefaultKey(context.Background())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("DefaultKey: %v, want ErrNotFound", err)
	}
	want := "pass --key KEY, or create it with `encvol kms create-key --kms corp --alias alias/encvol/default`"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("DefaultKey error %q lacks %q", err, want)
	}
}
