package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRolledBackKeyStoreRefused: someone who can write the embedded key
// store puts back the keys.json from before a key was disabled, to mount a
// volume under it again. The mount and every kms command refuse, saying
// that keys.json was rolled back.
func TestRolledBackKeyStoreRefused(t *testing.T) {
	e := newEnv(t, "")
	e.must("kms", "create-key", "--alias", "alias/k")
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	e.must("create", "--backing", backing, "--key", "alias/k")
	keys := filepath.Join(e.dir, "kms", "keys.json")
	old, err := os.ReadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	e.must("kms", "disable-key", "alias/k", "--force")
	if err := os.WriteFile(keys, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, mnt)
	for _, args := range [][]string{{"mount", backing, mnt}, {"kms", "list-keys"}} {
		r := e.run(args...)
		if r.code == 0 || !strings.Contains(r.stderr, "rollback") || !strings.Contains(r.stderr, "keys.json") {
			t.Fatalf("encvol %s with a rolled-back keys.json: want a refusal naming the rollback, got %v", strings.Join(args, " "), r)
		}
		oneLine(t, "rollback refusal", r.stderr)
	}
}
