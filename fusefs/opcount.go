package fusefs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Every metadata row of the benchmark is explained by the round trips it
// costs, so the daemon counts the requests it gets, by opcode. One atomic
// add per request: cheap enough to stay on in production, where the same
// counts tell an operator what a slow workload asks of the mount.

// opNames names the FUSE opcodes (include/uapi/linux/fuse.h) a mount sees.
var opNames = map[uint32]string{
	1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK",
	8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK",
	14: "OPEN", 15: "READ", 16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC",
	21: "SETXATTR", 22: "GETXATTR", 23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH",
	27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR", 30: "FSYNCDIR", 34: "ACCESS",
	35: "CREATE", 43: "FALLOCATE", 44: "READDIRPLUS", 45: "RENAME2", 46: "LSEEK",
	47: "COPY_FILE_RANGE", 51: "TMPFILE", 52: "STATX",
}

// maxOpcode bounds the counted opcodes; anything above is counted as
// opOther.
const maxOpcode = 64

type opCounts struct {
	n     [maxOpcode]atomic.Uint64
	other atomic.Uint64
}

func (o *opCounts) count(op uint32) {
	if op < maxOpcode {
		o.n[op].Add(1)
	} else {
		o.other.Add(1)
	}
}

// snapshot returns the non-zero counts by opcode name.
func (o *opCounts) snapshot() map[string]uint64 {
	m := make(map[string]uint64)
	for op := range o.n {
		if v := o.n[op].Load(); v > 0 {
			name, ok := opNames[uint32(op)]
			if !ok {
				name = "OTHER"
			}
			m[name] += v
		}
	}
	if v := o.other.Load(); v > 0 {
		m["OTHER"] += v
	}
	return m
}

// The requests limitFS lets pass without a slot are counted here.

func (l *limitFS) Forget(nodeid, nlookup uint64) {
	l.ops.count(2)
	l.RawFileSystem.Forget(nodeid, nlookup)
}

func (l *limitFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	l.ops.count(in.Opcode)
	return l.RawFileSystem.Flush(c, in)
}

func (l *limitFS) ReleaseDir(in *fuse.ReleaseIn) {
	l.ops.count(in.Opcode)
	l.RawFileSystem.ReleaseDir(in)
}

// Ops returns how many requests of each kind the mount has served.
func (f *FS) Ops() map[string]uint64 { return f.ops.snapshot() }
