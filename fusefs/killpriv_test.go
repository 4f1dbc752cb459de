package fusefs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

const nobody = 65534

// asNobody runs a shell command as an unprivileged user (no CAP_FSETID).
func asNobody(t *testing.T, dir, script string) {
	t.Helper()
	// The shell enters dir, not the child before exec (cmd.Dir): the
	// runtime forks with CLONE_VFORK, and until the child execs, this
	// process, the mount's daemon, serves no request (its garbage
	// collector waits for the forking thread). A chdir by another user
	// asks for the directory's ACL, which would then never be answered.
	cmd := exec.Command("/bin/sh", "-c", `cd "$1" && `+script, "sh", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

// checkMode fails unless name shows want on the mount now: every change
// of a mode, the daemon's own clearing of set-ID bits included, must be
// visible once the system call that caused it has returned.
func checkMode(t *testing.T, mnt, name string, want uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, name), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&07777 != want {
		t.Errorf("%s: mode %04o on the mount, want %04o", name, st.Mode&07777, want)
	}
}

// TestKillSUID: the mount takes over clearing set-user-ID/set-group-ID bits
// (FUSE_HANDLE_KILLPRIV_V2, which spares a GETXATTR per write). Writes,
// truncates and O_TRUNC opens by an unprivileged user must clear them as on
// a local file system; root keeps them; set-group-ID without group execute
// is kept.
func TestKillSUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test switches to an unprivileged user and must run as root")
	}
	for _, wb := range []bool{true, false} {
		name := "writeback"
		if !wb {
			name = "writethrough"
		}
		t.Run(name, func(t *testing.T) {
			opts := fusefstest.Options{PlaintextNames: true, AllowOther: true, NoWritebackCache: !wb, Debug: os.Getenv("KPDEBUG") != ""}
			m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, opts), opts)
			// Let the unprivileged user reach the mount and create nothing
			// but write to the world-writable files below.
			for d := filepath.Dir(m.Dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(m.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			files := map[string]uint32{
				"write": 06777, "truncate": 06777, "otrunc": 06777, "root": 06777, "sgid-noexec": 02666,
			}
			for f, mode := range files {
				p := filepath.Join(m.Dir, f)
				if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, os.FileMode(mode&0777)|modeBits(mode)); err != nil {
					t.Fatal(err)
				}
				checkMode(t, m.Dir, f, mode)
			}

			asNobody(t, m.Dir, "printf x >> write")
			asNobody(t, m.Dir, "truncate -s 3 truncate")
			asNobody(t, m.Dir, ": > otrunc")
			asNobody(t, m.Dir, "printf x >> sgid-noexec")
			writeOpened(t, filepath.Join(m.Dir, "root"), os.O_WRONLY|os.O_APPEND, []byte("x"))

			want := map[string]uint32{
				"write": 0o777, "truncate": 0o777, "otrunc": 0o777, "root": 06777, "sgid-noexec": 02666,
			}
			for f, w := range want {
				checkMode(t, m.Dir, f, w)
			}
			sizes := map[string]int64{"write": 11, "truncate": 3, "otrunc": 0, "root": 11, "sgid-noexec": 11}
			for f, want := range sizes {
				st, err := os.Stat(filepath.Join(m.Dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() != want {
					t.Errorf("%s: size %d, want %d", f, st.Size(), want)
				}
			}
		})
	}
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&04000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&02000 != 0 {
		fm |= os.ModeSetgid
	}
	return fm
}
