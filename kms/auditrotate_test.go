package kms

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// appendSeq writes n records whose Message is "<tag> <i>" for i from
// start, each with its own write.
func appendSeq(t testing.TB, s *Store, tag string, start, n int) {
	t.Helper()
	for i := start; i < start+n; i++ {
		rec := &AuditRecord{Principal: tag, Operation: "TestAppend", Result: "ok", Message: fmt.Sprintf("%s %d", tag, i)}
		if err := s.audit.append(false, rec); err != nil {
			t.Fatalf("append %s %d: %v", tag, i, err)
		}
	}
}

// seqOf reads the TestAppend records back: per tag, the numbers in the
// order the log holds them.
func seqOf(t *testing.T, s *Store) map[string][]int {
	t.Helper()
	recs, err := s.Audit(bg, AuditFilter{Operation: "TestAppend"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, r := range recs {
		tag, num, _ := strings.Cut(r.Message, " ")
		n, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("record %q", r.Message)
		}
		out[tag] = append(out[tag], n)
	}
	return out
}

// wantExactly fails unless seq is 0..n-1 in order: no record lost,
// doubled or out of its writer's order.
func wantExactly(t *testing.T, tag string, seq []int, n int) {
	t.Helper()
	if len(seq) != n {
		t.Fatalf("%s: %d records read back, want %d", tag, len(seq), n)
	}
	for i, v := range seq {
		if v != i {
			t.Fatalf("%s: record %d is number %d: lost, doubled or reordered", tag, i, v)
		}
	}
}

func auditFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, auditFile+"*"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range m {
		names = append(names, filepath.Base(p))
	}
	return names
}

// TestAuditRotationRetention: the log rotates at its size limit, keeps
// AuditKeep rotated files (read-only) and Audit reads them oldest first.
func TestAuditRotationRetention(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendSeq(t, s, "a", 0, 200)
	got := strings.Join(auditFiles(t, dir), " ")
	if got != "audit.jsonl audit.jsonl.1 audit.jsonl.2 audit.jsonl.3" {
		t.Fatalf("audit files %s, want the log and 3 rotated files", got)
	}
	total := 0
	for _, name := range auditFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if want := os.FileMode(rotatedMode); name != auditFile && fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
		}
		if fi.Size() > MinAuditMaxSize+200 {
			t.Errorf("%s is %d bytes, limit %d", name, fi.Size(), MinAuditMaxSize)
		}
		total += int(fi.Size())
	}
	seq := seqOf(t, s)["a"]
	if len(seq) == 0 || seq[len(seq)-1] != 199 {
		t.Fatalf("the newest records are missing: %v", seq)
	}
	// What is kept is the newest records, without a gap.
	wantExactly(t, "a (kept part)", subtract(seq, seq[0]), len(seq))
	if len(seq) > 200 || total > 4*(MinAuditMaxSize+200) {
		t.Fatalf("%d records in %d bytes kept", len(seq), total)
	}
}

func subtract(seq []int, d int) []int {
	out := make([]int, len(seq))
	for i, v := range seq {
		out[i] = v - d
	}
	return out
}

// TestAuditRotationFollowsOtherStore: a rotated file that another store
// still appends to is kept past the retention (its next record could
// otherwise go to a deleted file); that store follows the rotation with
// its next record, and retention deletes what it no longer holds.
func TestAuditRotationFollowsOtherStore(t *testing.T) {
	dir := t.TempDir()
	opt := Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: 1}
	a, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	appendSeq(t, b, "b", 0, 1)
	appendSeq(t, a, "a", 0, 60) // several rotations
	if got := seqOf(t, a)["b"]; len(got) != 1 {
		t.Fatalf("the file b still holds was deleted: b records %v, files %v", got, auditFiles(t, dir))
	}
	if n := len(auditFiles(t, dir)); n != 3 {
		t.Fatalf("files %v: want the log, one rotated file and the one b holds", auditFiles(t, dir))
	}
	appendSeq(t, b, "b", 1, 1)
	raw, err := os.ReadFile(filepath.Join(dir, auditFile))
	if err != nil || !strings.Contains(string(raw), `"b 1"`) {
		t.Fatalf("b's record after the rotation is not in %s: %v", auditFile, err)
	}
	wantExactly(t, "b", seqOf(t, a)["b"], 2)
	// b now holds the file it moved to, until it writes or closes.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	appendSeq(t, a, "a", 60, 60)
	if got := auditFiles(t, dir); len(got) != 2 {
		t.Fatalf("after b closed, a retention of 1 left %v", got)
	}
	wantExactly(t, "a (kept part)", subtract(seqOf(t, a)["a"], seqOf(t, a)["a"][0]), len(seqOf(t, a)["a"]))
}

