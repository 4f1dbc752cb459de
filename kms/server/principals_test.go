package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
)

func TestLoadPrincipalGroups(t *testing.T) {
	dir := t.TempDir()
	base := fmt.Sprintf("[[principal]]\nname = %q\naccess_key_id = %q\nsecret_access_key = %q\n\n[[principal]]\nname = %q\naccess_key_id = %q\nsecret_access_key = %q\n",
		admin.Name, admin.AccessKeyID, admin.SecretAccessKey, reader.Name, reader.AccessKeyID, reader.SecretAccessKey)
	p, err := LoadPrincipalsFile(writeFile(t, dir, "ok.toml", base+"\n[[group]]\nname = \"team\"\nmembers = [\"admin\", \"reader\"]\n", 0o600))
	if err != nil {
		t.Fatal(err)
	}
	if g := p.GroupMap(); len(g) != 1 || !slices.Equal(g["team"], []string{"admin", "reader"}) {
		t.Fatalf("groups = %v", g)
	}
	for _, tc := range []struct{ name, extra, want string }{
		{"unknown member", "[[group]]\nname = \"team\"\nmembers = [\"nobody\"]\n", `member "nobody" is not a [[principal]]`},
		{"member twice", "[[group]]\nname = \"team\"\nmembers = [\"admin\", \"admin\"]\n", "listed twice"},
		{"group twice", "[[group]]\nname = \"team\"\n[[group]]\nname = \"team\"\n", "name is used twice"},
		{"group colon", "[[group]]\nname = \"a:b\"\n", "':'"},
		{"principal colon", "[[principal]]\nname = \"group:x\"\naccess_key_id = \"AKIDX0000000000001\"\nsecret_access_key = \"longenoughsecret0001\"\n", "':' or '/'"},
		{"unknown group key", "[[group]]\nname = \"team\"\nmember = [\"admin\"]\n", "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".toml", base+"\n"+tc.extra, 0o600)
			if _, err := LoadPrincipalsFile(path); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s with %q", err, path, tc.want)
			}
		})
	}
}

