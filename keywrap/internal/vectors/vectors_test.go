package vectors

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	doc := "# Doc\n\nk = not a vector\n\n```text\n# vector: one\na = 01\n# comment\nb  =  x = y\n```\n\n```text\nplain = block\n```\n\n```\n# vector: two\nc = \n```\n"
	got, err := Load(write(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["one"]["a"] != "01" || got["one"]["b"] != "x = y" || got["two"]["c"] != "" {
		t.Fatalf("%#v", got)
	}
	for _, bad := range []string{
		"```\n# vector: x\n```\n```\n# vector: x\n```\n",
		"```\n# vector: x\na = 1\na = 2\n```\n",
		"```\n# vector: x\nno equals sign\n```\n",
	} {
		if _, err := Load(write(t, bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.md")); err == nil || !strings.Contains(err.Error(), "missing.md") {
		t.Fatalf("missing file: %v", err)
	}
}
