package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/kmsclient"
)

// End-to-end tests of what encvol writes about itself: colour in logs,
// the KMS audit log (key check summaries, rotation) and the request log
// of `encvol kms serve`.

const esc = "\x1b"

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty %d: %v", n, err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// stderrOf runs the binary with stderr on a pipe, or on a terminal when
// tty is set, and returns what it wrote there.
func stderrOf(t *testing.T, tty bool, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(encvolBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if !tty {
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("encvol %v: %v\n%s", args, err, errb.String())
		}
		return errb.String()
	}
	master, slave := openPTY(t)
	cmd.Stderr = slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	got := make(chan []byte, 1)
	// Reading ends with EIO once the child, the last holder of the slave
	// end, has exited.
	go func() { b, _ := io.ReadAll(master); got <- b }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("encvol %v: %v", args, err)
	}
	return string(<-got)
}

// TestLogsColourOnlyOnATerminal: console logs carry no ANSI escape codes
// in a pipe or with NO_COLOR set, and keep their colours on a terminal.
func TestLogsColourOnlyOnATerminal(t *testing.T) {
	e := newEnv(t, "")
	var k kmsclient.KeyInfo
	if err := json.Unmarshal([]byte(e.must("kms", "create-key", "--json").stdout), &k); err != nil {
		t.Fatal(err)
	}
	// disable-key and enable-key log a debug line each.
	logLine := func(tty bool, env []string, verb string) string {
		t.Helper()
		got := stderrOf(t, tty, env, "--config", e.cfg, "--log-level", "debug", "kms", verb, k.KeyID)
		if !strings.Contains(got, "key_id=") {
			t.Fatalf("kms %s --log-level debug wrote no log line to stderr:\n%q", verb, got)
		}
		return got
	}
	if got := logLine(false, nil, "disable-key"); strings.Contains(got, esc) {
		t.Errorf("log on a pipe has ANSI escape codes:\n%q", got)
	}
	if got := logLine(true, []string{"NO_COLOR=1"}, "enable-key"); strings.Contains(got, esc) {
		t.Errorf("log on a terminal with NO_COLOR=1 has ANSI escape codes:\n%q", got)
	}
	if got := logLine(true, nil, "disable-key"); !strings.Contains(got, esc) {
		t.Errorf("log on a terminal without NO_COLOR lost its colours:\n%q", got)
	}
}

// auditRecord is one record as `encvol kms audit --json` prints it.
type auditRecord struct {
	Time      time.Time `json:"time"`
	Operation string    `json:"operation"`
	Result    string    `json:"result"`
	KeyCheck  *struct {
		Mount  string `json:"mount"`
		Event  string `json:"event"`
		Checks int    `json:"checks"`
	} `json:"key_check"`
}

// auditReader returns a function running `encvol kms audit --json ARGS`
// as the documented command does: with a local KMS on the store (for the
// served KMS, the store `encvol kms serve` uses). It decodes the output
// into out.
func (e *gxEnv) auditReader() func(out any, args ...string) {
	cfg := e.cfg
	if e.backend == "served" {
		cfg = e.writeConfig("server-host.toml", fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\n", e.store), "")
	}
	return func(out any, args ...string) {
		e.t.Helper()
		r := e.mustWith(cfg, append([]string{"kms", "audit", "--kms", "local", "--json"}, args...)...)
		if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
			e.t.Fatalf("kms audit --json %v: %v\n%s", args, err, r.stdout)
		}
	}
}

// keyChecks reads the key check records of key.
func keyChecks(audit func(any, ...string), key string) checkTally {
	var recs []auditRecord
	audit(&recs, "--key", key)
	return checkRecords(recs)
}

// checkTally sums up the key check records of an audit log.
type checkTally struct {
	byEvent                 map[string]int
	okRecords, okChecks     int // records of successful checks, and the checks they stand for
	failRecords, failChecks int
}

