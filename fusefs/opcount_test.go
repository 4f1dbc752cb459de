package fusefs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// The request counts explain what a workload costs; they must count what
// the kernel actually sent, by kind.
func TestOpsCountRequests(t *testing.T) {
	mnt, fsys, _ := fusefstest.MountTemp(t, fusefstest.Options{})
	before := fsys.Ops()
	const n = 5
	for i := range n {
		p := filepath.Join(mnt, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "fa")); err != nil {
		t.Fatal(err)
	}
	after := fsys.Ops()
	for op, want := range map[string]uint64{"CREATE": n, "MKDIR": 1, "UNLINK": 1} {
		if got := after[op] - before[op]; got != want {
			t.Errorf("%s: %d requests counted, want %d (all counts: %v)", op, got, want, after)
		}
	}
}
