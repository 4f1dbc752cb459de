package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms/server"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// End-to-end tests of what a new user meets first: which mounts
// `encvol umount` touches, the messages and exit codes of ordinary
// mistakes, and the help and README that tell them what to type.

// mountTmpfs mounts a tmpfs of size (mount(8) syntax) on dir until the
// test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("mounting a tmpfs needs root")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if fstype, _ := volume.MountType(dir); fstype == "tmpfs" {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

func oneLine(t *testing.T, what, stderr string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "encvol: ") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("%s: want one line starting with \"encvol: \", got %q", what, stderr)
	}
}

// hasEncvolMount reports whether the mount table holds an encvol mount at
// mnt, under whatever may be mounted on top of it.
func hasEncvolMount(t *testing.T, mnt string) bool {
	t.Helper()
	ms, err := volume.EncvolMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Mountpoint == mnt {
			return true
		}
	}
	return false
}

// TestUmountOnlyEncvolMounts: `encvol umount` refuses any mount that is not
// fuse.encvol (naming its type), also when one is stacked on an encvol
// mount, and tells "not mounted" apart with its own exit code.
func TestUmountOnlyEncvolMounts(t *testing.T) {
	e := newEnv(t, "")
	tm := filepath.Join(e.dir, "tm")
	if err := os.Mkdir(tm, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, tm, "1m")
	keep := filepath.Join(tm, "keep")
	if err := os.WriteFile(keep, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.run("umount", tm)
	if r.code != exitUsage || !strings.Contains(r.stderr, tm+" is a tmpfs mount, not an encvol volume") || !strings.Contains(r.stderr, "umount(8)") {
		t.Errorf("encvol umount of a tmpfs: want exit %d naming tmpfs: %v", exitUsage, r)
	}
	oneLine(t, "umount of a tmpfs", r.stderr)
	if fstype, _ := volume.MountType(tm); fstype != "tmpfs" {
		t.Fatalf("the tmpfs is gone after encvol umount (mount table says %q)", fstype)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep" {
		t.Fatalf("the tmpfs lost its file: %q %v", b, err)
	}
	if r := e.run("status", tm); r.code != exitUsage || !strings.Contains(r.stderr, "tmpfs") {
		t.Errorf("status of a tmpfs: want exit %d naming tmpfs: %v", exitUsage, r)
	}

	// A tmpfs mounted over an encvol mount: an unmount would remove the
	// tmpfs, so it is refused and both stay.
	backing, mnt := filepath.Join(e.dir, "b"), filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(t, mnt)
	e.must("create", "--backing", backing)
	e.must("mount", backing, mnt)
	mountTmpfs(t, mnt, "1m")
	r = e.run("umount", mnt)
	if r.code != exitUsage || !strings.Contains(r.stderr, "is a tmpfs mount") {
		t.Errorf("encvol umount of a tmpfs over an encvol mount: %v", r)
	}
	if fstype, _ := volume.MountType(mnt); fstype != "tmpfs" || !hasEncvolMount(t, mnt) {
		t.Fatalf("after the refused umount: top mount %q, encvol mount below: %v", fstype, hasEncvolMount(t, mnt))
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	e.must("umount", mnt)
	if hasEncvolMount(t, mnt) {
		t.Fatal("encvol mount still there after encvol umount")
	}
	r = e.run("umount", mnt)
	if r.code != exitNotMounted || !strings.Contains(r.stderr, "is not mounted") {
		t.Errorf("umount where nothing is mounted: want exit %d: %v", exitNotMounted, r)
	}
	oneLine(t, "umount of nothing", r.stderr)
}

// flipWrappedDK changes one byte of the KMS blob in the header of backing
// (the local KMS's blob: format byte, key ID 1-16, material version 17-20,
// nonce 21-36, then ciphertext and tag; kms/data.go).
func flipWrappedDK(t *testing.T, backing string, orig []byte, pos int) {
	t.Helper()
	re := regexp.MustCompile(`"wrapped_dk":"([^"]+)"`)
	m := re.FindSubmatch(orig)
	if m == nil {
		t.Fatalf("no wrapped_dk in the header:\n%s", orig)
	}
	blob, err := base64.StdEncoding.DecodeString(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if pos < 0 {
		pos += len(blob)
	}
	blob[pos] ^= 0x5a
	changed := bytes.Replace(orig, m[1], []byte(base64.StdEncoding.EncodeToString(blob)), 1)
	if err := os.WriteFile(filepath.Join(backing, keywrap.HeaderFile), changed, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMountDamagedWrappedKey: a changed byte anywhere in the wrapped data
// key is a damaged header (exit 1, restore from a backup), never a deleted
// or unusable key, with the local KMS and with `encvol kms serve`.
func TestMountDamagedWrappedKey(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			backing := e.newVolume("vol", e.createKey("alias/damage"))
			mnt := filepath.Join(e.dir, "m")
			os.Mkdir(mnt, 0o755)
			cleanupMount(t, mnt)
			path := filepath.Join(backing, keywrap.HeaderFile)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, pos := range []int{0, 5, 18, 30, 40, -1} {
				flipWrappedDK(t, backing, orig, pos)
				r := e.runWith(e.cfg, "mount", backing, mnt)
				if r.code != exitFailure {
					t.Errorf("byte %d changed: want exit %d: %v", pos, exitFailure, r)
				}
				for _, want := range []string{"wrapped data key in the header", "is damaged", "restore the header from a backup", path} {
					if !strings.Contains(r.stderr, want) {
						t.Errorf("byte %d changed: message lacks %q: %s", pos, want, r.stderr)
					}
				}
				for _, wrong := range []string{"does not exist", "deleted", "Disabled"} {
					if strings.Contains(r.stderr, wrong) {
						t.Errorf("byte %d changed: message blames the key (%q): %s", pos, wrong, r.stderr)
					}
				}
				oneLine(t, fmt.Sprintf("byte %d changed", pos), r.stderr)
				if mounted(t, mnt) {
					t.Fatalf("byte %d changed: mounted anyway", pos)
				}
			}
			if err := os.WriteFile(path, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			e.mustWith(e.cfg, "mount", backing, mnt)
			e.mustWith(e.cfg, "umount", mnt)
		})
	}
}

// usableKeys lists the keys that are not pending deletion.
func usableKeys(t *testing.T, e *gxEnv) []kmsclient.KeyInfo {
	t.Helper()
	var keys, out []kmsclient.KeyInfo
	if err := json.Unmarshal([]byte(e.must("kms", "list-keys", "--json").stdout), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.State != "PendingDeletion" {
			out = append(out, k)
		}
	}
	return out
}

// TestCreateKeyAliasTaken: create-key with a taken alias refuses before
// creating anything and names the key holding it; an alias the KMS refuses
// leaves no usable key behind. Local KMS and `encvol kms serve` alike.
func TestCreateKeyAliasTaken(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			var first kmsclient.KeyInfo
			if err := json.Unmarshal([]byte(e.must("kms", "create-key", "--alias", "alias/taken", "--json").stdout), &first); err != nil {
				t.Fatal(err)
			}
			before := usableKeys(t, e)
			r := e.runWith(e.cfg, "kms", "create-key", "--alias", "alias/taken")
			if r.code != exitUsage {
				t.Errorf("create-key with a taken alias: want exit %d: %v", exitUsage, r)
			}
			for _, want := range []string{"alias/taken", first.KeyID, "no key was created"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("create-key with a taken alias: message lacks %q: %s", want, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "retry") {
				t.Errorf("create-key with a taken alias suggests a retry: %s", r.stderr)
			}
			oneLine(t, "create-key with a taken alias", r.stderr)
			if after := usableKeys(t, e); len(after) != len(before) {
				t.Errorf("create-key with a taken alias left a key behind: %d usable keys before, %d after", len(before), len(after))
			}
			if backend == "served" {
				// Aliases belong to a principal, as to an AWS account: another
				// principal's alias of the same name is no conflict, and each
				// name resolves to its own principal's key.
				bob := e.principalConfig(gxBob, "")
				var bobs, alices kmsclient.KeyInfo
				if err := json.Unmarshal([]byte(e.mustWith(bob, "kms", "create-key", "--alias", "alias/bobs", "--json").stdout), &bobs); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(e.must("kms", "create-key", "--alias", "alias/bobs", "--json").stdout), &alices); err != nil {
					t.Fatal(err)
				}
				if alices.KeyID == bobs.KeyID {
					t.Errorf("two principals' alias/bobs name one key %s", bobs.KeyID)
				}
				before = usableKeys(t, e)
			}
			// An alias name the KMS refuses only at CreateAlias.
			r = e.runWith(e.cfg, "kms", "create-key", "--alias", "alias/aws/reserved")
			if r.code != exitUsage {
				t.Errorf("create-key with a reserved alias: want exit %d: %v", exitUsage, r)
			}
			if after := usableKeys(t, e); len(after) != len(before) {
				t.Errorf("create-key with a reserved alias left a usable key behind: %d before, %d after", len(before), len(after))
			}
		})
	}
}