func checkRecords(recs []auditRecord) checkTally {
	c := checkTally{byEvent: map[string]int{}}
	for _, r := range recs {
		if r.KeyCheck == nil {
			continue
		}
		c.byEvent[r.KeyCheck.Event]++
		if r.Result == "ok" {
			c.okRecords++
			c.okChecks += r.KeyCheck.Checks
		} else {
			c.failRecords++
			c.failChecks += r.KeyCheck.Checks
		}
	}
	return c
}

// TestAuditKeyChecksSummarised mounts a volume that checks its key every
// 100 ms, through the local and the served KMS: the audit log gets the
// mount's first check, every change of result at once, and its last
// check, with the checks in between that repeat a result counted, not
// listed.
func TestAuditKeyChecksSummarised(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			audit := e.auditReader()
			key := e.createKey("alias/audited")
			backing := e.newVolume("vol", key)
			mnt := e.mount(e.cfg, backing, "key_check_interval=100ms")
			gxWait(t, "30 key checks", 30*time.Second, func() bool { return e.status(mnt).Checks >= 30 })

			// A revocation is in the log while the mount still runs.
			e.must("kms", "disable-key", key)
			gxWait(t, "gate closed", 10*time.Second, func() bool { return e.status(mnt).Gate == "closed" })
			if ev := keyChecks(audit, key).byEvent; ev["first"] != 1 || ev["changed"] != 1 {
				t.Fatalf("while mounted, after the key was disabled: key check records %v, want first 1 and changed 1", ev)
			}
			e.must("kms", "enable-key", key)
			gxWait(t, "gate open", 10*time.Second, func() bool { return e.status(mnt).Gate == "open" })
			checked := e.status(mnt).Checks
			gxUnmount(t, mnt)

			c := keyChecks(audit, key)
			checks := c.okChecks + c.failChecks
			t.Logf("%d successful key checks in %d audit records, %d failed ones in %d: %v", c.okChecks, c.okRecords, c.failChecks, c.failRecords, c.byEvent)
			ev := c.byEvent
			if ev["first"] != 1 || ev["last"] != 1 || ev["changed"] != 2 || ev["summary"] < 1 {
				t.Fatalf("key check records %v: want one first, one last, two changes (disabled, enabled) and summaries", ev)
			}
			// Every check is accounted for: the monitor counted checked
			// before the unmount, then made a few more and its last.
			if checks < int(checked)+1 || checks > int(checked)+1+50 {
				t.Fatalf("the audit log accounts for %d checks; the mount had made %d before its unmount", checks, checked)
			}
			// Successful checks: first, a summary before the failure,
			// the change back, a summary before the last, the last.
			if c.okRecords > 5 || c.okChecks < 30 {
				t.Fatalf("%d audit records for %d successful key checks: routine checks are not summarised", c.okRecords, c.okChecks)
			}
			// Failed checks: the change to Disabled at once, the ones that
			// repeat it in one summary at most.
			if c.failChecks < 1 || c.failRecords > 2 {
				t.Fatalf("%d failed checks in %d records: want the change, then repeats counted", c.failChecks, c.failRecords)
			}
			var uses []kmsclient.VolumeUse
			audit(&uses, "--key", key, "--volumes")
			if len(uses) != 1 || uses[0].Uses < c.okChecks {
				t.Fatalf("volumes using the key: %+v; want the volume with at least %d uses", uses, c.okChecks)
			}
		})
	}
}

// TestAuditSummaryInterval: with a summary interval of 1 s (audit_summary_interval
// for the local KMS, --audit-summary-interval for `kms serve`), a running
// mount's routine checks reach the log as a summary every second.
func TestAuditSummaryInterval(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			if backend == "local" {
				e.cfg = e.writeConfig("owner.toml", fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\naudit_summary_interval = \"1s\"\n",
					filepath.Join(e.dir, "kms")), "")
			} else {
				e.killKMS()
				e.serveArgs = []string{"--audit-summary-interval", "1s"}
				e.startKMS()
			}
			audit := e.auditReader()
			key := e.createKey("alias/summarised")
			mnt := e.mount(e.cfg, e.newVolume("vol", key), "key_check_interval=100ms")
			gxWait(t, "three summaries while mounted", 30*time.Second, func() bool {
				return keyChecks(audit, key).byEvent["summary"] >= 3
			})
			c := keyChecks(audit, key)
			if st := e.status(mnt); c.okChecks > int(st.Checks) || c.byEvent["summary"] > int(st.Checks)/5 {
				t.Fatalf("%d checks in %d summaries after the mount made %d checks", c.okChecks, c.byEvent["summary"], st.Checks)
			}
		})
	}
}

