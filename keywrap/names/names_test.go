package names

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
)

func newCodec(t testing.TB, plaintext bool) *Codec {
	t.Helper()
	k, err := keywrap.RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close() // the codec keeps its own copy
	c, err := NewCodec(k, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func dirID(b byte) []byte { return bytes.Repeat([]byte{b}, DirIDLen) }

func TestNameRoundTrip(t *testing.T) {
	c := newCodec(t, false)
	d := dirID(1)
	names := []string{
		"a", "hello.txt", ".hidden", "...", " spaced name ", "Grüße, 世界 🌍",
		strings.Repeat("x", 175), // longest name that stays short
		strings.Repeat("y", 176), // shortest long name
		strings.Repeat("é", 127), // 254 bytes
		strings.Repeat("z", NameMax),
		string([]byte{0xff, 0xfe, '\n', '\t'}), // not UTF-8: Linux allows it
	}
	for _, name := range names {
		backing, full, err := c.EncryptName(d, name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if len(backing) > NameMax || strings.ContainsAny(backing, "/\x00") {
			t.Fatalf("%q: bad backing name %q", name, backing)
		}
		long := len(name) > 175
		if long != (full != "") || long != IsLongName(backing) {
			t.Fatalf("%q (%d bytes): long=%v full=%q backing=%q", name, len(name), long, full, backing)
		}
		enc := backing
		if long {
			enc = full
			if IsReserved(backing) || !IsReserved(backing+LongNameSuffix) {
				t.Fatalf("reserved-ness of long name %q wrong", backing)
			}
		} else if strings.Contains(backing, ".") || IsReserved(backing) {
			t.Fatalf("short encoded name %q contains '.' or is reserved", backing)
		}
		got, err := c.DecryptName(d, enc)
		if err != nil || got != name {
			t.Fatalf("%q: decrypt = %q, %v", name, got, err)
		}
		again, _, _ := c.EncryptName(d, name)
		if again != backing {
			t.Fatalf("%q: not deterministic", name)
		}
	}
}

func TestSameNameTwoDirs(t *testing.T) {
	c := newCodec(t, false)
	a, _, err := c.EncryptName(dirID(1), "same")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := c.EncryptName(dirID(2), "same")
	if a == b {
		t.Fatal("same name in two directories encrypts identically")
	}
	if _, err := c.DecryptName(dirID(2), a); !errors.Is(err, ErrNameAuth) {
		t.Fatalf("name moved to another directory: %v, want ErrNameAuth", err)
	}
	other := newCodec(t, false)
	if _, err := other.DecryptName(dirID(1), a); !errors.Is(err, ErrNameAuth) {
		t.Fatalf("other key: %v, want ErrNameAuth", err)
	}
}

func TestNameTamper(t *testing.T) {
	c := newCodec(t, false)
	d := dirID(3)
	enc, _, err := c.EncryptName(d, "secret-report.pdf")
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range len(enc) {
		for _, r := range []byte{alphabet[(strings.IndexByte(alphabet, enc[i])+1)%64], '.', '='} {
			bad := enc[:i] + string(r) + enc[i+1:]
			if _, err := c.DecryptName(d, bad); !errors.Is(err, ErrNameAuth) {
				t.Fatalf("tampered %q (pos %d): %v, want ErrNameAuth", bad, i, err)
			}
		}
	}
	// encoding/base64 skips CR/LF even in strict mode; a name must still have
	// exactly one backing spelling.
	for _, bad := range []string{"", enc[:len(enc)-1], enc[:22], enc + "A", "AAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("A", 2000),
		enc[:5] + "\n" + enc[5:], enc + "\r", "\n" + enc} {
		if _, err := c.DecryptName(d, bad); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("%q: %v, want ErrNameAuth", bad, err)
		}
	}
	if Errno(ErrNameAuth) != syscall.EIO {
		t.Fatal("ErrNameAuth must map to EIO")
	}
}

func TestInvalidNames(t *testing.T) {
	for _, plaintext := range []bool{false, true} {
		c := newCodec(t, plaintext)
		cases := map[string]syscall.Errno{
			"": syscall.EINVAL, ".": syscall.EINVAL, "..": syscall.EINVAL, "a/b": syscall.EINVAL,
			"a\x00b": syscall.EINVAL, strings.Repeat("n", 256): syscall.ENAMETOOLONG,
		}
		for name, want := range cases {
			_, _, err := c.EncryptName(dirID(1), name)
			if !errors.Is(err, want) || Errno(err) != want {
				t.Errorf("plaintext=%v %q: %v, want %v", plaintext, clip(name), err, want)
			}
		}
	}
	c := newCodec(t, false)
	if _, _, err := c.EncryptName([]byte{1, 2}, "x"); !errors.Is(err, ErrDirIDCorrupt) {
		t.Fatalf("short dir id: %v", err)
	}
	backing, _, _ := c.EncryptName(dirID(1), strings.Repeat("L", 200))
	if _, err := c.DecryptName(dirID(1), backing); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("decrypting a long backing name directly: %v", err)
	}
}

func TestPlaintextMode(t *testing.T) {
	c := newCodec(t, true)
	if !c.Plaintext() {
		t.Fatal("Plaintext() false")
	}
	for _, name := range []string{"a.txt", "Grüße", "encvol.longname.x.name", "encvol.other"} {
		b, full, err := c.EncryptName(nil, name)
		if err != nil || b != name || full != "" {
			t.Fatalf("%q: %q %q %v", name, b, full, err)
		}
		if got, err := c.DecryptName(nil, name); err != nil || got != name {
			t.Fatalf("%q: decrypt %q %v", name, got, err)
		}
	}
	for _, name := range []string{keywrap.HeaderFile, DirIDFile, keywrap.IncompleteFile, keywrap.TempPrefix + "x"} {
		if _, _, err := c.EncryptName(nil, name); !errors.Is(err, ErrReservedName) || !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("%q: %v, want ErrReservedName/EINVAL", name, err)
		}
		if !c.IsReserved(name) {
			t.Fatalf("%q not reserved", name)
		}
	}
	if c.IsReserved("encvol.longname.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.name") {
		t.Fatal("side-file-like name reserved in plaintext mode")
	}
	s, err := c.EncryptSymlink(nil, "", "../x/y")
	if err != nil || s != "../x/y" {
		t.Fatalf("symlink passthrough: %q %v", s, err)
	}
	if got, _ := c.DecryptSymlink(nil, "", s); got != "../x/y" {
		t.Fatal("symlink passthrough decrypt")
	}
	x, err := c.EncryptXattrName("user.comment")
	if err != nil || x != "user.comment" {
		t.Fatalf("xattr passthrough: %q %v", x, err)
	}
	sealed, err := c.SealXattrValue(x, nil, []byte("v"))
	if err != nil || bytes.Contains(sealed, []byte("v")) && len(sealed) == 1 {
		t.Fatalf("xattr value not sealed in plaintext mode: %q %v", sealed, err)
	}
}