// TestServiceKeyRefusedBeforeWarning: disabling or deleting the service key
// is refused first, without the warning about the volumes that use it.
func TestServiceKeyRefusedBeforeWarning(t *testing.T) {
	e := newEnv(t, "")
	e.must("create", "--backing", filepath.Join(e.dir, "b")) // under the service key
	for _, args := range [][]string{
		{"kms", "disable-key", kmsclient.DefaultKeyAlias},
		{"kms", "schedule-key-deletion", kmsclient.DefaultKeyAlias, "--days", "7"},
	} {
		r := e.run(args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "service key") || !strings.Contains(r.stderr, "cannot be") {
			t.Errorf("encvol %s: want exit %d refusing the service key: %v", strings.Join(args, " "), exitUsage, r)
		}
		if strings.Contains(r.stderr, "warning") || strings.Contains(r.stderr, "wraps the data key") {
			t.Errorf("encvol %s warns about volumes before refusing: %s", strings.Join(args, " "), r.stderr)
		}
		oneLine(t, strings.Join(args, " "), r.stderr)
	}
	var k kmsclient.KeyInfo
	if err := json.Unmarshal([]byte(e.must("kms", "describe-key", kmsclient.DefaultKeyAlias, "--json").stdout), &k); err != nil || k.State != "Enabled" {
		t.Fatalf("service key after the refusals: %+v %v", k, err)
	}
}

