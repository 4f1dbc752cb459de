package main

import (
	"crypto/hkdf"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLocalMountDropsStoreSealKey: a mount on the local KMS keeps only
// what its key checks need. Once the data key is unwrapped, neither the
// store's root key nor its seal key (which unseals every key of the
// store) is in the daemon's memory, while the state MAC key (which only
// authenticates keys.json) is: the control that proves the scan works.
// TestGateDisableEnable shows the checks still close and reopen the gate.
func TestLocalMountDropsStoreSealKey(t *testing.T) {
	if !binarySecretMemory(t) {
		t.Fatal("this test needs an encvol built with GOEXPERIMENT=runtimesecret (scripts/test.sh sets it) and CGO_ENABLED=0: without runtime/secret the freed seal key schedule is not erased")
	}
	e := newGXEnv(t, "local", "")
	backing := e.newVolume("vol", e.createKey("alias/sealdrop"))
	mnt := e.mount(e.cfg, backing)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	gxWait(t, "two key checks", 10*time.Second, func() bool { return e.status(mnt).Checks >= 2 })
	root, err := os.ReadFile(filepath.Join(e.dir, "kms", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	derive := func(label string) []byte {
		k, err := hkdf.Key(sha256.New, root, nil, label, 32)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	needles := []memNeedle{
		{"root key", root},
		{"seal key", derive("encvol kms v1 seal")},
		{"state MAC key", derive("encvol kms v1 state-mac")},
	}
	hits, scanned := scanProcessMemory(t, e.status(mnt).PID, needles)
	t.Logf("scanned %d MiB, %d hits", scanned>>20, len(hits))
	for _, h := range hits {
		t.Logf("  %v", h)
	}
	if countHits(hits, "state MAC key", false) == 0 {
		t.Fatal("control failed: the state MAC key, which the mount keeps, is not found, so the scan proves nothing")
	}
	for _, nd := range []string{"root key", "seal key"} {
		if n := countHits(hits, nd, false); n > 0 {
			t.Errorf("the key store's %s is in the mount daemon's memory (%d copies) after the data key was unwrapped", nd, n)
		}
	}
}
