package volume

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap/names"
)

// A symlink whose encrypted target lives in a side file walks like any
// other (its full target), fsck finds the volume clean, and a side file no
// symlink refers to is reported and removed by --repair.
func TestLongSymlinkWalkAndOrphan(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{Volume: v})
	target := strings.Repeat("long/", 800) + "end" // 4003 bytes
	if err := os.Symlink(target, filepath.Join(m.Dir, "l")); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	entries, _ := bsWalk(t, newTestSource(t, v))
	found := false
	for _, e := range entries {
		if e.Path == "l" {
			found = true
			if e.Err != nil || e.Target != target || e.Size != int64(len(target)) {
				t.Fatalf("long symlink walked as target %d bytes, size %d, err %v", len(e.Target), e.Size, e.Err)
			}
		}
	}
	if !found {
		t.Fatal("the long symlink was not walked")
	}
	if rep := fsckRun(t, v, false); len(rep.Findings) != 0 {
		t.Fatalf("clean volume with a long symlink: %v", findingKinds(rep))
	}

	orphan := filepath.Join(v.Backing, names.LongLinkDir, strings.Repeat("A", 43))
	if err := os.WriteFile(orphan, []byte("left over"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := findingKinds(fsckRun(t, v, false))
	if len(got) != 1 || !strings.Contains(got[0], string(StrayOrphanLongLink)) {
		t.Fatalf("orphaned side file: findings %v", got)
	}
	fsckRun(t, v, true)
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("--repair left the orphaned side file: %v", err)
	}
	if rep := fsckRun(t, v, false); len(rep.Findings) != 0 {
		t.Fatalf("after repair: %v", findingKinds(rep))
	}
}
