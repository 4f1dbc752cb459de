package fusefs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

func TestZZDbg(t *testing.T) {
	opts := fusefstest.Options{PlaintextNames: true, Debug: true}
	v := fusefstest.NewVolume(t, opts)
	m := fusefstest.MountVolume(t, v, opts)
	p := filepath.Join(m.Dir, "f")
	f, _ := os.Create(p)
	f.Write([]byte("abc"))
	os.Chmod(p, 0o777|os.ModeSetuid)
	out, _ := exec.Command("ls", "-la", v.Backing, m.Dir).CombinedOutput()
	t.Logf("%s", out)
	f.Close()
}