// TestExitCodes runs each kind of failure through the binary and checks
// the code of the one table (exitcodes.go, README "Exit codes").
func TestExitCodes(t *testing.T) {
	e := newEnv(t, "")
	d := func(name string) string { return filepath.Join(e.dir, name) }
	missing := d("missing.toml")
	down := d("down.toml")
	os.WriteFile(down, []byte("[kms.down]\ntype = \"aws\"\nendpoint = \"http://127.0.0.1:1\"\nregion = \"us-east-1\"\naccess_key_id = \"AKIDDOWN0001\"\nsecret_access_key = \"down-secret-0123456789\"\n"), 0o600)
	for _, dir := range []string{"m", "m2", "m3", "plain", "tm", "full"} {
		os.Mkdir(d(dir), 0o755)
	}
	os.WriteFile(filepath.Join(d("full"), "f"), nil, 0o600)
	cleanupMount(t, d("m2"))
	e.must("kms", "create-key", "--alias", "alias/k")
	e.must("kms", "create-key", "--alias", "alias/off")
	e.must("create", "--backing", d("vol"), "--key", "alias/k")
	e.must("create", "--backing", d("vol2"), "--key", "alias/k")
	e.must("create", "--backing", d("svc")) // makes the service key
	e.must("create", "--backing", d("offvol"), "--key", "alias/off")
	e.must("kms", "disable-key", "alias/off", "--force") // offvol is under it
	e.must("create", "--backing", d("damaged"), "--key", "alias/k")
	hdr, _ := os.ReadFile(filepath.Join(d("damaged"), keywrap.HeaderFile))
	flipWrappedDK(t, d("damaged"), hdr, 5)
	e.must("create", "--backing", d("tampered"), "--key", "alias/k")
	hdr, _ = os.ReadFile(filepath.Join(d("tampered"), keywrap.HeaderFile))
	os.WriteFile(filepath.Join(d("tampered"), keywrap.HeaderFile), bytes.Replace(hdr, []byte(`"sector_size":4096`), []byte(`"sector_size":8192`), 1), 0o600)
	e.must("mount", d("vol2"), d("m2"))
	mountTmpfs(t, d("tm"), "1m")

	cases := []struct {
		name string
		args []string // run with e's configuration unless they start with --config
		code int
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"unknown flag", []string{"mount", "--frobnicate"}, exitUsage},
		{"missing --config (status)", []string{"--config", missing, "status"}, exitUsage},
		{"missing --config (umount)", []string{"--config", missing, "umount", d("m")}, exitUsage},
		{"unknown volume name (mount)", []string{"mount", "nosuch"}, exitUsage},
		{"unknown volume name (create)", []string{"create", "nosuch"}, exitUsage},
		{"unknown volume name (verify)", []string{"verify", "nosuch"}, exitUsage},
		{"missing mountpoint", []string{"mount", d("vol"), d("nomnt")}, exitUsage},
		{"missing backing", []string{"mount", d("noback"), d("m")}, exitUsage},
		{"not a volume", []string{"mount", d("plain"), d("m")}, exitUsage},
		{"create over a volume", []string{"create", "--backing", d("vol")}, exitUsage},
		{"create in a non-empty directory", []string{"create", "--backing", d("full")}, exitUsage},
		{"umount of a tmpfs", []string{"umount", d("tm")}, exitUsage},
		{"taken alias", []string{"kms", "create-key", "--alias", "alias/k"}, exitUsage},
		{"service key disable", []string{"kms", "disable-key", kmsclient.DefaultKeyAlias}, exitUsage},
		{"deletion window", []string{"kms", "schedule-key-deletion", "alias/k", "--days", "3"}, exitUsage},
		{"disabled key (mount)", []string{"mount", d("offvol"), d("m")}, exitKeyState},
		{"unknown key", []string{"kms", "describe-key", "alias/nope"}, exitKeyState},
		{"KMS down (kms)", []string{"--config", down, "kms", "list-keys"}, exitKMSDown},
		{"KMS down (mount)", []string{"--config", down, "mount", d("vol"), d("m")}, exitKMSDown},
		{"not mounted (umount)", []string{"umount", d("m")}, exitNotMounted},
		{"not mounted (status)", []string{"status", d("m")}, exitNotMounted},
		{"already mounted", []string{"mount", d("vol"), d("m2")}, exitMounted},
		{"damaged wrapped key", []string{"mount", d("damaged"), d("m3")}, exitFailure},
		{"tampered header", []string{"mount", d("tampered"), d("m3")}, exitFailure},
	}
	for _, c := range cases {
		var r result
		if c.args[0] == "--config" {
			r = runBin(t, nil, c.args...)
		} else {
			r = e.run(c.args...)
		}
		if r.code != c.code {
			t.Errorf("%s: encvol %s: want exit %d: %v", c.name, strings.Join(c.args, " "), c.code, r)
			continue
		}
		oneLine(t, c.name, r.stderr)
	}
	for _, mp := range []string{"m", "m3"} {
		if mounted(t, d(mp)) {
			t.Errorf("%s is mounted after failed mounts", mp)
		}
	}
}

