package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// openDir is a directory other users can enter (t.TempDir sits inside a
// 0700 directory, which would make every file in it private).
func openDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "encvol-open-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// A configuration holding a secret access key that other users can read is
// refused, naming the fix, unless --allow-readable-config says otherwise;
// the same file at 0600, or without secrets, is fine.
func TestReadableConfigWithSecretsRefused(t *testing.T) {
	dir := openDir(t)
	cfg := filepath.Join(dir, "encvol.toml")
	withSecret := "[kms.corp]\ntype = \"aws\"\nendpoint = \"http://127.0.0.1:1\"\nregion = \"us-east-1\"\naccess_key_id = \"AKIAEXAMPLE0001\"\nsecret_access_key = \"secret-secret-secret-0001\"\n"
	write := func(body string, mode os.FileMode) {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(cfg, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(withSecret, 0o644)
	r := runBin(t, nil, "--config", cfg, "kms", "list-keys")
	if r.code != exitUsage || !strings.Contains(r.stderr, "can be read by other users") || !strings.Contains(r.stderr, "chmod 600 "+cfg) {
		t.Fatalf("readable configuration with a secret: want exit %d naming chmod 600, got\n%s", exitUsage, r)
	}
	// Past the permission check, the unreachable endpoint is what fails.
	r = runBin(t, nil, "--config", cfg, "--allow-readable-config", "kms", "list-keys")
	if strings.Contains(r.stderr, "can be read by other users") {
		t.Fatalf("--allow-readable-config did not lift the refusal:\n%s", r)
	}
	write(withSecret, 0o600)
	if r := runBin(t, nil, "--config", cfg, "kms", "list-keys"); strings.Contains(r.stderr, "can be read by other users") {
		t.Fatalf("a 0600 configuration was refused:\n%s", r)
	}
	write(fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n", filepath.Join(t.TempDir(), "kms")), 0o644)
	if r := runBin(t, nil, "--config", cfg, "kms", "list-keys"); r.code != 0 {
		t.Fatalf("a readable configuration without secrets was refused:\n%s", r)
	}
}

// The principals file holds every secret access key of the server: one
// that other users can read is refused at start.
func TestServeRefusesReadablePrincipals(t *testing.T) {
	dir := openDir(t)
	p := filepath.Join(dir, "principals.toml")
	body := "[[principal]]\nname = \"alice\"\naccess_key_id = \"AKIAALICE0001\"\nsecret_access_key = \"alice-secret-0123456789abcdef\"\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "")
	// A server that accepts the file serves until killed (exit -1).
	r := e.runBounded(15*time.Second, "kms", "serve", "--listen", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "store"), "--principals", p)
	if r.code != exitUsage || !strings.Contains(r.stderr, "can be read by other users") {
		t.Fatalf("readable principals file: want exit %d, got\n%s", exitUsage, r)
	}
}

// The server holds every key of its store in memory: it must not leave
// them in a core file.
func TestServeDisablesCoreDumps(t *testing.T) {
	e := newGXEnv(t, "served", "")
	b, err := os.ReadFile("/proc/" + strconv.Itoa(e.server.Process.Pid) + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Max core file size") {
			f := strings.Fields(strings.TrimPrefix(l, "Max core file size"))
			if len(f) < 2 || f[0] != "0" || f[1] != "0" {
				t.Fatalf("kms serve allows core files: %q", l)
			}
			return
		}
	}
	t.Fatalf("no core limit in /proc/PID/limits:\n%s", b)
}
