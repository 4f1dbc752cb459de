package kms

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const auditCrashEnv = "ENCVOL_KMS_AUDIT_CRASH"

// TestAuditCrashChild is the body of the process TestAuditRotationCrash
// kills; run directly it does nothing. It appends numbered records from
// the number given on, printing each number once its append returned.
func TestAuditCrashChild(t *testing.T) {
	spec := os.Getenv(auditCrashEnv)
	if spec == "" {
		return
	}
	dir, from, _ := strings.Cut(spec, "|")
	start, _ := strconv.Atoi(from)
	s, err := Open(dir, Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: -1})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(3)
	}
	for i := start; ; i++ {
		rec := &AuditRecord{Principal: "crash", Operation: "TestAppend", Result: "ok", Message: fmt.Sprintf("crash %d", i)}
		if err := s.audit.append(false, rec); err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(3)
		}
		fmt.Printf("%d\n", i)
	}
}

// TestAuditRotationCrash kills a process that appends to the audit log
// and rotates it every few records, at moments it cannot predict: every
// record it was told was written is there afterwards, none twice, and
// the next process rotates on.
func TestAuditRotationCrash(t *testing.T) {
	if os.Getenv(auditCrashEnv) != "" {
		return
	}
	dir := t.TempDir()
	next := 0 // the first number the next child writes
	const rounds = 20
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAuditCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d", auditCrashEnv, dir, next))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		want := 20 + rand.IntN(60)
		acked := next - 1
		for acked < next+want && sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child: %s", round, sc.Text())
			}
			acked = n
		}
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Numbers printed after the kill was decided still count.
		for sc.Scan() {
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				acked = n
			}
		}
		cmd.Wait()

		s, err := Open(dir, Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: -1})
		if err != nil {
			t.Fatalf("round %d: store does not open after kill -9: %v", round, err)
		}
		seq := seqOf(t, s)["crash"]
		s.Close()
		seen := map[int]bool{}
		for _, n := range seq {
			if seen[n] {
				t.Fatalf("round %d: record %d is in the log twice", round, n)
			}
			seen[n] = true
		}
		for n := 0; n <= acked; n++ {
			if !seen[n] {
				t.Fatalf("round %d: record %d was written before the kill but is not in the log", round, n)
			}
		}
		next = acked + 1
		for seen[next] { // written, but killed before it was reported
			next++
		}
	}
	files := auditFiles(t, dir)
	t.Logf("%d kills, %d records in %d files", rounds, next, len(files))
	if len(files) < rounds {
		t.Fatalf("only %d files after %d rounds: the children hardly rotated", len(files), rounds)
	}
}
