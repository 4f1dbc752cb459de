package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/encvol/encvol/volume"
)

// End-to-end tests of sharing through the real binary: `encvol kms serve`
// over TLS (--tls-self-signed) with principals added while it runs, the
// owner's commands and mounts, and the sharees' own configurations and
// mounts.

// shareEnv is a gxEnv whose server speaks TLS and whose principals are
// added with `encvol kms principal add` while it runs.
type shareEnv struct {
	*gxEnv
	ca  string
	cfg map[string]string // principal → its configuration
}

func newShareEnv(t *testing.T) *shareEnv {
	t.Helper()
	e := newGXEnv(t, "local", "")
	e.kmsName = "corp"
	e.store = filepath.Join(e.dir, "kms-store")
	e.principals = filepath.Join(e.dir, "principals.toml")
	s := &shareEnv{gxEnv: e, ca: filepath.Join(e.dir, "tls", "ca.pem"), cfg: map[string]string{}}
	// The first principal makes the file the server starts with.
	alice := s.addPrincipal("alice")
	e.addr = gxFreeAddr(t)
	e.serveArgs = []string{"--tls-self-signed", filepath.Join(e.dir, "tls")}
	e.startKMS()
	s.writePrincipalConfig("alice", alice)
	e.cfg = s.cfg["alice"]
	return s
}

// addPrincipal runs `encvol kms principal add NAME --json`.
func (s *shareEnv) addPrincipal(name string) newKeyOutput {
	s.t.Helper()
	cmd := exec.Command(encvolBin, "kms", "principal", "add", name, "--principals", s.principals, "--json")
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("kms principal add %s: %v", name, err)
	}
	var k newKeyOutput
	if err := json.Unmarshal(out, &k); err != nil || k.Name != name || k.AccessKeyID == "" || len(k.SecretAccessKey) < 16 {
		s.t.Fatalf("kms principal add --json: %v: %s", err, out)
	}
	return k
}

// writePrincipalConfig gives name a configuration of its own: its KMS is
// called "team" there (not the owner's "corp"), as another host would.
func (s *shareEnv) writePrincipalConfig(name string, k newKeyOutput) {
	kmsName := "team"
	if name == "alice" {
		kmsName = "corp"
	}
	s.cfg[name] = s.writeConfig(name+".toml", fmt.Sprintf("[kms.%s]\ntype = \"aws\"\nendpoint = \"https://%s\"\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\nca_file = %q\n",
		kmsName, s.addr, k.AccessKeyID, k.SecretAccessKey, s.ca), "")
}

// principal adds name and waits until the running server accepts it.
func (s *shareEnv) principal(name string) string {
	s.t.Helper()
	s.writePrincipalConfig(name, s.addPrincipal(name))
	gxWait(s.t, "server accepts "+name, 5*time.Second, func() bool { return s.runWith(s.cfg[name], "kms", "list-keys").code == 0 })
	return s.cfg[name]
}

// mountAs mounts backing (daemonized) with cfg on a new directory.
func (s *shareEnv) mountAs(cfg, backing, name string) string {
	s.t.Helper()
	mnt := filepath.Join(s.dir, name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { gxUnmount(s.t, mnt) })
	s.mustWith(cfg, "mount", backing, mnt)
	return mnt
}

// copyTree copies a backing directory (or snapshot) as another host would
// receive it.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}

func (s *shareEnv) shares(target string) volume.ShareReport {
	s.t.Helper()
	var rep volume.ShareReport
	r := s.must("shares", target, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		s.t.Fatalf("shares --json: %v: %s", err, r.stdout)
	}
	return rep
}

