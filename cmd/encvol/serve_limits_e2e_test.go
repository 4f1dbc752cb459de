package main

import (
	"net"
	"os"
	"path/filepath"
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

// TestServeLimitFlags: a negative limit is a usage error naming the flags.
func TestServeLimitFlags(t *testing.T) {
	dir := t.TempDir()
	principals := filepath.Join(dir, "p.toml")
	body := "[[principal]]\nname = \"a\"\naccess_key_id = \"AKIDFLAGS0001\"\nsecret_access_key = \"flagsSecretFlagsSecret01\"\n"
	if err := os.WriteFile(principals, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--rate-limit", "--max-conns", "--max-conns-per-addr"} {
		r := runBin(t, nil, "kms", "serve", "--listen", "127.0.0.1:0", "--store", filepath.Join(dir, "s"), "--principals", principals, flag, "-1")
		if r.code != exitUsage || !strings.Contains(r.stderr, flag) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("kms serve %s -1: %v", flag, r)
		}
	}
}