func TestSymlinks(t *testing.T) {
	c := newCodec(t, false)
	for _, target := range []string{"/", "a", "../../etc/passwd", "ünï/cödé", strings.Repeat("t", 3043)} {
		s1, err := c.EncryptSymlink(nil, "", target)
		if err != nil {
			t.Fatalf("%d bytes: %v", len(target), err)
		}
		s2, _ := c.EncryptSymlink(nil, "", target)
		if s1 == s2 {
			t.Fatal("symlink encryption not randomized")
		}
		if len(s1) > symlinkMax || strings.Contains(s1, target) && len(target) > 3 {
			t.Fatalf("bad stored target %q", s1)
		}
		for _, s := range []string{s1, s2} {
			if got, err := c.DecryptSymlink(nil, "", s); err != nil || got != target {
				t.Fatalf("decrypt: %q %v", got, err)
			}
		}
		bad := []byte(s1)
		bad[len(bad)/2] ^= 0x01
		if _, err := c.DecryptSymlink(nil, "", string(bad)); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("tampered symlink: %v", err)
		}
		if _, err := c.DecryptSymlink(nil, "", s1[:4]+"\n"+s1[4:]); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("symlink with newline: %v", err)
		}
	}
	// PATH_MAX - 1 bytes is the longest target (its encrypted form goes
	// into a side file, see StoreLink); one more is refused.
	if _, err := c.EncryptSymlink(nil, "", strings.Repeat("t", 4095)); err != nil {
		t.Fatalf("4095-byte target: %v", err)
	}
	if _, err := c.EncryptSymlink(nil, "", strings.Repeat("t", 4096)); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("too long target: %v", err)
	}
	for _, bad := range []string{"", "a\x00b"} {
		if _, err := c.EncryptSymlink(nil, "", bad); !errors.Is(err, ErrInvalidName) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	for _, bad := range []string{"", "AAAA", "!!", strings.Repeat("A", 5000)} {
		if _, err := c.DecryptSymlink(nil, "", bad); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("%q: %v", clip(bad), err)
		}
	}
}

