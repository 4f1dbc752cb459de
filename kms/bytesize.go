package kms

import (
	"fmt"
	"strconv"
	"strings"
)

// byteUnits are the suffixes ParseByteSize accepts, binary as their names
// say.
var byteUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}}

// ParseByteSize reads a size such as "64MiB", "512KiB", "1GiB" or "4096"
// (bytes), as the audit log settings are written.
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is not a whole number of bytes, KiB, MiB, GiB or TiB (e.g. \"64MiB\")", s)
	}
	return n * mult, nil
}
