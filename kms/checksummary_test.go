package kms

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// checkFixture is a store on a fake clock with one key and one volume's
// wrapped data key, with methods that make and read key checks.
type checkFixture struct {
	t    *testing.T
	s    *Store
	clk  *fakeClock
	key  KeyMetadata
	blob []byte
	ectx map[string]string
}

func newCheckFixture(t *testing.T, interval time.Duration) *checkFixture {
	t.Helper()
	clk := newClock()
	s, err := Open(t.TempDir(), Options{Now: clk.Now, KeyCheckSummaryInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &checkFixture{t: t, s: s, clk: clk, key: mustKey(t, s, LocalPrincipal), ectx: map[string]string{"encvol:volume-id": "vol-checks"}}
	pt, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, f.key.KeyID, 32, f.ectx)
	if err != nil {
		t.Fatal(err)
	}
	clear(pt)
	f.blob = blob
	return f
}

// check makes one key check of mount as principal and returns its error.
func (f *checkFixture) check(principal, mount string, last bool) error {
	pt, _, err := f.s.DecryptKeyCheck(bg, principal, f.blob, f.ectx, "", &KeyCheck{Mount: mount, Last: last})
	clear(pt)
	return err
}

// checkRecords returns the key check records in the log, as
// "event/result/checks" strings, and the sum of their checks.
func (f *checkFixture) checkRecords() ([]string, int) {
	f.t.Helper()
	recs, err := f.s.Audit(bg, AuditFilter{Operation: OpDecrypt})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	total := 0
	for _, r := range recs {
		if r.KeyCheck == nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s/%s/%d", r.KeyCheck.Event, r.Result, r.KeyCheck.Checks))
		total += r.KeyCheck.Checks
	}
	return out, total
}

func (f *checkFixture) wantRecords(want string, wantTotal int) {
	f.t.Helper()
	got, total := f.checkRecords()
	if strings.Join(got, " ") != want || total != wantTotal {
		f.t.Fatalf("key check records:\n got %s (%d checks)\nwant %s (%d checks)", strings.Join(got, " "), total, want, wantTotal)
	}
}

// TestKeyCheckSummaries follows one mount through routine checks, a
// revocation and its end: one record per summary interval while all is
// well, a record at once for every failure and change, and checks that
// add up to the checks made.
func TestKeyCheckSummaries(t *testing.T) {
	f := newCheckFixture(t, time.Hour)
	made := 0
	checks := func(n int) {
		t.Helper()
		for range n {
			f.clk.Advance(5 * time.Second)
			if err := f.check(LocalPrincipal, "mnt-a", false); err != nil {
				t.Fatalf("check: %v", err)
			}
			made++
		}
	}
	checks(1)
	f.wantRecords("first/ok/1", 1)
	// 2.5 hours at one check every 5 s: two summaries, the rest pending.
	checks(1800)
	f.wantRecords("first/ok/1 summary/ok/720 summary/ok/720", 1441)

	// Disabling the key: the pending checks are summarised, the first
	// failure is a record at once, the ones that repeat it are counted.
	if err := f.s.DisableKey(bg, LocalPrincipal, f.key.KeyID); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		f.clk.Advance(5 * time.Second)
		wantCode(t, f.check(LocalPrincipal, "mnt-a", false), CodeDisabled)
		made++
	}
	f.wantRecords("first/ok/1 summary/ok/720 summary/ok/720 summary/ok/360 changed/DisabledException/1", 1802)
	if err := f.s.EnableKey(bg, LocalPrincipal, f.key.KeyID); err != nil {
		t.Fatal(err)
	}
	checks(3)
	// The last check writes what is pending first.
	f.clk.Advance(time.Second)
	if err := f.check(LocalPrincipal, "mnt-a", true); err != nil {
		t.Fatal(err)
	}
	made++
	f.wantRecords("first/ok/1 summary/ok/720 summary/ok/720 summary/ok/360 changed/DisabledException/1 summary/DisabledException/1 changed/ok/1 summary/ok/2 last/ok/1", made)

	// A summary names its checks' time span, principal, key and context.
	recs, err := f.s.Audit(bg, AuditFilter{KeyRef: f.key.KeyID, Operation: OpDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.KeyCheck == nil || r.KeyCheck.Event != CheckSummary || r.KeyCheck.Checks != 720 {
			continue
		}
		if span := r.Time.Sub(r.KeyCheck.From); span != 719*5*time.Second {
			t.Errorf("summary of 720 checks 5 s apart spans %v", span)
		}
		if r.Principal != LocalPrincipal || r.EncryptionContext["encvol:volume-id"] != "vol-checks" || r.KeyVersion != 1 || r.KeyCheck.Mount != "mnt-a" {
			t.Errorf("summary record %+v", r)
		}
	}
}

// TestKeyCheckMounts: mounts, principals and contexts are summarised
// apart, a mount that goes quiet is summarised by the sweep, and Close
// writes what is pending.
func TestKeyCheckMounts(t *testing.T) {
	f := newCheckFixture(t, time.Hour)
	const bob = "bob"
	if _, _, err := f.s.CreateGrant(bg, LocalPrincipal, GrantInput{KeyRef: f.key.KeyID, GranteePrincipal: bob, Operations: []string{OpDecrypt}}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		f.clk.Advance(time.Second)
		for _, c := range []struct{ p, m string }{{LocalPrincipal, "mnt-a"}, {LocalPrincipal, "mnt-b"}, {bob, "mnt-a"}} {
			if err := f.check(c.p, c.m, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.wantRecords("first/ok/1 first/ok/1 first/ok/1", 3)

	// mnt-b keeps checking; the others stop without a last check.
	f.clk.Advance(50 * time.Minute)
	if err := f.check(LocalPrincipal, "mnt-b", false); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(20 * time.Minute)
	if err := f.s.flushChecks(false); err != nil {
		t.Fatal(err)
	}
	got, total := f.checkRecords()
	if len(got) != 5 || total != 3+2*9 || got[3] != "summary/ok/9" || got[4] != "summary/ok/9" {
		t.Fatalf("after the sweep: %v (%d checks)", got, total)
	}
	if n := len(f.s.checks.series); n != 1 {
		t.Fatalf("%d series remembered after two went quiet, want 1", n)
	}
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, f.s.dir, f.clk)
	recs, err := s2.Audit(bg, AuditFilter{Operation: OpDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if last.KeyCheck == nil || last.KeyCheck.Event != CheckSummary || last.KeyCheck.Mount != "mnt-b" || last.KeyCheck.Checks != 10 {
		t.Fatalf("Close did not write mnt-b's pending checks: last record %+v", last)
	}
}

// TestKeyCheckGainsNothing: a marked Decrypt is authorized and refused
// like any other; its first refusal is a record of its own, the repeats
// are counted.
func TestKeyCheckGainsNothing(t *testing.T) {
	f := newCheckFixture(t, time.Hour)
	for range 3 {
		wantCode(t, f.check("mallory", "mnt-x", false), CodeAccessDenied)
	}
	pt, _, err := f.s.DecryptKeyCheck(bg, LocalPrincipal, f.blob, map[string]string{"encvol:volume-id": "other"}, "", &KeyCheck{Mount: "mnt-x"})
	wantCode(t, err, CodeInvalidCiphertext)
	if pt != nil {
		t.Fatal("a refused check returned plaintext")
	}
	f.wantRecords("first/AccessDeniedException/1 first/InvalidCiphertextException/1", 2)
	for _, bad := range []string{"", "has space", strings.Repeat("m", 65), "new\nline"} {
		_, _, err := f.s.DecryptKeyCheck(bg, LocalPrincipal, f.blob, f.ectx, "", &KeyCheck{Mount: bad})
		wantCode(t, err, CodeValidation)
	}
}

func TestParseKeyCheck(t *testing.T) {
	for _, c := range []struct {
		in   string
		want KeyCheck
		ok   bool
	}{
		{"mnt-1a2b", KeyCheck{Mount: "mnt-1a2b"}, true},
		{"mnt-1a2b; last", KeyCheck{Mount: "mnt-1a2b", Last: true}, true},
		{" mnt.x_y ;last ", KeyCheck{Mount: "mnt.x_y", Last: true}, true},
		{"mnt; first", KeyCheck{}, false},
		{"", KeyCheck{}, false},
		{"a b", KeyCheck{}, false},
	} {
		got, err := ParseKeyCheck(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseKeyCheck(%q) = %+v, %v", c.in, got, err)
		}
		if c.ok {
			if back, _ := ParseKeyCheck(got.HeaderValue()); back != got {
				t.Errorf("HeaderValue of %+v does not parse back", got)
			}
		}
	}
}