func TestXattrs(t *testing.T) {
	c := newCodec(t, false)
	for _, name := range []string{"user.a", "user.mime_type", "user." + strings.Repeat("k", 166)} {
		enc, err := c.EncryptXattrName(name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if !strings.HasPrefix(enc, XattrPrefix) || len(enc) > XattrNameMax || strings.Contains(enc, name[5:]) && len(name) > 8 {
			t.Fatalf("%q → %q", name, enc)
		}
		if again, _ := c.EncryptXattrName(name); again != enc {
			t.Fatal("xattr name not deterministic")
		}
		if got, err := c.DecryptXattrName(enc); err != nil || got != name {
			t.Fatalf("decrypt %q: %q %v", enc, got, err)
		}
		bad := []byte(enc)
		bad[len(bad)-2] ^= 0x02
		if _, err := c.DecryptXattrName(string(bad)); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("tampered xattr name: %v", err)
		}
		if _, err := c.DecryptXattrName(enc + "\n"); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("xattr name with newline: %v", err)
		}
	}
	if _, err := c.EncryptXattrName("user." + strings.Repeat("k", 167)); !errors.Is(err, ErrNameTooLong) {
		t.Fatalf("too long xattr name: %v", err)
	}
	for _, name := range []string{"security.selinux", "trusted.x", "system.posix_acl_access", "user"} {
		if _, err := c.EncryptXattrName(name); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Fatalf("%q: %v", name, err)
		}
	}
	if _, err := c.EncryptXattrName("user."); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("empty user xattr: %v", err)
	}
	for _, foreign := range []string{"security.selinux", "user.other", "user.encvo"} {
		if _, err := c.DecryptXattrName(foreign); !errors.Is(err, ErrXattrForeign) {
			t.Fatalf("%q: %v", foreign, err)
		}
	}
	// Values: AAD binds the name.
	n1, _ := c.EncryptXattrName("user.a")
	n2, _ := c.EncryptXattrName("user.b")
	for _, val := range [][]byte{{}, []byte("value"), bytes.Repeat([]byte{0}, XattrValueMax-28)} {
		sealed, err := c.SealXattrValue(n1, nil, val)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.OpenXattrValue(n1, nil, sealed)
		if err != nil || !bytes.Equal(got, val) || got == nil {
			t.Fatalf("open: %d bytes %v", len(got), err)
		}
		if _, err := c.OpenXattrValue(n2, nil, sealed); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("value under another name: %v", err)
		}
		sealed[len(sealed)-1] ^= 1
		if _, err := c.OpenXattrValue(n1, nil, sealed); !errors.Is(err, ErrNameAuth) {
			t.Fatalf("tampered value: %v", err)
		}
	}
	if _, err := c.SealXattrValue(n1, nil, make([]byte, XattrValueMax-27)); !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("too large: %v", err)
	}
	if _, err := c.OpenXattrValue(n1, nil, []byte("short")); !errors.Is(err, ErrNameAuth) {
		t.Fatalf("short sealed value: %v", err)
	}
}

func TestCodecClose(t *testing.T) {
	for _, plaintext := range []bool{false, true} {
		c := newCodec(t, plaintext)
		enc, _, _ := c.EncryptName(dirID(1), "x")
		c.Close()
		c.Close()
		checks := []error{}
		_, _, err := c.EncryptName(dirID(1), "x")
		checks = append(checks, err)
		_, err = c.DecryptName(dirID(1), enc)
		checks = append(checks, err)
		_, err = c.EncryptSymlink(nil, "", "x")
		checks = append(checks, err)
		_, err = c.DecryptSymlink(nil, "", "x")
		checks = append(checks, err)
		_, err = c.EncryptXattrName("user.x")
		checks = append(checks, err)
		_, err = c.DecryptXattrName("user.x")
		checks = append(checks, err)
		_, err = c.SealXattrValue("user.x", nil, nil)
		checks = append(checks, err)
		_, err = c.OpenXattrValue("user.x", nil, make([]byte, 40))
		checks = append(checks, err)
		for i, err := range checks {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("plaintext=%v op %d after Close: %v, want ErrClosed", plaintext, i, err)
			}
		}
	}
	k, _ := keywrap.RandomKey(32)
	k.Close()
	if _, err := NewCodec(k, false); !errors.Is(err, keywrap.ErrClosed) {
		t.Fatalf("codec from closed key: %v", err)
	}
}

