package fusefs_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/fusefs/fusefstest"
)

// plainAttr is what the mount must show for one entry.
type plainAttr struct {
	mode     uint32 // type and permission bits
	uid, gid uint32
}

func lstatAttr(t *testing.T, p string) plainAttr {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return plainAttr{mode: st.Mode, uid: st.Uid, gid: st.Gid}
}

// waitAttr polls until the mount shows want for name (the kernel may serve
// cached attributes for up to the attribute timeout after a change).
func waitAttr(t *testing.T, mnt, name string, want plainAttr) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := lstatAttr(t, filepath.Join(mnt, name))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on the mount: mode %07o uid %d gid %d, want mode %07o uid %d gid %d",
				name, got.mode, got.uid, got.gid, want.mode, want.uid, want.gid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkBacking walks the backing directory: every regular file must be
// exactly 0600 and every directory 0700, owned by the daemon's user (this
// process). It returns how many long-name side files it saw.
func checkBacking(t *testing.T, backing string) (sideFiles int) {
	t.Helper()
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	err := filepath.WalkDir(backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(backing, p)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if st.Mode&07777 != 0o600 {
				t.Errorf("backing file %s: mode %04o, want 0600", rel, st.Mode&07777)
			}
			if strings.HasSuffix(p, ".name") {
				sideFiles++
			}
		case unix.S_IFDIR:
			if st.Mode&07777 != 0o700 {
				t.Errorf("backing directory %s: mode %04o, want 0700", rel, st.Mode&07777)
			}
		default:
			return nil // symlinks and special files mirror their attributes
		}
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("backing %s: owner %d:%d, want the daemon's %d:%d", rel, st.Uid, st.Gid, uid, gid)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk backing %s: %v", backing, err)
	}
	return sideFiles
}

func currentUmask() uint32 {
	old := unix.Umask(0o022)
	unix.Umask(old)
	return uint32(old)
}

