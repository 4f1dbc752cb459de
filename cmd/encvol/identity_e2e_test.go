package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// TestServedIdentityChangeKeepsVolumesMounting: a volume's header keeps the
// key ARN it was created with. After the server is restarted with
// --region and --account-id, that ARN still unwraps the volume, while the
// key now answers with the new identity.
func TestServedIdentityChangeKeepsVolumesMounting(t *testing.T) {
	e := newGXEnv(t, "served", "")
	key := e.createKey("alias/identity")
	backing := e.newVolume("vol", key)
	mnt := e.mount(e.cfg, backing)
	data := gxRandom(t, 100_000)
	if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("umount", mnt)
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h.KeyID, "arn:aws:kms:local:000000000000:key/") {
		t.Fatalf("header key ARN %s, want the default identity's", h.KeyID)
	}

	e.killKMS()
	const region, account = "eu-west-1", "111122223333"
	e.serveArgs = []string{"--region", region, "--account-id", account}
	e.startKMS()
	cfg := e.writeConfig("alice-eu.toml", fmt.Sprintf("[kms.corp]\ntype = \"aws\"\nendpoint = \"http://%s\"\nregion = %q\naccess_key_id = %q\nsecret_access_key = %q\n",
		e.addr, region, gxAlice.id, gxAlice.secret), "")

	r := e.mustWith(cfg, "kms", "describe-key", key, "--json")
	var info kmsclient.KeyInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("describe-key --json: %v: %s", err, r.stdout)
	}
	if want := "arn:aws:kms:" + region + ":" + account + ":key/" + info.KeyID; info.Arn != want {
		t.Fatalf("key ARN after the restart %s, want %s", info.Arn, want)
	}
	// Requests signed for another region are refused now, as on AWS.
	if r := e.runWith(e.cfg, "kms", "describe-key", key); r.code == 0 || !strings.Contains(r.stderr, region) {
		t.Fatalf("a request signed for us-east-1 against a server of %s: %v", region, r)
	}
	if err := os.Remove(mnt); err != nil {
		t.Fatal(err)
	}
	mnt = e.mount(cfg, backing)
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through the restarted server: %v", err)
	}
}

// TestServeIdentityFlags: a region or account that cannot stand in an ARN,
// or a negative limit, is a usage error naming the flag.
func TestServeIdentityFlags(t *testing.T) {
	dir := t.TempDir()
	principals := filepath.Join(dir, "p.toml")
	body := "[[principal]]\nname = \"a\"\naccess_key_id = \"AKIDFLAGS0001\"\nsecret_access_key = \"flagsSecretFlagsSecret01\"\n"
	if err := os.WriteFile(principals, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for flag, val := range map[string]string{"--region": "US East", "--account-id": "1234",
		"--rate-limit": "-1", "--max-conns": "-1", "--max-conns-per-addr": "-1"} {
		r := runBin(t, nil, "kms", "serve", "--listen", "127.0.0.1:0", "--store", filepath.Join(dir, "s"), "--principals", principals, flag, val)
		if r.code != exitUsage || !strings.Contains(r.stderr, flag) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("kms serve %s %q: %v", flag, val, r)
		}
	}
}
