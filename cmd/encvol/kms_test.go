package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kms/server"
	"github.com/encvol/encvol/kmsclient"
)

// kmsEnv is a configuration file with one local KMS in a temp directory.
type kmsEnv struct {
	t        *testing.T
	config   string
	storeDir string
}

func newKMSEnv(t *testing.T) *kmsEnv {
	t.Helper()
	dir := t.TempDir()
	store := filepath.Join(dir, "kms")
	cfg := filepath.Join(dir, "encvol.toml")
	body := fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n", store)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &kmsEnv{t: t, config: cfg, storeDir: store}
}

// run runs encvol in process and returns exit code, stdout and stderr.
func (e *kmsEnv) run(args ...string) (int, string, string) {
	e.t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"--config", e.config}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs encvol and fails the test unless it exits 0.
func (e *kmsEnv) ok(args ...string) string {
	e.t.Helper()
	code, out, errs := e.run(args...)
	if code != 0 {
		e.t.Fatalf("encvol %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// fails runs encvol and checks the exit code and that stderr says something.
func (e *kmsEnv) fails(code int, args ...string) string {
	e.t.Helper()
	got, out, errs := e.run(args...)
	if got != code {
		e.t.Fatalf("encvol %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errs)
	}
	if !strings.HasPrefix(errs, "encvol: ") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		e.t.Errorf("encvol %s: error output is not one line: %q", strings.Join(args, " "), errs)
	}
	return errs
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	return v
}

func TestKMSKeyLifecycle(t *testing.T) {
	e := newKMSEnv(t)
	k := decodeJSON[kmsclient.KeyInfo](t, e.ok("kms", "create-key", "--alias", "alias/app", "--description", "app data", "--json"))
	if k.State != "Enabled" || k.KeyID == "" || k.Description != "app data" || len(k.Aliases) != 1 || k.Aliases[0] != "alias/app" {
		t.Fatalf("create-key --json = %+v", k)
	}

	keys := decodeJSON[[]kmsclient.KeyInfo](t, e.ok("kms", "list-keys", "--json"))
	if len(keys) != 1 || keys[0].KeyID != k.KeyID || keys[0].State != "Enabled" || len(keys[0].Aliases) != 1 {
		t.Fatalf("list-keys --json = %+v, want the one key with its alias", keys)
	}
	table := e.ok("kms", "list-keys")
	if !strings.Contains(table, "KEY ID") || !strings.Contains(table, k.KeyID) || !strings.Contains(table, "alias/app") {
		t.Fatalf("list-keys table:\n%s", table)
	}

	d := decodeJSON[kmsclient.KeyInfo](t, e.ok("kms", "describe-key", "alias/app", "--json"))
	if d.KeyID != k.KeyID || d.Arn != k.Arn {
		t.Fatalf("describe-key alias/app = %+v, want key %s", d, k.KeyID)
	}
	if out := e.ok("kms", "describe-key", k.KeyID); !strings.Contains(out, k.Arn) || !strings.Contains(out, "Enabled") {
		t.Fatalf("describe-key table:\n%s", out)
	}

	ch := decodeJSON[stateChange](t, e.ok("kms", "disable-key", "alias/app", "--json"))
	if ch.State != "Disabled" || ch.KeyID != k.KeyID {
		t.Fatalf("disable-key --json = %+v", ch)
	}
	// Key-state failures exit 3 and say what to do.
	msg := e.fails(exitKeyState, "kms", "rotate-key", "alias/app")
	if !strings.Contains(msg, "enable-key") {
		t.Errorf("rotate-key of a disabled key: %q does not say how to enable it", msg)
	}
	if out := e.ok("kms", "enable-key", "alias/app"); !strings.Contains(out, "Enabled") {
		t.Fatalf("enable-key output: %s", out)
	}
	e.ok("kms", "rotate-key", k.KeyID)

	e.fails(exitUsage, "kms", "schedule-key-deletion", k.KeyID, "--days", "3")
	e.fails(exitUsage, "kms", "schedule-key-deletion", k.KeyID)
	ch = decodeJSON[stateChange](t, e.ok("kms", "schedule-key-deletion", k.KeyID, "--days", "7", "--json"))
	if ch.State != "PendingDeletion" || ch.Deletion == nil || time.Until(*ch.Deletion) < 6*24*time.Hour {
		t.Fatalf("schedule-key-deletion --json = %+v", ch)
	}
	e.fails(exitKeyState, "kms", "enable-key", k.KeyID)
	ch = decodeJSON[stateChange](t, e.ok("kms", "cancel-key-deletion", k.KeyID, "--json"))
	if ch.State != "Disabled" {
		t.Fatalf("cancel-key-deletion left state %q, want Disabled", ch.State)
	}
	e.ok("kms", "enable-key", k.KeyID)

	// Unknown keys and KMS names.
	msg = e.fails(exitKeyState, "kms", "describe-key", "alias/nope")
	if !strings.Contains(msg, "alias/nope") || !strings.Contains(msg, "list-keys") {
		t.Errorf("describe-key of an unknown alias: %q", msg)
	}
	e.fails(exitUsage, "kms", "list-keys", "--kms", "nosuch")
	e.fails(exitUsage, "kms", "create-key", "--origin", "hsm")
	e.fails(exitUsage, "kms", "describe-key")

	// Aliases.
	e.ok("kms", "create-alias", "alias/second", k.KeyID)
	as := decodeJSON[[]kmsclient.AliasInfo](t, e.ok("kms", "list-aliases", "--json"))
	if len(as) != 2 {
		t.Fatalf("list-aliases --json = %+v, want 2 aliases", as)
	}
	e.fails(exitUsage, "kms", "create-alias", "second", k.KeyID)
}

func TestKMSGrants(t *testing.T) {
	e := newKMSEnv(t)
	k := decodeJSON[kmsclient.KeyInfo](t, e.ok("kms", "create-key", "--json"))
	g := decodeJSON[map[string]any](t, e.ok("kms", "create-grant", k.KeyID, "--grantee", "bob", "--operations", "Decrypt,DescribeKey", "--json"))
	id, _ := g["grant_id"].(string)
	if id == "" {
		t.Fatalf("create-grant --json = %v, want a grant_id", g)
	}
	grants := decodeJSON[[]kmsclient.GrantInfo](t, e.ok("kms", "list-grants", k.KeyID, "--json"))
	if len(grants) != 1 || grants[0].GrantID != id || grants[0].Grantee != "arn:aws:iam::000000000000:user/bob" || strings.Join(grants[0].Operations, ",") != "Decrypt,DescribeKey" {
		t.Fatalf("list-grants --json = %+v", grants)
	}
	if out := e.ok("kms", "list-grants", k.KeyID); !strings.Contains(out, id) || !strings.Contains(out, "bob") {
		t.Fatalf("list-grants table:\n%s", out)
	}
	e.ok("kms", "revoke-grant", k.KeyID, id)
	if grants := decodeJSON[[]kmsclient.GrantInfo](t, e.ok("kms", "list-grants", k.KeyID, "--json")); len(grants) != 0 {
		t.Fatalf("list-grants after revoke = %+v", grants)
	}
	e.fails(exitKeyState, "kms", "revoke-grant", k.KeyID, id)
	e.fails(exitUsage, "kms", "create-grant", k.KeyID, "--grantee", "bob")
}

func TestKMSAuditAndDisableWarning(t *testing.T) {
	e := newKMSEnv(t)
	k := decodeJSON[kmsclient.KeyInfo](t, e.ok("kms", "create-key", "--alias", "alias/vols", "--json"))

	// Two volumes fetch their data keys, as create and mount do.
	ctx := context.Background()
	c, err := kmsclient.New(ctx, "local", kmsclient.Config{Type: "local", Path: e.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, vol := range []string{"vol-11111111111111111111111111111111", "vol-22222222222222222222222222222222"} {
		ec := map[string]string{kmsclient.VolumeContextKey: vol}
		dk, blob, _, err := c.GenerateDataKey(ctx, "alias/vols", ec)
		if err != nil {
			t.Fatal(err)
		}
		dk.Close()
		dk, err = c.Decrypt(ctx, "", blob, ec)
		if err != nil {
			t.Fatal(err)
		}
		dk.Close()
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	recs := decodeJSON[[]kmsclient.AuditRecord](t, e.ok("kms", "audit", "--json"))
	ops := map[string]int{}
	for _, r := range recs {
		ops[r.Operation]++
	}
	if ops["CreateKey"] != 1 || ops["GenerateDataKey"] != 2 || ops["Decrypt"] != 2 {
		t.Fatalf("audit --json operations = %v, want CreateKey 1, GenerateDataKey 2, Decrypt 2", ops)
	}
	if recs := decodeJSON[[]kmsclient.AuditRecord](t, e.ok("kms", "audit", "--key", "alias/vols", "--limit", "2", "--json")); len(recs) != 2 {
		t.Fatalf("audit --limit 2 gave %d records", len(recs))
	}
	if out := e.ok("kms", "audit", "--key", k.KeyID); !strings.Contains(out, "encvol:volume-id=vol-1111") {
		t.Fatalf("audit table lacks the volume context:\n%s", out)
	}
	uses := decodeJSON[[]kmsclient.VolumeUse](t, e.ok("kms", "audit", "--key", "alias/vols", "--volumes", "--json"))
	if len(uses) != 2 {
		t.Fatalf("audit --volumes = %+v", uses)
	}

	code, out, errs := e.run("kms", "disable-key", "alias/vols")
	if code != 0 {
		t.Fatalf("disable-key: exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "warning") || !strings.Contains(errs, "vol-11111111111111111111111111111111") || !strings.Contains(errs, "vol-22222222222222222222222222222222") {
		t.Fatalf("disable-key did not warn about the volumes using the key:\n%s", errs)
	}
	if !strings.Contains(out, "Disabled") {
		t.Fatalf("disable-key output: %s", out)
	}
	recs = decodeJSON[[]kmsclient.AuditRecord](t, e.ok("kms", "audit", "--key", "alias/vols", "--json"))
	if last := recs[len(recs)-1]; last.Operation != "DisableKey" || last.Result != "ok" {
		t.Fatalf("last audit record = %+v, want DisableKey ok", last)
	}
}

func TestKMSImportKeyMaterial(t *testing.T) {
	e := newKMSEnv(t)
	k := decodeJSON[kmsclient.KeyInfo](t, e.ok("kms", "create-key", "--origin", "external", "--json"))
	if k.State != "PendingImport" || k.Origin != kmsclient.OriginExternal {
		t.Fatalf("create-key --origin external = %+v", k)
	}
	dir := t.TempDir()
	short := filepath.Join(dir, "short.bin")
	if err := os.WriteFile(short, make([]byte, 31), 0o600); err != nil {
		t.Fatal(err)
	}
	e.fails(exitUsage, "kms", "import-key-material", k.KeyID, "--material", short)
	material := make([]byte, 32)
	if _, err := rand.Read(material); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "material.bin")
	if err := os.WriteFile(good, material, 0o600); err != nil {
		t.Fatal(err)
	}
	ch := decodeJSON[stateChange](t, e.ok("kms", "import-key-material", k.KeyID, "--material", good, "--json"))
	if ch.State != "Enabled" {
		t.Fatalf("import-key-material left state %q", ch.State)
	}
}

// TestKMSRemote drives the verbs through the aws backend against the
// KMS server on loopback.
func TestKMSRemote(t *testing.T) {
	store, err := kms.Open(filepath.Join(t.TempDir(), "store"), kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := server.New(store, []server.Principal{{Name: "alice", AccessKeyID: "AKIAALICE0000000001", SecretAccessKey: "alice-secret"}}, zerolog.Nop(), server.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx, "127.0.0.1:0", "", "", func(a net.Addr) { addrc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("server: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	defer stop()

	e := newKMSEnv(t)
	body := fmt.Sprintf("[kms.corp]\ntype = \"aws\"\nendpoint = \"http://%s\"\nregion = \"us-east-1\"\naccess_key_id = \"AKIAALICE0000000001\"\nsecret_access_key = \"alice-secret\"\n", addr)
	if err := os.WriteFile(e.config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	k := decodeJSON[kmsclient.KeyInfo](t, e.ok("kms", "create-key", "--alias", "alias/remote", "--json"))
	keys := decodeJSON[[]kmsclient.KeyInfo](t, e.ok("kms", "list-keys", "--json"))
	if len(keys) != 1 || keys[0].KeyID != k.KeyID || len(keys[0].Aliases) != 1 || keys[0].Aliases[0] != "alias/remote" {
		t.Fatalf("remote list-keys --json = %+v", keys)
	}
	code, out, errs := e.run("kms", "disable-key", "alias/remote")
	if code != 0 {
		t.Fatalf("remote disable-key: exit %d: %s", code, errs)
	}
	// The remote KMS cannot tell which volumes use the key; the output says where to look.
	if !strings.Contains(out, "Disabled") || !strings.Contains(out, "kms audit --key alias/remote") {
		t.Fatalf("remote disable-key output:\n%s", out)
	}
	msg := e.fails(exitFailure, "kms", "audit")
	if !strings.Contains(msg, "server host") && !strings.Contains(msg, "own host") {
		t.Fatalf("remote audit error %q does not say where the log is", msg)
	}

	// A KMS that is down exits 4.
	stop()
	msg = e.fails(exitKMSDown, "kms", "list-keys")
	if !strings.Contains(msg, "unreachable") || !strings.Contains(msg, addr.String()) {
		t.Fatalf("list-keys against a stopped KMS: %q", msg)
	}
}