// leafCommands returns every command of the tree that runs something,
// keyed by its path below the root; cobra's own help and completion
// commands are left out unless withCobra.
func leafCommands(withCobra bool) map[string]*cobra.Command {
	a := &app{stdout: io.Discard, stderr: io.Discard}
	out := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.Hidden && (withCobra || !isCobraOwn(c)) {
			out[commandKey(c)] = c
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCommand())
	return out
}

// TestMissingConfigEveryCommand: an explicit --config that does not exist
// is a usage error (2) for every command, with arguments each command
// would otherwise accept.
func TestMissingConfigEveryCommand(t *testing.T) {
	args := map[string][]string{
		"":                            nil,
		"create":                      {"--backing", "b"},
		"mount":                       {"b", "m"},
		"umount":                      {"m"},
		"status":                      nil,
		"verify":                      {"b"},
		"import":                      {"p", "--backing", "b"},
		"copy":                        {"v", "--backing", "b"},
		"trust":                       {"b"},
		"fsck":                        {"b"},
		"snapshot create":             {"b"},
		"snapshot list":               {"b"},
		"snapshot delete":             {"b", "s"},
		"snapshot restore":            {"b", "s"},
		"kms":                         nil,
		"kms create-key":              nil,
		"kms describe-key":            {"k"},
		"kms enable-key":              {"k"},
		"kms disable-key":             {"k"},
		"kms rotate-key":              {"k"},
		"kms schedule-key-deletion":   {"k", "--days", "7"},
		"kms cancel-key-deletion":     {"k"},
		"kms list-keys":               nil,
		"kms audit":                   nil,
		"kms create-alias":            {"alias/a", "k"},
		"kms list-aliases":            nil,
		"kms create-grant":            {"k", "--grantee", "bob", "--operations", "Decrypt"},
		"kms list-grants":             {"k"},
		"kms revoke-grant":            {"k", "g"},
		"kms import-key-material":     {"k", "--material", "f"},
		"kms serve":                   {"--store", "s", "--principals", "p"},
		"kms key-usage":               {"k"},
		"kms principal":               nil,
		"kms principal add":           {"bob", "--principals", "p"},
		"kms principal list":          {"--principals", "p"},
		"kms principal remove":        {"bob", "--principals", "p"},
		"kms principal rotate-secret": {"bob", "--principals", "p"},
		"kms group":                   nil,
		"kms group set":               {"team", "--members", "bob", "--principals", "p"},
		"kms group remove":            {"team", "--principals", "p"},
		"share":                       {"b", "--with", "bob"},
		"unshare":                     {"b", "--with", "bob"},
		"shares":                      {"b"},
		"rekey":                       {"b", "--key", "k"},
		"header":                      nil,
		"header backup":               {"b", "f"},
		"header restore":              {"b", "f"},
	}
	missing := filepath.Join(t.TempDir(), "missing.toml")
	for key, c := range leafCommands(false) {
		if !c.Runnable() {
			continue
		}
		a, ok := args[key]
		if !ok {
			t.Errorf("command %q is not in this test's table: add arguments it accepts", key)
			continue
		}
		argv := append([]string{"--config", missing}, strings.Fields(key)...)
		r := runBin(t, nil, append(argv, a...)...)
		want := exitUsage
		if key == "fsck" {
			want = volume.FsckUsage // e2fsck's code, fsck's own table
		}
		if r.code != want || !strings.Contains(r.stderr, missing+" does not exist") {
			t.Errorf("encvol %s with a missing --config: want exit %d naming the file: %v", key, want, r)
		}
	}
}

