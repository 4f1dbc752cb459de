package fusefs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs"
)

// TestStartProfiling: the opt-in profiles are written where the
// environment says, with owner-only permissions, and nothing happens
// without the variables.
func TestStartProfiling(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mem.prof")
	t.Setenv(fusefs.EnvCPUProfile, cpu)
	t.Setenv(fusefs.EnvMemProfile, mem)
	stop := fusefs.StartProfiling(zerolog.Nop())
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	stop()
	for _, p := range []string{cpu, mem} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("profile not written: %v", err)
		}
		if st.Size() == 0 || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %d bytes, mode %v; want a non-empty 0600 file", p, st.Size(), st.Mode().Perm())
		}
	}

	t.Setenv(fusefs.EnvCPUProfile, "")
	t.Setenv(fusefs.EnvMemProfile, "")
	os.Remove(cpu)
	fusefs.StartProfiling(zerolog.Nop())()
	if _, err := os.Stat(cpu); !os.IsNotExist(err) {
		t.Fatalf("profile written without %s: %v", fusefs.EnvCPUProfile, err)
	}
}