func TestCodecConcurrent(t *testing.T) {
	c := newCodec(t, false)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			d := dirID(byte(g))
			for i := range 300 {
				name := fmt.Sprintf("file-%d-%d", g, i)
				enc, _, err := c.EncryptName(d, name)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				got, err := c.DecryptName(d, enc)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil || got != name {
					t.Errorf("%q: %q %v", name, got, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		// Close while the others run: they must see ErrClosed, never garbage.
		for range 200 {
			if _, _, err := c.EncryptName(dirID(9), "warmup"); err != nil {
				t.Error(err)
			}
		}
		c.Close()
	})
	wg.Wait()
}

func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestDirID(t *testing.T) {
	dir := t.TempDir()
	fd := openDir(t, dir)
	if _, err := ReadDirID(fd); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing dir id: %v", err)
	}
	id, err := CreateDirID(fd)
	if err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); len(got) != 1 || got[0] != DirIDFile {
		t.Fatalf("directory holds %v", got)
	}
	content, _ := os.ReadFile(filepath.Join(dir, DirIDFile))
	if !bytes.Equal(content, id) || len(id) != DirIDLen {
		t.Fatalf("file %x, returned %x", content, id)
	}
	st, _ := os.Stat(filepath.Join(dir, DirIDFile))
	if st.Mode().Perm() != metaFileMode&^currentUmask() {
		t.Fatalf("mode %v", st.Mode())
	}
	got, err := ReadDirID(fd)
	if err != nil || !bytes.Equal(got, id) {
		t.Fatalf("ReadDirID %x %v", got, err)
	}
	// A second create must never replace the ID: every name in the
	// directory depends on it.
	if _, err := CreateDirID(fd); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateDirID: %v, want EEXIST", err)
	}
	if got, _ := ReadDirID(fd); !bytes.Equal(got, id) {
		t.Fatal("dir id replaced")
	}
	if got := listDir(t, dir); len(got) != 1 {
		t.Fatalf("temp file left: %v", got)
	}
	id2, _ := CreateDirID(openDir(t, t.TempDir()))
	if bytes.Equal(id, id2) {
		t.Fatal("two dir ids equal")
	}
	for _, bad := range [][]byte{{}, make([]byte, 15), make([]byte, 17), make([]byte, 16)} {
		if err := os.WriteFile(filepath.Join(dir, DirIDFile), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadDirID(fd); !errors.Is(err, ErrDirIDCorrupt) {
			t.Fatalf("%d-byte dir id: %v", len(bad), err)
		}
	}
}

func currentUmask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

