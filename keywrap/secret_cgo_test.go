package keywrap

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRuntimeSecretCgoCall shows why a build with cgo does without
// runtime/secret (secret_cgo.go): one cgo call inside secret.Do kills the
// process with SIGSEGV. The runtime makes such a call whenever it starts a
// thread there, which crashed about one encvol fsck in 10,000 under load.
// When a Go release fixes it, this test fails: secret_cgo.go can then go.
func TestRuntimeSecretCgoCall(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "secretcgo")
	build := exec.Command("go", "build", "-o", bin, "./testdata/secretcgo")
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOEXPERIMENT=runtimesecret")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with cgo (needs a C compiler, as the race detector does): %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("a cgo call inside secret.Do: %v, output %q; Go no longer crashes there, so keywrap/secret_cgo.go and sector's cgo guard can go", err, out)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGSEGV {
		t.Fatalf("a cgo call inside secret.Do: %v, output %q; want death by SIGSEGV", err, out)
	}
}

// TestNoSecretMemoryWithCgo: a build with cgo never uses runtime/secret.
func TestNoSecretMemoryWithCgo(t *testing.T) {
	if cgoBuild && SecretMemory {
		t.Fatal("SecretMemory with cgo: runtime/secret would crash this process now and then")
	}
	if cgoBuild && SecretOff == "" {
		t.Fatal("a build with cgo gives no reason for doing without runtime/secret")
	}
}
