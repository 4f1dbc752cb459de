package volume

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRecoverRestore: whatever step of a restore was interrupted, recovery
// leaves exactly one backing directory: the restored copy when it was
// complete, else the old state, and nothing beside it.
func TestRecoverRestore(t *testing.T) {
	cases := []struct {
		name  string
		exist []string // among "", partial, ready, old (the suffix's dir holds its name in a file)
		want  string   // what the backing directory holds afterwards
	}{
		{"copy unfinished", []string{"", restorePartialSuffix}, ""},
		{"copy complete, not swapped", []string{"", restoreReadySuffix}, restoreReadySuffix},
		{"between the renames", []string{restoreReadySuffix, restoreOldSuffix}, restoreReadySuffix},
		{"copy lost, old aside", []string{restoreOldSuffix}, restoreOldSuffix},
		{"swapped, old not removed", []string{"", restoreOldSuffix}, ""},
		{"nothing to do", []string{""}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			backing := filepath.Join(t.TempDir(), "vol")
			for _, suf := range c.exist {
				if err := os.Mkdir(backing+suf, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(backing+suf, "origin"), []byte(suf), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := recoverRestore(backing); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(backing, "origin"))
			if err != nil {
				t.Fatalf("no backing directory after recovery: %v", err)
			}
			if string(got) != c.want {
				t.Errorf("backing holds %q, want %q", got, c.want)
			}
			for _, suf := range []string{restorePartialSuffix, restoreReadySuffix, restoreOldSuffix} {
				if _, err := os.Lstat(backing + suf); err == nil {
					t.Errorf("%s left after recovery", suf)
				}
			}
		})
	}
}
