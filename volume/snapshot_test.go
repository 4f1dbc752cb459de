package volume

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestResolveSnapshotVolume: where a volume's snapshots go (beside the
// backing directory, or the snapshots key of its table, also when the
// volume is named by its path); a snapshot directory inside the backing
// directory is refused.
func TestResolveSnapshotVolume(t *testing.T) {
	_, backing, _ := newTestVolume(t)
	other := filepath.Join(t.TempDir(), "snaps")
	conf := func(snapshots string) *Config {
		t.Helper()
		text := fmt.Sprintf("[kms.fake]\ntype = \"local\"\npath = \"/k\"\n[volumes.v]\nbacking = %q\nsnapshots = %q\n", backing, snapshots)
		c, err := ParseConfig(filepath.Join(t.TempDir(), "c.toml"), []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, c := range []struct {
		snapshots, arg, want string
	}{
		{"", backing, backing + ".snapshots"},
		{other, "v", other},
		{other, backing, other},
	} {
		v, err := conf(c.snapshots).ResolveSnapshotVolume(c.arg)
		if err != nil {
			t.Fatalf("%q with snapshots = %q: %v", c.arg, c.snapshots, err)
		}
		if v.Snapshots != c.want || v.Backing != backing {
			t.Errorf("%q with snapshots = %q: snapshots in %s, want %s", c.arg, c.snapshots, v.Snapshots, c.want)
		}
	}
	if _, err := conf(filepath.Join(backing, "snaps")).ResolveSnapshotVolume("v"); err == nil || !strings.Contains(err.Error(), "inside its backing directory") {
		t.Errorf("snapshot directory inside the backing directory: %v", err)
	}
}
