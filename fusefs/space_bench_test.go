package fusefs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// BenchmarkRoomyAccounting is what the space reservation adds to a write
// request of a roomy mount (space.go): the careful check in the node, the
// byte count in spaceFS, and the attribute check of a reply. Compare with
// the few microseconds of a FUSE round trip.
func BenchmarkRoomyAccounting(b *testing.B) {
	dir := b.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	f := &FS{}
	sp := newSpace(fd, 4096, 0, zerolog.Nop(), func() {}, func() {})
	defer sp.close()
	if sp.careful.Load() {
		b.Fatalf("the temporary directory's file system is nearly full")
	}
	f.space.Store(sp)
	var out fuse.AttrOut
	out.Mode = unix.S_IFREG | 0o644
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if f.careful() != nil {
				b.Fatal("careful")
			}
			f.space.Load().wrote(4096)
			f.space.Load().expireAttr(&out.Attr, &out.AttrValid, &out.AttrValidNsec, false)
		}
	})
}

// BenchmarkLimitEnterExit is what the request bound (limit.go) adds to
// every request.
func BenchmarkLimitEnterExit(b *testing.B) {
	l := newLimitFS(nil, DefaultMaxRequests, new(opCounts))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !l.enter(nil, &fuse.InHeader{}) {
				b.Fatal("refused")
			}
			l.exit()
		}
	})
}
