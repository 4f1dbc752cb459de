package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A mounted volume is copied through a snapshot taken for the copy (the
// copy equals what the mount showed, the snapshot is gone afterwards), and
// a volume made from a snapshot under another key is re-encrypted and
// stays readable once the snapshot's key is disabled.
func TestCopyMountedAndFromSnapshotUnderAnotherKey(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) { copyMountedAndFromSnapshot(t, newGXEnv(t, backend, "")) })
	}
}

func copyMountedAndFromSnapshot(t *testing.T, e *gxEnv) {
	keyA, keyB := e.createKey("alias/cs-a"), e.createKey("alias/cs-b")
	backing := filepath.Join(e.dir, "src")
	e.must("create", "--backing", backing, "--key", keyA)
	mnt := e.mount(e.cfg, backing, "noatime", "nodiratime")
	makeTree(t, mnt)
	want := treeListing(t, mnt)

	// The source stays mounted (and writable) during the copy.
	dst := filepath.Join(e.dir, "dst")
	r := e.must("copy", backing, "--backing", dst, "--key", keyB)
	if !strings.Contains(r.stderr, "is mounted: copying snapshot") {
		t.Errorf("copy of a mounted volume did not say it copies a snapshot:\n%s", r.stderr)
	}
	if ents, _ := os.ReadDir(backing + ".snapshots"); len(ents) != 0 {
		t.Errorf("the snapshot taken for the copy was left behind: %v", ents)
	}

	snapRes := e.must("snapshot", "create", backing, "--name", "s1")
	snap := filepath.Join(backing+".snapshots", "s1")
	if _, err := os.Stat(snap); err != nil {
		t.Fatalf("snapshot create: %v\n%s", err, snapRes.stdout)
	}
	gxUnmount(t, mnt)
	fromSnap := filepath.Join(e.dir, "fromsnap")
	e.must("create", "--backing", fromSnap, "--from-snapshot", snap, "--key", keyB)

	e.must("kms", "disable-key", keyA, "--force")
	for _, b := range []string{dst, fromSnap} {
		m := e.mount(e.cfg, b, "ro", "noatime", "nodiratime")
		sameListing(t, filepath.Base(b)+" with the source's key disabled", want, treeListing(t, m))
		gxUnmount(t, m)
	}
}
