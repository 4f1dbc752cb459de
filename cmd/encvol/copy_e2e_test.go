package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/volume"
)

// End-to-end tests of `encvol copy` through the real binary, on the
// embedded KMS and on `encvol kms serve`.

// sourceVolume makes a volume under key whose content is written through
// its mount: makeTree, and n bulk files of size bytes. It returns the
// backing directory and the tree's listing through the mount.
func (e *gxEnv) sourceVolume(dir, key string, n, size int) (string, []string) {
	e.t.Helper()
	backing := filepath.Join(dir, "src")
	e.must("create", "--backing", backing, "--key", key)
	mnt := e.mount(e.cfg, backing, "noatime", "nodiratime")
	makeTree(e.t, mnt)
	if n > 0 {
		bulkTree(e.t, mnt, n, size)
	}
	listing := treeListing(e.t, mnt)
	gxUnmount(e.t, mnt)
	waitUnlocked(e.t, backing)
	return backing, listing
}

// waitUnlocked waits until no process holds the volume's lock (a daemon
// that was asked to unmount ends shortly after).
func waitUnlocked(t *testing.T, backing string) {
	t.Helper()
	gxWait(t, "the daemon of "+backing+" to end", 10e9, func() bool {
		return volume.CheckNotInUse(backing) == nil
	})
}

// TestCopyUnderAnotherKey: a copy under another key reads back equal to
// the source through the mount (content, modes, owners, times, links,
// attributes, special files) and stays readable once the source's key is
// disabled; the source's backing is not changed at all; no plaintext
// reaches the copy.
func TestCopyUnderAnotherKey(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			keyA, keyB := e.createKey("alias/copy-a"), e.createKey("alias/copy-b")
			src, want := e.sourceVolume(e.dir, keyA, 0, 0)
			rawBefore := treeListing(t, src)
			dst := filepath.Join(e.dir, "dst")

			srcHeader, err := keywrap.ReadHeader(src)
			if err != nil {
				t.Fatal(err)
			}
			rep := decodeReport(t, e.must("copy", src, "--backing", dst, "--key", keyB, "--json"))
			if rep.Entries != int64(len(want)-1) || rep.Written != rep.Entries || rep.Checked == 0 || rep.KeyID == "" || rep.KeyID == srcHeader.KeyID {
				t.Errorf("report %+v for %d entries (source key %s)", rep, len(want)-1, srcHeader.KeyID)
			}
			sameListing(t, "the source's backing after the copy", rawBefore, treeListing(t, src))
			scanForCanary(t, dst)

			r := e.runWith(e.cfg, "kms", "disable-key", keyA, "--force")
			if r.code != 0 {
				e.must("kms", "disable-key", keyA)
			}
			mnt := e.mount(e.cfg, dst, "ro", "noatime", "nodiratime")
			sameListing(t, "the copy with the source's key disabled", want, treeListing(t, mnt))
			gxUnmount(t, mnt)

			srcMnt := filepath.Join(e.dir, "srcmnt")
			os.Mkdir(srcMnt, 0o755)
			cleanupMount(t, srcMnt)
			r = e.runWith(e.cfg, "mount", src, srcMnt)
			if r.code != exitKeyState {
				t.Errorf("the source still mounts with its key disabled: %v", r)
			}
		})
	}
}

// TestCopyKilledAndRerun: a copy killed once it has finished some files
// leaves a target the mount refuses and no plaintext anywhere, temporary
// files included; the same command run again finishes it and the copy
// equals the source.
func TestCopyKilledAndRerun(t *testing.T) {
	e := newGXEnv(t, "local", "")
	keyA, keyB := e.createKey("alias/copy-a"), e.createKey("alias/copy-b")
	work := filepath.Join(e.dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, work, "2g")
	src, want := e.sourceVolume(work, keyA, 48, 8<<20)
	dst := filepath.Join(work, "dst")
	args := []string{"copy", src, "--backing", dst, "--key", keyB}

	e.killMidway(dst, "unfinished copy of "+src, args...)
	// The killed copy held the source against mounts; its lock died with it.
	rep := decodeReport(t, e.must(append(args, "--json")...))
	if !rep.Resumed || rep.Skipped == 0 || rep.Written == 0 {
		t.Errorf("rerun report %+v", rep)
	}
	noTemporaries(t, dst)
	m := e.mount(e.cfg, dst, "ro", "noatime", "nodiratime")
	sameListing(t, "the copy finished by the rerun", want, treeListing(t, m))
}

// TestCopyRefusals: a mounted source, a source that is no volume, and a
// target that holds a volume or files are refused with one line naming
// the problem and the fix.
func TestCopyRefusals(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/copy")
	src := e.newVolume("src", key)
	plain := filepath.Join(e.dir, "plain")
	os.Mkdir(plain, 0o755)
	nonEmpty := filepath.Join(e.dir, "nonempty")
	os.Mkdir(nonEmpty, 0o755)
	os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o600)
	other := e.newVolume("other", key)

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"copy", plain, "--backing", filepath.Join(e.dir, "t1")}, exitUsage, "is not an encvol volume"},
		{[]string{"copy", src, "--backing", nonEmpty}, exitUsage, "is not empty"},
		{[]string{"copy", src, "--backing", other}, exitUsage, "already holds a volume"},
		{[]string{"copy", src, "--backing", filepath.Join(src, "inner")}, exitUsage, "inside"},
		{[]string{"copy", src}, exitUsage, "--backing DIR"},
	} {
		r := e.runWith(e.cfg, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("encvol %s: want exit %d naming %q: %v", strings.Join(tc.args, " "), tc.code, tc.want, r)
			continue
		}
		oneLine(t, strings.Join(tc.args, " "), r.stderr)
	}

	// A mounted source is no refusal: it is copied through a snapshot
	// (TestCopyMountedAndFromSnapshotUnderAnotherKey).
	for _, dir := range []string{filepath.Join(e.dir, "t1"), filepath.Join(src, "inner")} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("refused copy left %s behind", dir)
		}
	}
}