const rotateChildEnv = "ENCVOL_KMS_ROTATE_CHILD"

// TestAuditRotateChild is the body of the processes
// TestAuditRotationManyProcesses starts; run directly it does nothing.
func TestAuditRotateChild(t *testing.T) {
	spec := os.Getenv(rotateChildEnv)
	if spec == "" {
		return
	}
	parts := strings.Split(spec, "|")
	keep, _ := strconv.Atoi(parts[2])
	s, err := Open(parts[0], Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: keep})
	if err != nil {
		t.Fatal(err)
	}
	// Start together, so the processes rotate under each other.
	bufio.NewReader(os.Stdin).ReadString('\n')
	appendSeq(t, s, parts[1], 0, rotateChildRecords)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

const rotateChildRecords = 600

// TestAuditRotationManyProcesses: processes appending to one store at
// once, rotating it every few records, lose, double and reorder nothing;
// with a retention, the number of files stays bounded.
func TestAuditRotationManyProcesses(t *testing.T) {
	if os.Getenv(rotateChildEnv) != "" {
		return
	}
	for _, keep := range []int{-1, 3} {
		t.Run(fmt.Sprintf("keep=%d", keep), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: keep})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const procs = 4
			var cmds []*exec.Cmd
			var starts []*os.File
			for i := range procs {
				cmd := exec.Command(os.Args[0], "-test.run=^TestAuditRotateChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|p%d|%d", rotateChildEnv, dir, i, keep))
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				cmd.Stdin = r
				var out strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				r.Close()
				cmds, starts = append(cmds, cmd), append(starts, w)
			}
			for _, w := range starts {
				w.WriteString("go\n")
				w.Close()
			}
			appendSeq(t, s, "parent", 0, rotateChildRecords)
			for i, cmd := range cmds {
				if err := cmd.Wait(); err != nil {
					t.Fatalf("child %d: %v\n%s", i, err, cmd.Stdout)
				}
			}
			seqs := seqOf(t, s)
			if fails, _ := s.Audit(bg, AuditFilter{Operation: "RotateAuditLog"}); len(fails) > 0 {
				t.Fatalf("%d rotations failed, the first with: %s", len(fails), fails[0].Message)
			}
			for i := range procs + 1 {
				tag := fmt.Sprintf("p%d", i)
				if i == procs {
					tag = "parent"
				}
				seq := seqs[tag]
				if keep < 0 {
					wantExactly(t, tag, seq, rotateChildRecords)
					continue
				}
				// Retention drops old files, but never what a writer
				// still holds: what is kept of a process is in order.
				for j := 1; j < len(seq); j++ {
					if seq[j] <= seq[j-1] {
						t.Fatalf("%s: record %d after %d: doubled or reordered", tag, seq[j], seq[j-1])
					}
				}
			}
			files := auditFiles(t, dir)
			if keep < 0 && len(files) < 20 {
				t.Fatalf("only %d audit files: the test did not rotate much", len(files))
			}
			if keep > 0 && len(files) > 1+keep+procs+1 {
				t.Fatalf("retention of %d left %d files", keep, len(files))
			}
			t.Logf("%d records written, %d files left", (procs+1)*rotateChildRecords, len(files))
		})
	}
}

// TestAuditReadsAcrossGap: a crash between two renames of a rotation
// leaves a gap in the numbering; reading and rotating carry on.
func TestAuditReadsAcrossGap(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{AuditMaxSize: MinAuditMaxSize, AuditKeep: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendSeq(t, s, "a", 0, 30) // a few rotations
	rotated, err := rotatedAuditFiles(dir)
	if err != nil || len(rotated) < 2 {
		t.Fatalf("rotated files %v, %v", rotated, err)
	}
	// The oldest moves far out, as if the renames after it never ran.
	oldest := rotatedName(filepath.Join(dir, auditFile), rotated[len(rotated)-1])
	if err := os.Rename(oldest, oldest+"0"); err != nil {
		t.Fatal(err)
	}
	appendSeq(t, s, "a", 30, 30)
	wantExactly(t, "a", seqOf(t, s)["a"], 60)
}