// TestEveryCommandHasExamples: every command's --help, from the binary,
// has an Examples section.
func TestEveryCommandHasExamples(t *testing.T) {
	cmds := leafCommands(true)
	if len(cmds) < 20 {
		t.Fatalf("only %d commands found in the tree", len(cmds))
	}
	for key := range cmds {
		r := runBin(t, nil, append(strings.Fields(key), "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "\nExamples:\n  ") {
			t.Errorf("encvol %s --help has no Examples section: %v", key, r)
		}
	}
}

// TestServeHelpPrincipals: `kms serve --help` shows a principals file that
// the server accepts and states the secret-length rule the server enforces.
func TestServeHelpPrincipals(t *testing.T) {
	r := runBin(t, nil, "kms", "serve", "--help")
	if r.code != 0 {
		t.Fatal(r)
	}
	start := strings.Index(r.stdout, "\n  [[principal]]")
	end := strings.Index(r.stdout, "\nRules")
	if start < 0 || end < start {
		t.Fatalf("kms serve --help shows no sample principals file:\n%s", r.stdout)
	}
	dir := t.TempDir()
	sample := filepath.Join(dir, "principals.toml")
	if err := os.WriteFile(sample, []byte(r.stdout[start:end]), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := server.LoadPrincipals(sample)
	if err != nil || len(ps) == 0 {
		t.Fatalf("the sample principals file of kms serve --help does not load: %v\n%s", err, r.stdout[start:end])
	}
	rule := fmt.Sprintf("secret_access_key at least %d bytes", server.MinSecretLen)
	if !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), rule) {
		t.Errorf("kms serve --help does not state %q:\n%s", rule, r.stdout)
	}
	// The rule as stated is the one enforced: one byte less is refused.
	for n, ok := range map[int]bool{server.MinSecretLen - 1: false, server.MinSecretLen: true} {
		f := filepath.Join(dir, fmt.Sprintf("p%d.toml", n))
		body := fmt.Sprintf("[[principal]]\nname = \"a\"\naccess_key_id = \"AKIDTEST0001\"\nsecret_access_key = %q\n", strings.Repeat("s", n))
		os.WriteFile(f, []byte(body), 0o600)
		if _, err := server.LoadPrincipals(f); (err == nil) != ok {
			t.Errorf("a %d-byte secret: loaded %v, want %v (%v)", n, err == nil, ok, err)
		}
	}
}