// TestEditPrincipals: the editors create the file, keep it 0600 and valid,
// never lose a concurrent edit, and refuse what would break the file.
func TestEditPrincipals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "principals.toml")
	alice, err := AddPrincipal(path, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`).MatchString(alice.AccessKeyID) || len(alice.SecretAccessKey) != 40 {
		t.Fatalf("new access key %q / %d-byte secret: want AWS's shape", alice.AccessKeyID, len(alice.SecretAccessKey))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("principals file mode: %v, %v", fi.Mode().Perm(), err)
	}
	if _, err := AddPrincipal(path, "alice"); !errors.Is(err, ErrPrincipalsEdit) || !strings.Contains(err.Error(), "rotate-secret") {
		t.Fatalf("adding alice twice: %v", err)
	}
	if _, err := AddPrincipal(path, "local"); !errors.Is(err, ErrPrincipalsEdit) {
		t.Fatalf("adding the reserved name local: %v", err)
	}
	if _, err := AddPrincipal(path, "a/b"); !errors.Is(err, ErrPrincipalsEdit) {
		t.Fatalf("adding a name with a slash: %v", err)
	}

	// Concurrent editors: every addition survives.
	var wg sync.WaitGroup
	names := []string{"bob", "carol", "dave", "erin", "frank", "grace"}
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := AddPrincipal(path, n); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p, err := LoadPrincipalsFile(path)
	if err != nil || len(p.Principal) != 1+len(names) {
		t.Fatalf("after concurrent adds: %+v, %v", p, err)
	}

	if err := SetGroup(path, "team", []string{"carol", "bob", "bob"}); err != nil {
		t.Fatal(err)
	}
	if err := SetGroup(path, "team2", []string{"bob", "zed"}); !errors.Is(err, ErrPrincipalsEdit) || !strings.Contains(err.Error(), `"zed"`) {
		t.Fatalf("group with an unknown member: %v", err)
	}
	rot, err := RotateSecret(path, "alice")
	if err != nil || rot.AccessKeyID != alice.AccessKeyID || rot.SecretAccessKey == alice.SecretAccessKey {
		t.Fatalf("rotate-secret: %+v, %v", rot, err)
	}
	groups, err := RemovePrincipal(path, "bob")
	if err != nil || !slices.Equal(groups, []string{"team"}) {
		t.Fatalf("remove bob: groups %v, %v", groups, err)
	}
	p, err = LoadPrincipalsFile(path)
	if err != nil || p.find("bob") >= 0 || !slices.Equal(p.GroupMap()["team"], []string{"carol"}) {
		t.Fatalf("after removing bob: %+v, %v", p, err)
	}
	if _, err := RemovePrincipal(path, "bob"); !errors.Is(err, ErrPrincipalsEdit) || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("removing bob twice: %v", err)
	}
	if err := RemoveGroup(path, "team"); err != nil {
		t.Fatal(err)
	}
	for _, n := range append(names[1:], "alice") {
		_, err := RemovePrincipal(path, n)
		if n == "alice" {
			if !errors.Is(err, ErrPrincipalsEdit) || !strings.Contains(err.Error(), "only principal") {
				t.Fatalf("removing the last principal: %v", err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("the editors left files behind: %v", entries)
	}
}

// TestWatchPrincipals: a running server takes up principals added to its
// file, refuses removed ones from their next request, follows group
// membership, and keeps the old set (logging why) when the file is broken
// or readable by others; SIGHUP reloads at once.
func TestWatchPrincipals(t *testing.T) {
	e := startServer(t, Options{})
	path := filepath.Join(t.TempDir(), "principals.toml")
	writeFile(t, filepath.Dir(path), filepath.Base(path), fmt.Sprintf("[[principal]]\nname = %q\naccess_key_id = %q\nsecret_access_key = %q\n",
		admin.Name, admin.AccessKeyID, admin.SecretAccessKey), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() { e.srv.WatchPrincipals(ctx, path, 20*time.Millisecond, hup); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	listKeys := func(p Principal) error {
		_, err := newClient(e.url, p).ListKeys(context.Background(), &awskms.ListKeysInput{})
		return err
	}
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s; log:\n%s", what, e.logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	refused := func(p Principal) bool { return apiCode(listKeys(p)) == "UnrecognizedClientException" }

	bob, err := AddPrincipal(path, "bob")
	if err != nil {
		t.Fatal(err)
	}
	within("added bob accepted", func() bool { return listKeys(bob) == nil })
	// The reload replaced the whole set: reader, never in the file, is gone.
	if !refused(reader) {
		t.Fatal("reader, not in the file, still accepted after the reload")
	}

	// Groups reach the store: a grant to the group admits bob.
	if err := SetGroup(path, "team", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	within("group team known", func() bool { return slices.Contains(e.store.Groups(), "team") })

	// A broken file: the old set stays, and the error is logged.
	if err := os.WriteFile(path, []byte("[[principal]\nname="), 0o600); err != nil {
		t.Fatal(err)
	}
	within("broken file logged", func() bool { return strings.Contains(e.logs.String(), "principals file not reloaded") })
	if err := listKeys(bob); err != nil {
		t.Fatalf("bob refused after a broken reload: %v", err)
	}
	// Readable by others (the directories too): refused like at start. The
	// file is replaced in one rename, so no version of it is private.
	for _, d := range []string{filepath.Dir(filepath.Dir(path)), filepath.Dir(path)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	open := writeFile(t, filepath.Dir(path), "open.toml", fmt.Sprintf("[[principal]]\nname = %q\naccess_key_id = %q\nsecret_access_key = %q\n",
		admin.Name, admin.AccessKeyID, admin.SecretAccessKey), 0o644)
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(open, path); err != nil {
		t.Fatal(err)
	}
	within("world-readable file logged", func() bool { return strings.Contains(e.logs.String(), "can be read by other users") })
	if err := listKeys(bob); err != nil {
		t.Fatalf("bob refused after a world-readable reload: %v", err)
	}
	// chmod alone changes the ctime: the fixed file is reloaded, bob is gone.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	within("removed bob refused", func() bool { return refused(bob) })

	// SIGHUP reloads even when the watcher saw nothing change.
	e.srv.SetPrincipals(&Principals{Principal: []Principal{admin, reader}})
	if err := listKeys(reader); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	within("SIGHUP reload", func() bool { return refused(reader) })
}
