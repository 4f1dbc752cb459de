package main

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestServeConnectionLimit: a client over `kms serve --max-conns-per-addr`
// gets a ThrottlingException that names the flag, and is served again once
// a connection is closed.
func TestServeConnectionLimit(t *testing.T) {
	e := newGXEnv(t, "served", "")
	e.killKMS()
	e.serveArgs = []string{"--max-conns-per-addr", "1"}
	e.startKMS()

	held, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	r := e.runWith(e.cfg, "kms", "list-keys")
	if r.code == 0 || !strings.Contains(r.stderr, "ThrottlingException") || !strings.Contains(r.stderr, "--max-conns-per-addr") {
		t.Fatalf("list-keys while another connection from this address is open: %v", r)
	}
	t.Logf("refused: %s", r.stderr)
	held.Close()
	// The server counts the connection until it has seen it close.
	deadline := time.Now().Add(15 * time.Second)
	for r = e.runWith(e.cfg, "kms", "list-keys"); r.code != 0; r = e.runWith(e.cfg, "kms", "list-keys") {
		if time.Now().After(deadline) {
			t.Fatalf("list-keys after the other connection closed: %v", r)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
