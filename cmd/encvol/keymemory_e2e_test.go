package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runUnlockable runs encvol without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0,
// as a container or a systemd unit with LimitMEMLOCK=0 would: mlock fails.
func (e *env) runUnlockable(args ...string) result {
	e.t.Helper()
	for _, tool := range []string{"setpriv", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			e.t.Fatalf("%s (util-linux) is needed to take away CAP_IPC_LOCK: %v", tool, err)
		}
	}
	full := append([]string{"--bounding-set", "-ipc_lock", "prlimit", "--memlock=0:0", "--", encvolBin, "--config", e.cfg}, args...)
	cmd := exec.Command("setpriv", full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run %v: %v", full, err)
	}
	return r
}

// A data key that cannot be locked in memory could be swapped to disk: the
// mount refuses, saying how to fix it, unless the user accepts the risk
// with --allow-swap, which then warns in the mount's log.
func TestMountRefusesUnlockableKeys(t *testing.T) {
	e, backing, mnt := newVolumeEnv(t)
	r := e.runUnlockable("mount", backing, mnt)
	if r.code == 0 {
		t.Fatalf("mount with keys that cannot be locked succeeded:\n%s", r)
	}
	for _, want := range []string{"cannot be locked in memory", "--allow-swap", "LimitMEMLOCK"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal lacks %q:\n%s", want, r.stderr)
		}
	}
	if hasEncvolMount(t, mnt) {
		t.Fatal("refused mount left a mount behind")
	}

	r = e.runUnlockable("mount", "--allow-swap", backing, mnt)
	if r.code != 0 {
		t.Fatalf("mount --allow-swap failed:\n%s", r)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := e.must("status", "--json", mnt)
	var logFile string
	for _, l := range strings.Split(st.stdout, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), `"log_file": `); ok && k == "" {
			logFile = strings.Trim(v, `",`)
		}
	}
	if logFile == "" {
		t.Fatalf("status names no log file:\n%s", st.stdout)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "NOT locked in memory") {
		t.Errorf("the daemon log does not warn about unlocked keys:\n%s", b)
	}
	e.must("umount", mnt)
}
