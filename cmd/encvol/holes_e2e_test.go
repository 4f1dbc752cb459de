package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/sector"
	"github.com/encvol/encvol/volume"
)

const hxSS = sector.DefaultSectorSize

// hxSparse is what the test writes into a sparse file through the mount:
// data in sector 0, a write past the end into sector 20, and a truncate up
// to sector 60, leaving holes at 1-19 and 21-59.
func hxSparse(t *testing.T, path string) []byte {
	t.Helper()
	size := int64(60*hxSS + 99)
	want := make([]byte, size)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []struct {
		off  int64
		data string
	}{{0, "head of the sparse file"}, {20*hxSS + 5, "written past the end"}} {
		if _, err := f.WriteAt([]byte(w.data), w.off); err != nil {
			t.Fatal(err)
		}
		// The kernel's write-back cache may otherwise send the
		// extension before the pages, making the written sectors
		// holes first (until the mount closes the file, which drops
		// them from the hole map), and the check of the allocated
		// size below would see them written late.
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		copy(want[w.off:], w.data)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return want
}

// hxZero zeroes stored sector i of a backing file, as someone who can write
// the backing directory can.
func hxZero(t *testing.T, file string, i int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, fxStored), sector.HeaderSize+i*fxStored); err != nil {
		t.Fatal(err)
	}
}

// hxAllocated is how many bytes the file system allocates for file.
func hxAllocated(t *testing.T, file string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// hxMount mounts backing on a mountpoint named after it and suffix, and
// returns it with the path of the mount's log.
func hxMount(t *testing.T, e *gxEnv, backing, suffix string) (mnt, logPath string) {
	t.Helper()
	mnt = backing + "." + suffix
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gxUnmount(t, mnt) })
	e.must("mount", backing, mnt)
	mp, err := volume.CanonicalMountpoint(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return mnt, volume.LogPath(mp)
}

func hxFsck(t *testing.T, e *gxEnv, backing string) (int, string) {
	t.Helper()
	r := e.runWith(e.cfg, "fsck", backing, "--json")
	return r.code, strings.Join(fxFindings(fxReport(t, r)), "\n")
}

// TestZeroedSectorEndToEnd: a new volume is format version 5. A zeroed
// inner sector of a dense file is EIO through the mount (with a log line)
// and a zeroed-sector error in fsck; a sparse file made by a write past
// its end and a truncate up reads zeros in its holes after a remount,
// stays sparse on the backing, passes fsck, and keeps all that in a copy;
// a zeroed sealed sector of the sparse file is detected too.
func TestZeroedSectorEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/holes")
	backing := e.newVolume("vol", key)
	maHeaderVersion(t, backing, "v5")
	mnt := e.mount(e.cfg, backing)
	dense := gxRandom(t, 10*hxSS+77)
	if err := os.WriteFile(filepath.Join(mnt, "dense"), dense, 0o600); err != nil {
		t.Fatal(err)
	}
	sparse := hxSparse(t, filepath.Join(mnt, "sparse"))
	// A large sparse file, which a copy writes in parallel chunks.
	big := int64(40 << 20)
	bigData := gxRandom(t, 3*hxSS)
	bf, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bf.WriteAt(bigData, 30<<20); err != nil {
		t.Fatal(err)
	}
	if err := bf.Truncate(big); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	sparseFile := fxBackingFile(t, backing, int64(len(sparse)))
	mnt, _ = hxMount(t, e, backing, "mnt2")
	if got, err := os.ReadFile(filepath.Join(mnt, "sparse")); err != nil || !bytes.Equal(got, sparse) {
		t.Errorf("sparse file after a remount: %d bytes, %v", len(got), err)
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)
	// Three stored sectors hold data (0, 20 and the last); allow a few
	// blocks of rounding.
	if got, most := hxAllocated(t, sparseFile), int64(8*fxStored); got > most {
		t.Errorf("sparse backing file allocates %d bytes, want at most %d", got, most)
	}
	if code, got := hxFsck(t, e, backing); code != 0 || got != "" {
		t.Errorf("fsck of the sparse volume: exit %d, findings:\n%s", code, got)
	}

	// A copy is of the current format, and its files keep their holes
	// and their hole maps.
	dst := filepath.Join(e.dir, "copy")
	e.must("copy", backing, "--backing", dst, "--key", key)
	maHeaderVersion(t, dst, "v5")
	if code, got := hxFsck(t, e, dst); code != 0 || got != "" {
		t.Errorf("fsck of the copy: exit %d, findings:\n%s", code, got)
	}
	copySparse := fxBackingFile(t, dst, int64(len(sparse)))
	copyBig := fxBackingFile(t, dst, big)
	if got, most := hxAllocated(t, copySparse)+hxAllocated(t, copyBig), int64(20*fxStored); got > most {
		t.Errorf("the copy's sparse backing files allocate %d bytes, want at most %d", got, most)
	}
	// The sealed data sectors of the copied big file are not in its
	// hole map: zeroing one is detected.
	hxZero(t, copyBig, (30<<20)/hxSS+1)
	if code, got := hxFsck(t, e, dst); code != 4 || got != "error zeroed-sector /big sectors 7681-7681" {
		t.Errorf("fsck of the copy with a zeroed sector: exit %d, findings:\n%s", code, got)
	}

	// Zero an inner sector of the dense file and a sealed one of the
	// sparse file.
	hxZero(t, fxBackingFile(t, backing, int64(len(dense))), 4)
	hxZero(t, sparseFile, 20)
	mnt, logPath := hxMount(t, e, backing, "mnt3")
	if b, err := os.ReadFile(filepath.Join(mnt, "dense")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the dense file with a zeroed sector: %d bytes, %v; want EIO", len(b), err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "sparse")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the sparse file with a zeroed sealed sector: %d bytes, %v; want EIO", len(b), err)
	}
	hxReadHead(t, filepath.Join(mnt, "dense"), dense[:4*hxSS], "the sectors before the zeroed one")
	hxZeroedFound(t, e, backing, mnt, logPath, "error zeroed-sector /dense sectors 4-4\nerror zeroed-sector /sparse sectors 20-20")
}

