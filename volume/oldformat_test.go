package volume

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap"
)

// A volume of an older format version is reported by fsck, and its mount
// says once what converts it; a current one is neither.
func TestOldFormatReported(t *testing.T) {
	old := fusefstest.NewVolume(t, fusefstest.Options{LegacyMeta: true})
	if got := findingKinds(fsckRun(t, old, false)); !slices.Equal(got, []string{"warning old-format /"}) {
		t.Errorf("fsck of a version 1 volume: %v", got)
	}
	cur := fusefstest.NewVolume(t, fusefstest.Options{})
	if got := findingKinds(fsckRun(t, cur, false)); len(got) != 0 {
		t.Errorf("fsck of a current volume: %v", got)
	}
	for v, want := range map[int]bool{keywrap.HeaderVersion: true, keywrap.HeaderVersionKeyCheck: true, keywrap.HeaderVersionAuth: true, keywrap.HeaderVersionHoles: true, keywrap.HeaderVersionEntries: false} {
		var buf bytes.Buffer
		noteOldFormat(zerolog.New(&buf), &keywrap.Header{Version: v})
		if got := strings.Contains(buf.String(), "`encvol copy VOLUME NEWNAME`"); got != want {
			t.Errorf("version %d: mount log %q", v, buf.String())
		}
	}
}
