package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServiceKeyPerPrincipal: a volume alice creates without a key on
// `encvol kms serve` is under her own service key. bob, another principal
// of the same server who can read her backing directory, cannot mount it;
// his own keyless volume is under another key, which alice cannot use.
func TestServiceKeyPerPrincipal(t *testing.T) {
	s := newShareEnv(t)
	bob := s.principal("bob")
	av := filepath.Join(s.dir, "alice-vol")
	s.must("create", "--backing", av)
	stolen := filepath.Join(s.dir, "stolen")
	copyTree(t, av, stolen)
	mnt := filepath.Join(s.dir, "bob-mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gxUnmount(t, mnt) })
	r := s.runWith(bob, "mount", stolen, mnt)
	if r.code == 0 || !strings.Contains(r.stderr, "service key of another principal") {
		t.Fatalf("bob mounting alice's keyless volume: want a refusal naming the service key, got %v", r)
	}
	bv := filepath.Join(s.dir, "bob-vol")
	s.mustWith(bob, "create", "--backing", bv)
	m := s.mountAs(bob, bv, "bob-own")
	if err := os.WriteFile(filepath.Join(m, "f"), []byte("bob's"), 0o600); err != nil {
		t.Fatal(err)
	}
	ak := s.mustWith(s.cfg["alice"], "kms", "describe-key", "alias/encvol/default", "--json").stdout
	bk := s.mustWith(bob, "kms", "describe-key", "alias/encvol/default", "--json").stdout
	if ak == bk {
		t.Fatalf("alice and bob share a service key: %s", ak)
	}
	if r := s.runWith(s.cfg["alice"], "mount", bv, mnt); r.code == 0 || !strings.Contains(r.stderr, "service key of another principal") {
		t.Fatalf("alice mounting bob's keyless volume: %v", r)
	}
	// alice's own volume still mounts for her.
	s.mountAs(s.cfg["alice"], av, "alice-mnt")
}

// TestServeRefusesLocalPrincipal: the name "local" is the store's own
// access, which administers every key; a principals file may not hand it
// to a remote caller.
func TestServeRefusesLocalPrincipal(t *testing.T) {
	e := newEnv(t, "")
	p := filepath.Join(e.dir, "principals.toml")
	if err := os.WriteFile(p, []byte("[[principal]]\nname = \"local\"\naccess_key_id = \"AKIALOCAL0001\"\nsecret_access_key = \"local-secret-0123456789abcdef\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.runBounded(15*time.Second, "kms", "serve", "--listen", "127.0.0.1:0", "--store", filepath.Join(e.dir, "store"), "--principals", p)
	if r.code <= 0 || !strings.Contains(r.stderr, `"local" is reserved`) || !strings.Contains(r.stderr, p) {
		t.Fatalf("principals file naming local: want a refusal naming the file and the reserved name, got\n%s", r)
	}
	oneLine(t, "reserved principal", r.stderr)
}
