package volume

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// BenchmarkFsck checks a volume of 16 files of 16 MiB, written straight
// into the backing directory (no mount), on one worker per CPU; compare
// its MB/s with sector's BenchmarkRawGCMOpen4KParallel. scripts/bench.sh
// measures the real command on 1 GiB.
func BenchmarkFsck(b *testing.B) {
	const files, size = 16, 16 << 20
	v := fusefstest.NewVolume(b, fusefstest.Options{})
	keys := v.Keys(b)
	defer keys.Content.Close()
	defer keys.Names.Close()
	fd, err := unix.Open(v.Backing, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		b.Fatal(err)
	}
	id, err := names.ReadDirID(fd)
	unix.Close(fd)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 31)
	}
	for i := range files {
		bname, _, err := keys.Names.EncryptName(id, "f"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(v.Backing, bname), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		sf, err := sector.NewFile(f, v.SectorSize)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += int64(len(data)) {
			if _, err := sf.WriteAt(keys.Content, data, off); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
	src, err := NewBackingSource(v.Backing, keys)
	if err != nil {
		b.Fatal(err)
	}
	h := &keywrap.Header{Version: testHeaderVersion(v), VolumeID: "vol-bench", NameMode: NameModeEncrypted}
	b.SetBytes(files * size)
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Fsck(context.Background(), src, h, FsckOptions{})
		if err != nil || rep.ExitCode != FsckClean {
			b.Fatalf("fsck: %v, exit %d", err, rep.ExitCode)
		}
	}
}