// TestMetaBackingHidesModes creates entries with assorted modes and owners
// and checks that the backing directory shows none of them (0600 files,
// 0700 directories, the daemon's owner) while the mount shows them all,
// across chmod, chown, hard links and a remount.
func TestMetaBackingHidesModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns to other users and must run as root")
	}
	for _, plaintext := range []bool{false, true} {
		name := "encrypted-names"
		if plaintext {
			name = "plaintext-names"
		}
		t.Run(name, func(t *testing.T) {
			opts := fusefstest.Options{PlaintextNames: plaintext}
			v := fusefstest.NewVolume(t, opts)
			m := fusefstest.MountVolume(t, v, opts)
			mnt := m.Dir
			umask := currentUmask()
			long := strings.Repeat("long-name-", 20) // encrypted form > 255 bytes

			mk := func(p string, mode uint32) {
				t.Helper()
				fd, err := unix.Open(filepath.Join(mnt, p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
				if err != nil {
					t.Fatalf("create %s: %v", p, err)
				}
				if _, err := unix.Write(fd, []byte("content of "+p)); err != nil {
					t.Fatalf("write %s: %v", p, err)
				}
				unix.Close(fd)
			}
			mk("f0755", 0o755)
			mk("f0640", 0o640)
			mk("suid", 0o4755)
			mk(long, 0o600)
			if err := unix.Mknod(filepath.Join(mnt, "mknod-reg"), unix.S_IFREG|0o640, 0); err != nil {
				t.Fatalf("mknod regular: %v", err)
			}
			if err := unix.Mkfifo(filepath.Join(mnt, "fifo"), 0o640); err != nil {
				t.Fatalf("mkfifo: %v", err)
			}
			if err := os.Symlink("f0640", filepath.Join(mnt, "link")); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkdir(filepath.Join(mnt, "tmp"), 0o1777); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkdir(filepath.Join(mnt, "d0750"), 0o750); err != nil {
				t.Fatal(err)
			}
			mk("d0750/inner", 0o644)
			if err := os.Link(filepath.Join(mnt, "f0640"), filepath.Join(mnt, "d0750/hardlink")); err != nil {
				t.Fatal(err)
			}
			// Exact modes independent of the test's umask.
			exact := map[string]uint32{"suid": 0o4755, "tmp": 0o1777}
			for p, mode := range exact {
				if err := unix.Chmod(filepath.Join(mnt, p), mode); err != nil {
					t.Fatalf("chmod %s: %v", p, err)
				}
			}
			// chown to another user; chmod after chown (chown drops set-ID bits).
			if err := os.Chown(filepath.Join(mnt, "f0755"), 1000, 1001); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(filepath.Join(mnt, "d0750"), 2000, 2001); err != nil {
				t.Fatal(err)
			}
			// A set-group-ID directory passes its group on.
			if err := unix.Mkdir(filepath.Join(mnt, "sgid"), 0o770); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(filepath.Join(mnt, "sgid"), 0, 3000); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(filepath.Join(mnt, "sgid"), 0o2770); err != nil {
				t.Fatal(err)
			}
			mk("sgid/file", 0o640)
			if err := unix.Mkdir(filepath.Join(mnt, "sgid/sub"), 0o750); err != nil {
				t.Fatal(err)
			}

			want := map[string]plainAttr{
				"f0755":          {unix.S_IFREG | 0o755&^umask, 1000, 1001},
				"f0640":          {unix.S_IFREG | 0o640&^umask, 0, 0},
				"d0750/hardlink": {unix.S_IFREG | 0o640&^umask, 0, 0},
				"suid":           {unix.S_IFREG | 0o4755, 0, 0},
				long:             {unix.S_IFREG | 0o600&^umask, 0, 0},
				"mknod-reg":      {unix.S_IFREG | 0o640&^umask, 0, 0},
				"fifo":           {unix.S_IFIFO | 0o640&^umask, 0, 0},
				"link":           {unix.S_IFLNK | 0o777, 0, 0},
				"tmp":            {unix.S_IFDIR | 0o1777, 0, 0},
				"d0750":          {unix.S_IFDIR | 0o750&^umask, 2000, 2001},
				"d0750/inner":    {unix.S_IFREG | 0o644&^umask, 0, 0},
				"sgid":           {unix.S_IFDIR | 0o2770, 0, 3000},
				"sgid/file":      {unix.S_IFREG | 0o640&^umask, 0, 3000},
				"sgid/sub":       {unix.S_IFDIR | 0o2000 | 0o750&^umask, 0, 3000},
			}
			verify := func(stage string) {
				t.Helper()
				for p, w := range want {
					waitAttr(t, mnt, p, w)
				}
				if sides := checkBacking(t, v.Backing); !plaintext && sides == 0 {
					t.Errorf("%s: no long-name side file in the backing directory", stage)
				}
			}
			verify("after create")

			// chmod through the mount changes what the mount shows, never
			// the backing mode; the hard link shares it.
			if err := unix.Chmod(filepath.Join(mnt, "d0750/hardlink"), 0o604); err != nil {
				t.Fatal(err)
			}
			want["f0640"] = plainAttr{unix.S_IFREG | 0o604, 0, 0}
			want["d0750/hardlink"] = want["f0640"]
			if err := unix.Chmod(filepath.Join(mnt, "d0750"), 0o711); err != nil {
				t.Fatal(err)
			}
			want["d0750"] = plainAttr{unix.S_IFDIR | 0o711, 2000, 2001}
			// chown of a set-user-ID file drops the bit, as on a local file system.
			if err := os.Chown(filepath.Join(mnt, "suid"), 4000, 4001); err != nil {
				t.Fatal(err)
			}
			want["suid"] = plainAttr{unix.S_IFREG | 0o755, 4000, 4001}
			// chmod on an open file (answered through the open descriptor).
			f, err := os.OpenFile(filepath.Join(mnt, "d0750/inner"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Fchmod(int(f.Fd()), 0o4711); err != nil {
				t.Fatal(err)
			}
			if st, err := f.Stat(); err != nil || st.Mode()&os.ModeSetuid == 0 || st.Mode().Perm() != 0o711 {
				t.Errorf("fstat after fchmod: %v %v, want -rws--x--x", st.Mode(), err)
			}
			f.Close()
			want["d0750/inner"] = plainAttr{unix.S_IFREG | 0o4711, 0, 0}
			// The root's mode lives on the backing directory itself.
			if err := unix.Chmod(mnt, 0o751); err != nil {
				t.Fatal(err)
			}
			want["."] = plainAttr{unix.S_IFDIR | 0o751, 0, 0}
			verify("after chmod")

			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
			m = fusefstest.MountVolume(t, v, opts)
			mnt = m.Dir
			verify("after remount")
			for _, p := range []string{"f0640", "d0750/inner", long} {
				b, err := os.ReadFile(filepath.Join(mnt, p))
				if err != nil || string(b) != "content of "+map[string]string{"f0640": "f0640", "d0750/inner": "d0750/inner", long: long}[p] {
					t.Errorf("read %s after remount: %q %v", p, b, err)
				}
			}
		})
	}
}

// TestMetaXattrHidden: the backing xattr that holds modes and owners never
// shows in a listing, cannot be read, set or removed through the mount, and
// user attributes work beside it.
func TestMetaXattrHidden(t *testing.T) {
	for _, plaintext := range []bool{false, true} {
		opts := fusefstest.Options{PlaintextNames: plaintext}
		v := fusefstest.NewVolume(t, opts)
		m := fusefstest.MountVolume(t, v, opts)
		for _, name := range []string{"file", "dir"} {
			p := filepath.Join(m.Dir, name)
			if name == "dir" {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(p, "user.mine", []byte("v"), 0); err != nil {
				t.Fatalf("setxattr %s: %v", name, err)
			}
			buf := make([]byte, 4096)
			n, err := unix.Listxattr(p, buf)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(got)
			if len(got) != 1 || got[0] != "user.mine" {
				t.Errorf("plaintext=%v %s: listxattr %q, want only user.mine", plaintext, name, got)
			}
			if _, err := unix.Getxattr(p, fusefs.MetaXattr, buf); !errors.Is(err, unix.ENODATA) {
				t.Errorf("getxattr %s: %v, want ENODATA", fusefs.MetaXattr, err)
			}
			if err := unix.Setxattr(p, fusefs.MetaXattr, []byte{1, 0, 0, 0x0f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, 0); !errors.Is(err, unix.EPERM) {
				t.Errorf("setxattr %s: %v, want EPERM", fusefs.MetaXattr, err)
			}
			if err := unix.Removexattr(p, fusefs.MetaXattr); !errors.Is(err, unix.ENODATA) {
				t.Errorf("removexattr %s: %v, want ENODATA", fusefs.MetaXattr, err)
			}
			if err := unix.Removexattr(p, "user.mine"); err != nil {
				t.Errorf("removexattr user.mine: %v", err)
			}
		}
		// The meta xattr is still there on the backing entries, and the
		// modes survived the attempts.
		if st := lstatAttr(t, filepath.Join(m.Dir, "file")); st.mode&07777 != 0o644&^currentUmask() {
			t.Errorf("file mode %04o after the xattr attempts", st.mode&07777)
		}
		n := 0
		_ = filepath.WalkDir(v.Backing, func(p string, d fs.DirEntry, err error) error {
			if err == nil && (d.Type().IsRegular() || d.IsDir()) && p != v.Backing {
				if _, err := unix.Lgetxattr(p, fusefs.MetaXattr, nil); err == nil {
					n++
				}
			}
			return nil
		})
		if n != 2 {
			t.Errorf("plaintext=%v: %d backing entries carry %s, want 2 (file and dir)", plaintext, n, fusefs.MetaXattr)
		}
	}
}

// TestMetaLegacyEntries: entries without the meta xattr (older volumes,
// other tools) show their backing mode and owner; the first chmod moves
// the mode into the xattr and the backing entry to 0600/0700.
func TestMetaLegacyEntries(t *testing.T) {
	opts := fusefstest.Options{PlaintextNames: true, LegacyMeta: true}
	v := fusefstest.NewVolume(t, opts)
	old := filepath.Join(v.Backing, "old")
	if err := os.WriteFile(old, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(old, 4321, 4322); err != nil {
		t.Fatal(err)
	}
	m := fusefstest.MountVolume(t, v, opts)
	waitAttr(t, m.Dir, "old", plainAttr{unix.S_IFREG | 0o644, 4321, 4322})
	if err := unix.Chmod(filepath.Join(m.Dir, "old"), 0o640); err != nil {
		t.Fatal(err)
	}
	waitAttr(t, m.Dir, "old", plainAttr{unix.S_IFREG | 0o640, 4321, 4322})
	checkBacking(t, v.Backing)

	// A malformed value falls back to the backing attributes (never more
	// permissive than the stored ones).
	if err := unix.Setxattr(old, fusefs.MetaXattr, []byte{9, 9}, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m = fusefstest.MountVolume(t, v, opts)
	waitAttr(t, m.Dir, "old", plainAttr{unix.S_IFREG | 0o600, uint32(os.Geteuid()), uint32(os.Getegid())})
}

// TestMetaWithoutXattrSupport: on a backing file system without user
// xattrs the mount falls back to mirroring modes and owners onto the
// backing entries, and still shows the right ones.
func TestMetaWithoutXattrSupport(t *testing.T) {
	opts := fusefstest.Options{PlaintextNames: true}
	v := fusefstest.NewVolume(t, opts)
	m := fusefstest.MountVolume(t, v, opts)
	fusefs.DisableMetaXattr(m.FS)
	umask := currentUmask()
	if err := os.WriteFile(filepath.Join(m.Dir, "f"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(m.Dir, "d"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(m.Dir, "f"), 0o604); err != nil {
		t.Fatal(err)
	}
	waitAttr(t, m.Dir, "f", plainAttr{unix.S_IFREG | 0o604, 0, 0})
	waitAttr(t, m.Dir, "d", plainAttr{unix.S_IFDIR | 0o750&^umask, 0, 0})
	for name, want := range map[string]uint32{"f": 0o604, "d": 0o750 &^ umask} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(v.Backing, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&07777 != want {
			t.Errorf("mirrored backing %s: mode %04o, want %04o", name, st.Mode&07777, want)
		}
		if _, err := unix.Lgetxattr(filepath.Join(v.Backing, name), fusefs.MetaXattr, nil); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("backing %s carries %s in mirror mode: %v", name, fusefs.MetaXattr, err)
		}
	}
}
