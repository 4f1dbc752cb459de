package main

import (
	"net/http"
	"strings"
	"testing"
)

func TestLuaString(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"b"}`:    `"{\"a\":\"b\"}"`,
		`back\slash`:   `"back\\slash"`,
		"tab\there":    `"tab\009here"`,
		"high\xffbyte": `"high\255byte"`,
	} {
		if got := luaString(in); got != want {
			t.Errorf("luaString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestLuaScriptLeavesLengthAndHostToWrk(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AK/20261202/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
	h.Set("Content-Length", "42")
	h.Set("Host", "127.0.0.1:1")
	h.Set("X-Amz-Target", "TrentService.Decrypt")
	s := luaScript(h, []byte(`{"CiphertextBlob":"AA=="}`))
	for _, want := range []string{`wrk.method = "POST"`, `wrk.body = "{\"CiphertextBlob\":\"AA==\"}"`, `wrk.headers["X-Amz-Target"] = "TrentService.Decrypt"`, `wrk.headers["Authorization"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %s:\n%s", want, s)
		}
	}
	for _, bad := range []string{"Content-Length", `"Host"`} {
		if strings.Contains(s, bad) {
			t.Errorf("script sets %s, which wrk computes itself:\n%s", bad, s)
		}
	}
}
