// Package vectors reads the test vectors published in docs/format.md, so the
// tests check the code against the document a second implementation would
// use, not against a private copy.
//
// A vector is a fenced code block whose first line is "# vector: NAME",
// followed by "key = value" lines (split at the first "="); other lines (comments, blank) are ignored.
package vectors

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Load returns every vector in the Markdown file at path, by name.
func Load(path string) (map[string]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load vectors: %w", err)
	}
	defer f.Close()
	out := map[string]map[string]string{}
	var cur map[string]string
	inFence := false
	first := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t")
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			first = inFence
			cur = nil
			continue
		}
		if !inFence {
			continue
		}
		if first {
			first = false
			if name, ok := strings.CutPrefix(line, "# vector: "); ok {
				name = strings.TrimSpace(name)
				if _, dup := out[name]; dup {
					return nil, fmt.Errorf("%s:%d: vector %q defined twice", path, n, name)
				}
				cur = map[string]string{}
				out[name] = cur
			}
			continue
		}
		if cur == nil || line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: vector line without \"=\": %q", path, n, line)
		}
		k = strings.TrimSpace(k)
		if _, dup := cur[k]; dup {
			return nil, fmt.Errorf("%s:%d: key %q twice in one vector", path, n, k)
		}
		cur[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("load vectors %s: %w", path, err)
	}
	return out, nil
}