// TestReadmeGettingStarted: the README starts with the two commands and
// installs the binary and scripts/mount.fuse.encvol before it shows
// `mount -t fuse.encvol` (TestMountTypeFuseEncvol runs that script).
func TestReadmeGettingStarted(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	first := strings.Index(readme, "```sh\n")
	if first < 0 || !strings.HasPrefix(readme[first:], "```sh\n./scripts/quickstart.sh") || !strings.Contains(readme[first:first+300], "./scripts/test.sh") {
		t.Errorf("README does not start with quickstart.sh and test.sh")
	}
	at := func(s string) int {
		i := strings.Index(readme, s)
		if i < 0 {
			t.Fatalf("README lacks %q", s)
		}
		return i
	}
	mountType := at("\nmount -t fuse.encvol")
	for _, step := range []string{"go build -o encvol ./cmd/encvol", "install -m 0755 encvol /usr/local/bin/encvol", "install -m 0755 scripts/mount.fuse.encvol /sbin/mount.fuse.encvol"} {
		if at(step) > mountType {
			t.Errorf("README shows `mount -t fuse.encvol` before %q", step)
		}
	}
	for _, code := range []int{exitOK, exitFailure, exitUsage, exitKeyState, exitKMSDown, exitNotMounted, exitMounted, exitRefused} {
		if !strings.Contains(readme, fmt.Sprintf("\n| %d | ", code)) {
			t.Errorf("README's exit code table lacks %d", code)
		}
	}
}

// TestReadmeListsEveryCommand: the README's command table names every
// command of the tree (cobra's own help and completion aside).
func TestReadmeListsEveryCommand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(b), "\n## Commands\n")
	if start < 0 {
		t.Fatal("README has no ## Commands section")
	}
	table := string(b)[start:]
	table = table[:strings.Index(table[1:], "\n## ")+1]
	for key := range leafCommands(false) {
		if key == "" {
			continue
		}
		words := strings.Fields(key)
		name := words[len(words)-1]
		if !regexp.MustCompile("[`| \\\\]" + regexp.QuoteMeta(name) + "[`| \\\\]").MatchString(table) {
			t.Errorf("README's command table does not name %q", key)
		}
	}
}