// TestShareSnapshotEndToEnd: the owner shares a snapshot with bob, who
// mounts his copy of it with his own credentials and reads; carol, without
// a grant, is refused at mount; bob cannot unwrap another volume under the
// same key, nor administer or pass on the key; unshare closes bob's live
// mount within key_check_interval + 1 s while the owner's stays open; a
// new share reopens it by itself.
func TestShareSnapshotEndToEnd(t *testing.T) {
	s := newShareEnv(t)
	bob, carol := s.principal("bob"), s.principal("carol")
	key := s.createKey("alias/team")
	b1, b2 := s.newVolume("vol1", key), s.newVolume("vol2", key)
	owner := s.mountAs(s.cfg["alice"], b1, "owner")
	data := gxRandom(t, 200_000)
	if err := os.WriteFile(filepath.Join(owner, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	snap := s.snapshot(b1).Path
	bobCopy := filepath.Join(s.dir, "bobcopy")
	copyTree(t, snap, bobCopy)
	copy2 := filepath.Join(s.dir, "vol2-copy")
	copyTree(t, b2, copy2)

	r := s.must("share", snap, "--with", "bob")
	if !strings.Contains(r.stdout, "shared snapshot") || !strings.Contains(r.stdout, "with bob") {
		t.Fatalf("share output: %s", r.stdout)
	}
	if again := s.must("share", snap, "--with", "bob"); !strings.Contains(again.stdout, "already shared") {
		t.Fatalf("second share: %s", again.stdout)
	}
	rep := s.shares(snap)
	if len(rep.Shares) != 1 || rep.Shares[0].Grantee != "bob" || rep.Shares[0].ReadOnly || rep.Snapshot == "" {
		t.Fatalf("shares: %+v", rep)
	}
	if tbl := s.must("shares", b1).stdout; !strings.Contains(tbl, "bob") || !strings.Contains(tbl, "read-write") {
		t.Fatalf("shares of the volume (same ID as its snapshot):\n%s", tbl)
	}

	bobMnt := s.mountAs(bob, bobCopy, "bob")
	if got, err := os.ReadFile(filepath.Join(bobMnt, "f")); err != nil || string(got) != string(data) {
		t.Fatalf("bob reads the shared snapshot: %v", err)
	}

	// carol: no grant. Refused at mount, naming the problem and the fix.
	carolMnt := filepath.Join(s.dir, "carol")
	if err := os.Mkdir(carolMnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gxUnmount(t, carolMnt) })
	r = s.runWith(carol, "mount", bobCopy, carolMnt)
	if r.code != exitKeyState || !strings.Contains(r.stderr, "refuses access") || !strings.Contains(r.stderr, "encvol share") ||
		!strings.Contains(r.stderr, "user/carol") {
		t.Fatalf("carol's mount: want exit %d, AccessDenied naming her and `encvol share`: %v", exitKeyState, r)
	}
	oneLine(t, "carol's mount", r.stderr)

	// bob: the grant is bound to the volume's encryption context.
	bob2 := filepath.Join(s.dir, "bob2")
	if err := os.Mkdir(bob2, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gxUnmount(t, bob2) })
	if r := s.runWith(bob, "mount", copy2, bob2); r.code != exitKeyState || !strings.Contains(r.stderr, "refuses access") {
		t.Fatalf("bob mounting another volume under the same key: %v", r)
	}
	// bob may not administer the key or pass it on. alice's alias is hers
	// (aliases are per principal), so bob names the key by its ARN.
	var ki struct {
		Arn string `json:"arn"`
	}
	if err := json.Unmarshal([]byte(s.must("kms", "describe-key", key, "--json").stdout), &ki); err != nil || ki.Arn == "" {
		t.Fatalf("describe-key --json: %v %+v", err, ki)
	}
	if r := s.runWith(bob, "kms", "describe-key", key, "--kms", "team"); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("bob resolved alice's alias %s: %v", key, r)
	}
	for _, args := range [][]string{
		{"kms", "disable-key", ki.Arn, "--kms", "team"},
		{"kms", "create-grant", ki.Arn, "--grantee", "carol", "--operations", "Decrypt", "--kms", "team"},
		{"kms", "schedule-key-deletion", ki.Arn, "--days", "7", "--kms", "team"},
	} {
		r := s.runWith(bob, args...)
		if r.code != exitKeyState || !strings.Contains(r.stderr, "AccessDenied") || !strings.Contains(r.stderr, "user/bob") {
			t.Errorf("bob: encvol %s: want AccessDenied naming him: %v", strings.Join(args, " "), r)
		}
	}
	if r := s.runWith(bob, "share", bobCopy, "--with", "carol"); r.code != exitKeyState || !strings.Contains(r.stderr, "only the owner") {
		t.Errorf("bob sharing alice's snapshot: %v", r)
	}

	// unshare: bob's live mount closes, the owner's stays open.
	s.must("unshare", snap, "--with", "bob")
	took := gxWait(t, "bob's mount closed after unshare", 10*time.Second, func() bool {
		return gxReadEIO(t, filepath.Join(bobMnt, "f"), data)
	})
	if took > gxCloseBound {
		t.Errorf("bob's mount closed %v after unshare; want within %v", took, gxCloseBound)
	}
	t.Logf("bob's gate closed %v after unshare", took)
	if got, err := os.ReadFile(filepath.Join(owner, "f")); err != nil || string(got) != string(data) {
		t.Fatalf("the owner's mount after unshare: %v", err)
	}
	if st := s.statusAs(bob, bobMnt); st.Gate != "closed" || st.KeyState != "AccessDenied" {
		t.Fatalf("bob's status after unshare: gate %s, key %s", st.Gate, st.KeyState)
	}
	if r := s.must("unshare", snap, "--with", "bob"); !strings.Contains(r.stdout, "nothing revoked") {
		t.Fatalf("second unshare: %s", r.stdout)
	}

	// share again: bob's mount reopens by itself.
	s.must("share", snap, "--with", "bob")
	gxWait(t, "bob's mount reopened after the new share", 10*time.Second, func() bool {
		return !gxReadEIO(t, filepath.Join(bobMnt, "f"), data)
	})
}

