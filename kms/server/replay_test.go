package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/rs/zerolog"
)

func TestReplayedStateChange(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	kid := aws.ToString(createKey(t, c, "replay").KeyId)
	at := time.Now()
	disable := rawCall{target: targetPrefix + "DisableKey", body: `{"KeyId":"` + kid + `"}`, at: at}
	if status, code, msg := disable.do(t, env.url); status != http.StatusOK {
		t.Fatalf("DisableKey: status %d %s (%s)", status, code, msg)
	}
	enable := rawCall{target: targetPrefix + "EnableKey", body: `{"KeyId":"` + kid + `"}`, at: at}
	if status, code, msg := enable.do(t, env.url); status != http.StatusOK {
		t.Fatalf("EnableKey: status %d %s (%s)", status, code, msg)
	}
	// Someone who captured the DisableKey sends it again, byte for byte.
	status, code, msg := disable.do(t, env.url)
	if status != http.StatusBadRequest || code != "InvalidSignatureException" || !strings.Contains(msg, "already used by a DisableKey request") {
		t.Errorf("replayed DisableKey: status %d %s (%s); want 400 InvalidSignatureException saying the signature was used", status, code, msg)
	}
	if st := keyState(t, c, kid); st != types.KeyStateEnabled {
		t.Fatalf("key state after the replay: %s, want Enabled", st)
	}

	// Read operations may repeat, as on AWS: a load generator replays one
	// signed Decrypt.
	describe := rawCall{target: targetPrefix + "DescribeKey", body: `{"KeyId":"` + kid + `"}`, at: at}
	for i := range 3 {
		if status, code, msg := describe.do(t, env.url); status != http.StatusOK {
			t.Fatalf("DescribeKey #%d with one signature: status %d %s (%s)", i+1, status, code, msg)
		}
	}
}

func TestReplayGuardBounds(t *testing.T) {
	const window = 5 * time.Minute
	g := newReplayGuard(window, 3)
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if e := g.admit("alice", "DisableKey", fmt.Sprint("sig", i), t0, t0); e != nil {
			t.Fatalf("signature %d: %v", i, e)
		}
	}
	// Full: refused with a throttle rather than forgetting a live one.
	if e := g.admit("alice", "DisableKey", "sig3", t0, t0); e == nil || e.Code != "ThrottlingException" {
		t.Fatalf("fourth signature with room for three: %v, want ThrottlingException", e)
	}
	if e := g.admit("alice", "DisableKey", "sig0", t0, t0.Add(window)); e == nil || e.Code != "InvalidSignatureException" {
		t.Fatalf("replay at the end of the window: %v, want InvalidSignatureException", e)
	}
	// Another principal has its own room.
	if e := g.admit("bob", "DisableKey", "sig3", t0, t0); e != nil {
		t.Fatalf("bob's first signature: %v", e)
	}
	// Once the window no longer accepts them, the old signatures make room.
	later := t0.Add(window + time.Second)
	if e := g.admit("alice", "DisableKey", "sig3", later, later); e != nil {
		t.Fatalf("a signature after the window passed: %v", e)
	}
	if n := len(g.seen["alice"].ops); n != 1 {
		t.Fatalf("alice's remembered signatures after the window: %d, want 1", n)
	}
	// A signature dated ahead of the clock lives until its own date leaves
	// the window.
	ahead := later.Add(window)
	if e := g.admit("alice", "EnableKey", "ahead", ahead, later); e != nil {
		t.Fatal(e)
	}
	if e := g.admit("alice", "EnableKey", "ahead", ahead, later.Add(2*window-time.Second)); e == nil {
		t.Fatalf("a replay of a signature dated ahead, inside its window, was admitted")
	}
}

// A misspelt name in repeatableOps would make an operation state-changing
// without anyone noticing; every name must be an operation.
func TestRepeatableOpsAreOperations(t *testing.T) {
	ops := New(nil, nil, zerolog.Nop(), Options{}).ops
	for name := range repeatableOps {
		if ops[name] == nil {
			t.Errorf("repeatableOps names %s, which is not an operation of the server", name)
		}
	}
}