// TestAuditRotationAcrossFiles: a small audit_max_size rotates the log;
// `kms audit` reads every file in order, and disable-key still finds a
// volume whose records are all in rotated files.
func TestAuditRotationAcrossFiles(t *testing.T) {
	e := newEnv(t, "")
	store := filepath.Join(e.dir, "kms")
	if err := os.WriteFile(e.cfg, []byte(fmt.Sprintf("[kms.local]\ntype = \"local\"\npath = %q\naudit_max_size = \"1KiB\"\naudit_keep = 50\n", store)), 0o600); err != nil {
		t.Fatal(err)
	}
	var k kmsclient.KeyInfo
	if err := json.Unmarshal([]byte(e.must("kms", "create-key", "--json").stdout), &k); err != nil {
		t.Fatal(err)
	}
	var vol map[string]any
	if err := json.Unmarshal([]byte(e.must("create", "--backing", filepath.Join(e.dir, "b"), "--key", k.KeyID, "--json").stdout), &vol); err != nil {
		t.Fatal(err)
	}
	volID := fmt.Sprint(vol["volume_id"])
	for i := range 30 {
		e.must("kms", "create-key", "--description", fmt.Sprintf("filler %d", i))
	}
	files, _ := filepath.Glob(filepath.Join(store, "audit.jsonl.*"))
	current, err := os.ReadFile(filepath.Join(store, "audit.jsonl"))
	if err != nil || len(files) < 3 || bytes.Contains(current, []byte(volID)) {
		t.Fatalf("after 31 keys and a volume with audit_max_size 1KiB: rotated files %v; the volume's records still in audit.jsonl: %v (%v)",
			files, bytes.Contains(current, []byte(volID)), err)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o400 {
			t.Fatalf("rotated file %s: %v, %v; want mode 0400", f, fi.Mode(), err)
		}
	}

	var recs []auditRecord
	if err := json.Unmarshal([]byte(e.must("kms", "audit", "--json").stdout), &recs); err != nil {
		t.Fatal(err)
	}
	var created int
	for i, r := range recs {
		if i > 0 && r.Time.Before(recs[i-1].Time) {
			t.Fatalf("record %d (%s) is older than the one before it", i, r.Operation)
		}
		if r.Operation == "CreateKey" {
			created++
		}
	}
	if created != 31 || recs[0].Operation != "CreateKey" {
		t.Fatalf("kms audit across rotated files: %d CreateKey records (want 31), first %s", created, recs[0].Operation)
	}
	// The store holds 31 customer keys: the key-usage guard refuses,
	// naming the volume.
	r := e.run("kms", "disable-key", k.KeyID)
	if r.code != exitRefused || !strings.Contains(r.stderr, volID) {
		t.Fatalf("disable-key does not name the volume whose records were rotated: %v", r)
	}
}

// TestServeLogsKeyChecksAtDebug: at the default log level, `encvol kms
// serve` does not log a mount's routine key checks.
func TestServeLogsKeyChecksAtDebug(t *testing.T) {
	e := newGXEnv(t, "served", "")
	key := e.createKey("alias/quiet")
	mnt := e.mount(e.cfg, e.newVolume("vol", key), "key_check_interval=100ms")
	gxWait(t, "20 key checks", 30*time.Second, func() bool { return e.status(mnt).Checks >= 20 })
	gxUnmount(t, mnt)
	raw, err := os.ReadFile(filepath.Join(e.dir, "kms-serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	decrypts := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, "kms request") && strings.Contains(line, "Decrypt") {
			decrypts++
		}
	}
	// The mount's unlock is the only Decrypt that is no key check.
	if decrypts > 5 {
		t.Fatalf("kms serve logged %d Decrypt requests at info level for a mount that made 20+ key checks", decrypts)
	}
}
