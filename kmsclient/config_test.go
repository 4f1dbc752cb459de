package kmsclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string // substring naming the offending key; "" = valid
	}{
		{Config{Type: "local", Path: "/x"}, ""},
		{Config{Type: "local", Path: "/x", PassphraseFile: "/p"}, ""},
		{Config{Type: "aws", Region: "eu-west-1"}, ""},
		{Config{Type: "aws", Endpoint: "https://kms.example:8400", AccessKeyID: "a", SecretAccessKey: "b"}, ""},
		{Config{}, "type"},
		{Config{Type: "vault"}, "type"},
		{Config{Type: "local"}, "path"},
		{Config{Type: "local", Path: "/x", Endpoint: "http://a"}, "endpoint"},
		{Config{Type: "aws"}, "endpoint or region"},
		{Config{Type: "aws", Endpoint: "kms.example:8400"}, "endpoint"},
		{Config{Type: "aws", Region: "r", AccessKeyID: "a"}, "secret_access_key"},
		{Config{Type: "aws", Region: "r", SessionToken: "t"}, "session_token"},
		{Config{Type: "aws", Region: "r", Path: "/x"}, "path"},
		// Plain HTTP only to this machine, unless the config says otherwise.
		{Config{Type: "aws", Endpoint: "http://127.0.0.1:8400"}, ""},
		{Config{Type: "aws", Endpoint: "http://[::1]:8400"}, ""},
		{Config{Type: "aws", Endpoint: "http://localhost:8400"}, ""},
		{Config{Type: "aws", Endpoint: "http://10.1.2.3:8400"}, "insecure_http"},
		{Config{Type: "aws", Endpoint: "http://kms.example:8400"}, "insecure_http"},
		{Config{Type: "aws", Endpoint: "http://kms.example:8400", InsecureHTTP: true}, ""},
		{Config{Type: "local", Path: "/x", InsecureHTTP: true}, "insecure_http"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tt.cfg, err)
		case tt.wantErr != "" && err == nil:
			t.Errorf("%+v: no error, want one naming %q", tt.cfg, tt.wantErr)
		case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("%+v: error %q does not name %q", tt.cfg, err, tt.wantErr)
		}
	}
	if _, err := NewAdmin(context.Background(), "bad", Config{Type: "aws"}); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("NewAdmin with a bad config: %v, want an error naming the KMS", err)
	}
}

func TestCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{junk, filepath.Join(dir, "missing.pem")} {
		_, err := NewAdmin(context.Background(), "corp", Config{Type: "aws", Region: "r", CAFile: f})
		if err == nil || !strings.Contains(err.Error(), "ca_file") || !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("ca_file %s: error %v, want an ErrInvalidRequest naming ca_file", f, err)
		}
	}
}

func TestKindForCode(t *testing.T) {
	tests := []struct {
		code, msg string
		want      error
	}{
		{"DisabledException", "arn:x is disabled.", ErrDisabled},
		{"KMSInvalidStateException", "arn:x is pending deletion.", ErrPendingDeletion},
		{"KMSInvalidStateException", "arn:x is pending import.", ErrPendingImport},
		{"KMSInvalidStateException", "arn:x is not pending deletion.", ErrInvalidState},
		{"KMSInvalidStateException", "service key cannot be disabled", ErrInvalidState},
		{"NotFoundException", "", ErrNotFound},
		{"AccessDeniedException", "", ErrAccessDenied},
		{"UnrecognizedClientException", "", ErrAccessDenied},
		{"InvalidSignatureException", "", ErrAccessDenied},
		{"InvalidCiphertextException", "", ErrInvalidCiphertext},
		{"IncorrectKeyException", "", ErrInvalidCiphertext},
		{"ValidationException", "", ErrInvalidRequest},
		{"AlreadyExistsException", "", ErrAlreadyExists},
		{"LimitExceededException", "", ErrInvalidRequest},
		{"KMSInternalException", "", ErrUnreachable},
		{"UnsupportedOperationException", "", ErrUnsupported},
	}
	for _, tt := range tests {
		if got := kindForCode(tt.code, tt.msg); got != tt.want {
			t.Errorf("kindForCode(%s, %q) = %v, want %v", tt.code, tt.msg, got, tt.want)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	e := &Error{Kind: ErrDisabled, Op: "Decrypt", KMS: "corp", KeyID: "alias/app", Code: "DisabledException", Message: "arn:aws:kms:local:000000000000:key/k is disabled."}
	want := `Decrypt with key alias/app on KMS "corp" failed: key is disabled (DisabledException: arn:aws:kms:local:000000000000:key/k is disabled)`
	if e.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", e.Error(), want)
	}
	wrapped := fmt.Errorf("mount vol: %w", e)
	if !errors.Is(wrapped, ErrDisabled) || errors.Is(wrapped, ErrNotFound) {
		t.Error("errors.Is does not see the kind through wrapping")
	}
	cause := errors.New("root cause")
	e2 := &Error{Kind: ErrUnreachable, Err: cause}
	if !errors.Is(e2, cause) {
		t.Error("errors.Is does not see the cause")
	}
	if Remedy(e, "alias/app", "corp") == "" || !strings.Contains(Remedy(e, "alias/app", "corp"), "enable-key alias/app --kms corp") {
		t.Errorf("Remedy = %q", Remedy(e, "alias/app", "corp"))
	}
}