// hxReadHead fails the test unless path starts with want.
func hxReadHead(t *testing.T, path string, want []byte, what string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, len(want))
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, want) {
		t.Errorf("%s: %v", what, err)
	}
}

// hxZeroedFound waits for the mount's log line of a failed sector, unmounts,
// and fails the test unless fsck exits 4 with exactly the findings want.
func hxZeroedFound(t *testing.T, e *gxEnv, backing, mnt, logPath, want string) {
	t.Helper()
	maWaitLog(t, logPath, "sector failed authentication")
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)
	if code, got := hxFsck(t, e, backing); code != 4 || got != want {
		t.Errorf("fsck of the zeroed volume: exit %d, findings:\n%s\nwant:\n%s", code, got, want)
	}
}

// hxMapExtents is how many extents the hole map of a backing file holds
// (0 without a map), from the size of its sealed attribute.
func hxMapExtents(t *testing.T, file string) int {
	t.Helper()
	n, err := unix.Getxattr(file, sector.HolesXattr, nil)
	if errors.Is(err, unix.ENODATA) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return (n - sector.Overhead - 3) / 16
}

// TestZeroedFormerHoleEndToEnd: a sector written where a file had a hole
// leaves the file's hole map at fsync and when the mount closes the file,
// so zeroing it in the backing file is EIO through the mount and a
// zeroed-sector error in fsck, like any sealed sector. That holds too for
// a file whose size was set before its pages were written (ftruncate, or
// the kernel's write-back sending the size first), which makes every
// sector a hole first.
func TestZeroedFormerHoleEndToEnd(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/former-holes")
	backing := e.newVolume("vol", key)
	mnt := e.mount(e.cfg, backing)

	formerSize := int64(10*hxSS + 4)
	former := make([]byte, formerSize)
	f, err := os.OpenFile(filepath.Join(mnt, "former"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		off  int64
		data []byte
	}{{0, []byte("head")}, {10 * hxSS, []byte("tail")}, {5 * hxSS, gxRandom(t, hxSS)}} {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
		// In this order: the first two leave holes 1-9, the third fills 5.
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		copy(former[w.off:], w.data)
	}
	formerFile := fxBackingFile(t, backing, formerSize)
	if got := hxMapExtents(t, formerFile); got != 2 {
		t.Errorf("after fsync the hole map of former holds %d extents, want 2 ([1,5) and [6,10))", got)
	}
	f.Close()

	announcedSize := int64(12 * hxSS)
	announced := gxRandom(t, int(announcedSize))
	a, err := os.OpenFile(filepath.Join(mnt, "announced"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Truncate(announcedSize); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(announced, 0); err != nil {
		t.Fatal(err)
	}
	a.Close()
	gxUnmount(t, mnt)
	waitUnlocked(t, backing)

	announcedFile := fxBackingFile(t, backing, announcedSize)
	if got := hxMapExtents(t, announcedFile); got != 0 {
		t.Errorf("after the unmount the written-over file keeps a hole map of %d extents, want none", got)
	}
	if code, got := hxFsck(t, e, backing); code != 0 || got != "" {
		t.Errorf("fsck before tampering: exit %d, findings:\n%s", code, got)
	}
	hxZero(t, formerFile, 5)
	hxZero(t, announcedFile, 3)
	mnt, logPath := hxMount(t, e, backing, "mnt2")
	if b, err := os.ReadFile(filepath.Join(mnt, "former")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a zeroed former hole: %d bytes (zeros where data was: %v), %v; want EIO",
			len(b), len(b) == len(former) && !bytes.Equal(b, former), err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "announced")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a zeroed sector of a file sized before it was written: %d bytes, %v; want EIO", len(b), err)
	}
	// The holes that remain still read as zeros.
	hxReadHead(t, filepath.Join(mnt, "former"), former[:5*hxSS], "former's sectors 0-4 (data and holes)")
	hxZeroedFound(t, e, backing, mnt, logPath, "error zeroed-sector /announced sectors 3-3\nerror zeroed-sector /former sectors 5-5")
}