// statusAs reads a mount's status with cfg.
func (s *shareEnv) statusAs(cfg, mnt string) volume.Status {
	s.t.Helper()
	var st volume.Status
	if err := json.Unmarshal([]byte(s.mustWith(cfg, "status", mnt, "--json").stdout), &st); err != nil {
		s.t.Fatal(err)
	}
	return st
}

// TestShareReadOnlyGroupsAndPrincipals: a read-only share mounts read-only;
// a share with a group admits its members as the group is now; a read-write
// mount whose share turns read-only closes; a principal removed from the
// principals file of the running server is refused within seconds.
func TestShareReadOnlyGroupsAndPrincipals(t *testing.T) {
	s := newShareEnv(t)
	bob, carol := s.principal("bob"), s.principal("carol")
	key := s.createKey("alias/team")
	b := s.newVolume("vol", key)
	owner := s.mountAs(s.cfg["alice"], b, "owner")
	if err := os.WriteFile(filepath.Join(owner, "f"), []byte("team data"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.must("umount", owner)
	bobCopy, carolCopy := filepath.Join(s.dir, "bobcopy"), filepath.Join(s.dir, "carolcopy")
	copyTree(t, b, bobCopy)
	copyTree(t, b, carolCopy)

	// A group share, read-only: bob mounts read-only.
	grp := exec.Command(encvolBin, "kms", "group", "set", "team", "--members", "bob", "--principals", s.principals)
	if out, err := grp.CombinedOutput(); err != nil {
		t.Fatalf("kms group set: %v: %s", err, out)
	}
	gxWait(t, "group share accepted", 5*time.Second, func() bool {
		return s.runWith(s.cfg["alice"], "share", b, "--with", "group:team", "--read-only").code == 0
	})
	if rep := s.shares(b); len(rep.Shares) != 1 || rep.Shares[0].Grantee != "group:team" || !rep.Shares[0].ReadOnly {
		t.Fatalf("shares: %+v", rep)
	}
	bobMnt := s.mountAs(bob, bobCopy, "bob")
	if got, err := os.ReadFile(filepath.Join(bobMnt, "f")); err != nil || string(got) != "team data" {
		t.Fatalf("bob reads: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(bobMnt, "g"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("bob writes through a read-only share: %v, want EROFS", err)
	}
	if st := s.statusAs(bob, bobMnt); !st.ReadOnly {
		t.Fatal("bob's status does not say read-only")
	}

	// carol: a read-write share; she mounts read-write, then the share
	// turns read-only and her mount closes, saying to mount again.
	s.must("share", b, "--with", "carol")
	carolMnt := s.mountAs(carol, carolCopy, "carol")
	if err := os.WriteFile(filepath.Join(carolMnt, "h"), []byte("carol was here"), 0o644); err != nil {
		t.Fatalf("carol writes through a read-write share: %v", err)
	}
	if r := s.must("share", b, "--with", "carol", "--read-only"); !strings.Contains(r.stdout, "replaced the read-write share") {
		t.Fatalf("share --read-only over a read-write share: %s", r.stdout)
	}
	gxWait(t, "carol's read-write mount closed", 10*time.Second, func() bool {
		return s.statusAs(carol, carolMnt).KeyState == volume.StateSharedReadOnly
	})
	if st := s.statusAs(carol, carolMnt); st.Gate != "closed" || !strings.Contains(st.GateCause, "mount it again") {
		t.Fatalf("carol's status: %+v", st)
	}
	s.mustWith(carol, "umount", carolMnt)
	s.mustWith(carol, "mount", carolCopy, carolMnt)
	if st := s.statusAs(carol, carolMnt); !st.ReadOnly || st.Gate != "open" {
		t.Fatalf("carol mounted again: read-only %v, gate %s", st.ReadOnly, st.Gate)
	}

	// Out of the group, out of the share: bob's mount closes.
	grp = exec.Command(encvolBin, "kms", "group", "set", "team", "--principals", s.principals)
	if out, err := grp.CombinedOutput(); err != nil {
		t.Fatalf("kms group set (no members): %v: %s", err, out)
	}
	gxWait(t, "bob's mount closed after leaving the group", 10*time.Second, func() bool {
		return gxReadEIO(t, filepath.Join(bobMnt, "f"), []byte("team data"))
	})

	// carol removed from the principals file while the server runs.
	rm := exec.Command(encvolBin, "kms", "principal", "remove", "carol", "--principals", s.principals)
	if out, err := rm.CombinedOutput(); err != nil || !strings.Contains(string(out), "stay on the keys") {
		t.Fatalf("kms principal remove carol: %v: %s", err, out)
	}
	took := gxWait(t, "carol refused after her removal", 5*time.Second, func() bool {
		r := s.runWith(carol, "kms", "list-keys")
		return r.code != 0 && strings.Contains(r.stderr, "UnrecognizedClient")
	})
	t.Logf("carol refused %v after her removal", took)
	gxWait(t, "carol's mount closed after her removal", 10*time.Second, func() bool {
		return s.statusAs(carol, carolMnt).Gate == "closed"
	})
}

// TestShareRefusals: a volume under the service key is refused with the
// copy command that makes a shareable copy; the embedded KMS refuses to
// share with a sentence saying to serve the key store.
func TestShareRefusals(t *testing.T) {
	s := newShareEnv(t)
	s.principal("bob")
	sv := filepath.Join(s.dir, "sv")
	s.must("create", "--backing", sv)
	r := s.runWith(s.cfg["alice"], "share", sv, "--with", "bob")
	want := "`encvol copy " + sv + " --backing " + sv + "-shared --key alias/shared`"
	if r.code != exitRefused || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "service key") {
		t.Fatalf("sharing a service-key volume: want exit %d with %s: %v", exitRefused, want, r)
	}
	oneLine(t, "service key refusal", r.stderr)
	// A grantee the server does not know (a typo) is an argument to change.
	s.createKey("alias/other")
	ov := s.newVolume("ov", "alias/other")
	if r := s.runWith(s.cfg["alice"], "share", ov, "--with", "bbo"); r.code != exitUsage || !strings.Contains(r.stderr, `no principal "bbo"`) {
		t.Fatalf("share with an unknown principal: %v", r)
	}
	if r := s.runWith(s.cfg["alice"], "share", ov, "--with", "group:nobody"); r.code != exitUsage || !strings.Contains(r.stderr, "group") {
		t.Fatalf("share with an unknown group: %v", r)
	}
	if r := s.runWith(s.cfg["alice"], "share", ov, "--with", "a/b"); r.code != exitUsage {
		t.Fatalf("share with a malformed grantee: %v", r)
	}
	// The command it gives works, and the copy can be shared.
	s.createKey("alias/shared")
	s.must("copy", sv, "--backing", sv+"-shared", "--key", "alias/shared")
	s.must("share", sv+"-shared", "--with", "bob")

	l := newGXEnv(t, "local", "")
	lv := l.newVolume("vol", l.createKey("alias/k"))
	r = l.runWith(l.cfg, "share", lv, "--with", "bob")
	if r.code != exitRefused || !strings.Contains(r.stderr, "embedded key store") || !strings.Contains(r.stderr, "encvol kms serve --store") {
		t.Fatalf("sharing on the embedded KMS: %v", r)
	}
	oneLine(t, "embedded KMS refusal", r.stderr)
}
