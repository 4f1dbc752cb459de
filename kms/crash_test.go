package kms

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashDirEnv = "ENCVOL_KMS_CRASH_DIR"

// TestCrashChild is the body of the child process TestCrashSafety starts
// and kills; run directly it does nothing.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return // not a child: nothing to do
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Printf("error open: %v\n", err)
		os.Exit(3)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-crash"}
	for i := 0; ; i++ {
		md, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{Description: strings.Repeat("d", i%50)})
		if err != nil {
			fmt.Printf("error create: %v\n", err)
			os.Exit(3)
		}
		fmt.Printf("created %s\n", md.KeyID)
		steps := []func() error{
			func() error { return s.DisableKey(bg, LocalPrincipal, md.KeyID) },
			func() error { return s.EnableKey(bg, LocalPrincipal, md.KeyID) },
			func() error { return s.RotateKeyOnDemand(bg, LocalPrincipal, md.KeyID) },
			func() error {
				return s.CreateAlias(bg, LocalPrincipal, fmt.Sprintf("alias/crash-%d-%s", os.Getpid(), md.KeyID[:8]), md.KeyID)
			},
			func() error {
				_, _, err := s.CreateGrant(bg, LocalPrincipal, GrantInput{KeyRef: md.KeyID, GranteePrincipal: "bob", Operations: []string{OpDecrypt}})
				return err
			},
			func() error { _, _, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx); return err },
		}
		for j, f := range steps {
			if err := f(); err != nil {
				fmt.Printf("error step %d: %v\n", j, err)
				os.Exit(3)
			}
		}
		fmt.Printf("done %s\n", md.KeyID)
	}
}

// TestCrashSafety kills a process that loops over store writes at random
// moments and checks that the store always opens, authenticates, keeps
// every change the child saw complete, and still decrypts old blobs.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		return
	}
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ref := mustKey(t, s, LocalPrincipal)
	ectx := map[string]string{"encvol:volume-id": "vol-ref"}
	refPT, refBlob, _, err := s.GenerateDataKey(bg, LocalPrincipal, ref.KeyID, 32, ectx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	created := map[string]bool{} // keys a child reported as created
	done := map[string]bool{}    // keys whose whole step list completed
	const rounds = 30
	midWrite := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := 1 + rand.IntN(4) // "created" lines to see before the kill
		sc := bufio.NewScanner(out)
		seen := 0
		for seen < want && sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "created "):
				created[strings.TrimPrefix(line, "created ")] = true
				seen++
			case strings.HasPrefix(line, "done "):
				done[strings.TrimPrefix(line, "done ")] = true
			case strings.HasPrefix(line, "error"):
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child failed: %s\n%s", round, line, stderr.String())
			}
		}
		// Let the child run into its next writes, then kill it at a moment
		// it cannot predict.
		time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if seen < want {
			t.Fatalf("round %d: child exited early after %d keys; stderr:\n%s", round, seen, stderr.String())
		}

		if tmps, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*")); len(tmps) > 0 {
			midWrite++ // killed between temp file creation and rename
		}
		st, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: store does not open after kill -9: %v", round, err)
		}
		checkConsistent(t, st, round, created, done)
		pt, _, err := st.Decrypt(bg, LocalPrincipal, refBlob, ectx, "")
		if err != nil || !bytes.Equal(pt, refPT) {
			t.Fatalf("round %d: reference blob: %v", round, err)
		}
		if _, err := st.Audit(bg, AuditFilter{}); err != nil {
			t.Fatalf("round %d: audit log unreadable: %v", round, err)
		}
		st.Close()
		tmps, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
		if len(tmps) != 0 {
			t.Fatalf("round %d: temp files left after Open: %v", round, tmps)
		}
	}
	t.Logf("%d kills (%d inside a state write), %d keys created, %d complete", rounds, midWrite, len(created), len(done))
}

func checkConsistent(t *testing.T, st *Store, round int, created, done map[string]bool) {
	t.Helper()
	keys, err := st.ListKeys(bg, LocalPrincipal)
	if err != nil {
		t.Fatalf("round %d: ListKeys: %v", round, err)
	}
	have := map[string]bool{}
	for _, k := range keys {
		have[k.KeyID] = true
	}
	for id := range created {
		if !have[id] {
			t.Fatalf("round %d: key %s was reported created but is gone", round, id)
		}
	}
	for id := range done {
		md, err := st.DescribeKey(bg, LocalPrincipal, id)
		if err != nil {
			t.Fatalf("round %d: DescribeKey %s: %v", round, id, err)
		}
		if md.KeyState != StateEnabled || md.CurrentVersion != 2 || len(md.Aliases) != 1 {
			t.Fatalf("round %d: completed key %s lost changes: %+v", round, id, md)
		}
		gs, err := st.ListGrants(bg, LocalPrincipal, id)
		if err != nil || len(gs) != 1 {
			t.Fatalf("round %d: completed key %s grants %v %v", round, id, gs, err)
		}
	}
	// Every key, complete or interrupted, must be usable or cleanly refused.
	for _, k := range keys {
		md, err := st.DescribeKey(bg, LocalPrincipal, k.KeyID)
		if err != nil {
			t.Fatalf("round %d: DescribeKey %s: %v", round, k.KeyID, err)
		}
		if md.KeyState == StateEnabled {
			if _, _, _, err := st.GenerateDataKey(bg, LocalPrincipal, k.KeyID, 32, nil); err != nil {
				t.Fatalf("round %d: key %s: %v", round, k.KeyID, err)
			}
		}
	}
}
