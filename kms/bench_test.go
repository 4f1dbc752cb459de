package kms

import (
	"testing"
	"time"
)

func benchStore(b *testing.B) (*Store, []byte, map[string]string) {
	s := openTest(b, b.TempDir(), nil)
	md, err := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	ectx := map[string]string{"encvol:volume-id": "vol-bench"}
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
	if err != nil {
		b.Fatal(err)
	}
	return s, blob, ectx
}

// BenchmarkDecrypt measures a local (in-process) Decrypt of a 32-byte data
// key including the store lock, state freshness check and audit record.
func BenchmarkDecrypt(b *testing.B) {
	s, blob, ectx := benchStore(b)
	start := time.Now()
	for b.Loop() {
		pt, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, "")
		if err != nil {
			b.Fatal(err)
		}
		clear(pt)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkDecryptParallel is BenchmarkDecrypt from GOMAXPROCS goroutines.
func BenchmarkDecryptParallel(b *testing.B) {
	s, blob, ectx := benchStore(b)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pt, _, err := s.Decrypt(bg, LocalPrincipal, blob, ectx, "")
			if err != nil {
				b.Error(err)
				return
			}
			clear(pt)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkDecryptAuditSync forces an fsync of every audit record.
func BenchmarkDecryptAuditSync(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, Options{AuditSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	md, _ := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{})
	_, blob, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for b.Loop() {
		if _, _, err := s.Decrypt(bg, LocalPrincipal, blob, nil, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkGenerateDataKey measures wrapping a new 32-byte data key.
func BenchmarkGenerateDataKey(b *testing.B) {
	s, _, ectx := benchStore(b)
	md, _ := s.CreateKey(bg, LocalPrincipal, CreateKeyInput{})
	start := time.Now()
	for b.Loop() {
		pt, _, _, err := s.GenerateDataKey(bg, LocalPrincipal, md.KeyID, 32, ectx)
		if err != nil {
			b.Fatal(err)
		}
		clear(pt)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}
