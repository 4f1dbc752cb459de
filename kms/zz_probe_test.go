package kms

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func BenchmarkProbeLock(b *testing.B) {
	s, _, _ := benchStore(b)
	for b.Loop() {
		lk, err := s.lock(false)
		if err != nil {
			b.Fatal(err)
		}
		s.current(lk)
		s.unlock(lk)
	}
}

func BenchmarkProbeAudit(b *testing.B) {
	a, _ := openAuditLog(filepath.Join(b.TempDir(), "a"), false, 0)
	rec := &AuditRecord{Time: time.Now(), Principal: "x", Operation: "Decrypt", KeyID: "abc"}
	for b.Loop() {
		a.append(rec, false)
	}
	a.close()
}

func BenchmarkProbeWrite(b *testing.B) {
	f, _ := os.OpenFile(filepath.Join(b.TempDir(), "a"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	for b.Loop() {
		f.Write([]byte("hello world this is an audit record of about a hundred bytes or so, right? yes indeed it is\n"))
	}
}