// TestCreateDirIDCrash stops CreateDirID at the point a crash would hurt
// most (temp file written, not yet renamed): the directory must then hold no
// ID file at all — never an empty one — and, when the call returns, no
// temporary file either. At the rename, the temp file is already complete on
// disk.
func TestCreateDirIDCrash(t *testing.T) {
	dir := t.TempDir()
	fd := openDir(t, dir)
	crash := errors.New("simulated crash")
	var sawTmp string
	testHook = func(stage string, dirfd int, tmp string) error {
		sawTmp = tmp
		b, err := os.ReadFile(filepath.Join(dir, tmp))
		if err != nil || len(b) != DirIDLen {
			t.Errorf("temp file at %s: %d bytes, %v", stage, len(b), err)
		}
		if _, err := os.Stat(filepath.Join(dir, DirIDFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("dir id visible before rename: %v", err)
		}
		return crash
	}
	defer func() { testHook = nil }()
	if _, err := CreateDirID(fd); !errors.Is(err, crash) {
		t.Fatalf("CreateDirID: %v", err)
	}
	if !strings.HasPrefix(sawTmp, keywrap.TempPrefix) || !IsReserved(sawTmp) {
		t.Fatalf("temp name %q not reserved", sawTmp)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Fatalf("after failed create the directory holds %v", got)
	}
	testHook = nil
	id, err := CreateDirID(fd)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadDirID(fd); !bytes.Equal(got, id) {
		t.Fatal("retry after crash")
	}
}

func TestLongNameFiles(t *testing.T) {
	c := newCodec(t, false)
	dir := t.TempDir()
	fd := openDir(t, dir)
	id, err := CreateDirID(fd)
	if err != nil {
		t.Fatal(err)
	}
	name1 := strings.Repeat("α", 120) // 240 bytes
	name2 := strings.Repeat("β", 120)
	b1, full1, _ := c.EncryptName(id, name1)
	b2, full2, _ := c.EncryptName(id, name2)
	if full1 == "" || full2 == "" || len(b1) != len(LongNamePrefix)+longHashLen {
		t.Fatalf("not long: %q %q", b1, full1)
	}
	for _, x := range [][2]string{{b1, full1}, {b2, full2}} {
		if err := WriteLongName(fd, x[0], x[1]); err != nil {
			t.Fatal(err)
		}
		if err := WriteLongName(fd, x[0], x[1]); err != nil {
			t.Fatalf("rewrite: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, x[0]), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteLongName(fd, b1, full2); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("mismatched side file: %v", err)
	}
	var visible []string
	for _, e := range listDir(t, dir) {
		if IsReserved(e) {
			continue
		}
		enc := e
		if IsLongName(e) {
			if enc, err = ReadLongName(fd, e); err != nil {
				t.Fatal(err)
			}
		}
		n, err := c.DecryptName(id, enc)
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		visible = append(visible, n)
	}
	if len(visible) != 2 || !(visible[0] == name1 || visible[1] == name1) || !utf8.ValidString(visible[0]) {
		t.Fatalf("listing %q", visible)
	}
	// Swapping side files between entries is detected.
	s1, _ := os.ReadFile(filepath.Join(dir, b1+LongNameSuffix))
	if err := os.WriteFile(filepath.Join(dir, b2+LongNameSuffix), s1, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLongName(fd, b2); !errors.Is(err, ErrNameAuth) {
		t.Fatalf("swapped side file: %v", err)
	}
	if _, err := ReadLongName(fd, "plain"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("not a long name: %v", err)
	}
	if err := RemoveLongName(fd, b1); err != nil {
		t.Fatal(err)
	}
	if err := RemoveLongName(fd, b1); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := ReadLongName(fd, b1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed side file: %v", err)
	}
	for _, e := range listDir(t, dir) {
		if strings.HasPrefix(e, keywrap.TempPrefix) {
			t.Fatalf("temp file left: %s", e)
		}
	}
}

func BenchmarkEncryptName(b *testing.B) {
	c := newCodec(b, false)
	d := dirID(5)
	for _, n := range []int{16, 64, 175, 255} {
		name := strings.Repeat("n", n)
		b.Run(fmt.Sprintf("len=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.EncryptName(d, name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecryptName(b *testing.B) {
	c := newCodec(b, false)
	d := dirID(5)
	name := strings.Repeat("n", 64)
	enc, _, _ := c.EncryptName(d, name)
	b.SetBytes(int64(len(name)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.DecryptName(d, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncryptNameParallel(b *testing.B) {
	c := newCodec(b, false)
	d := dirID(5)
	b.SetBytes(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := c.EncryptName(d, "sixteen-bytes-nm"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func FuzzDecryptName(f *testing.F) {
	k, err := keywrap.NewKey(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		f.Fatal(err)
	}
	c, err := NewCodec(k, false)
	k.Close()
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	d := dirID(0x42)
	for _, n := range []string{"a", "hello.txt", strings.Repeat("x", 175), strings.Repeat("y", 200)} {
		b, full, _ := c.EncryptName(d, n)
		if full != "" {
			b = full
		}
		f.Add(b)
	}
	f.Add("")
	f.Add("encvol.longname.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, in string) {
		name, err := c.DecryptName(d, in)
		if err != nil {
			if Errno(err) == 0 {
				t.Fatalf("error without errno: %v", err)
			}
			return
		}
		// Anything that decrypts is the one encoding of its name.
		back, full, err := c.EncryptName(d, name)
		if err != nil {
			t.Fatalf("decrypted name %q does not encrypt: %v", name, err)
		}
		if full != "" {
			back = full
		}
		if back != in {
			t.Fatalf("%q decrypts to %q, which encrypts to %q", in, name, back)
		}
	})
}
