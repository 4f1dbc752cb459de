package fusefs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The node's part of the space reservation (space.go): it knows which
// bytes of a file are stored, so an overwrite of stored data reserves
// nothing, and it sees how many blocks a write-back really took.

// careful returns the space tracker when the mount is careful, else nil.
func (f *FS) careful() *space {
	if sp := f.space.Load(); sp != nil && sp.careful.Load() {
		return sp
	}
	return nil
}

// admitWrite answers the GETATTR that a write(2) to the regular file n
// sends before it copies into the page cache: ENOSPC when what it adds to
// the backing does not fit. Other callers (stat, reads) pass.
func (n *Node) admitWrite(ctx context.Context, sp *space) syscall.Errno {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return 0
	}
	tid := c.Caller.Pid
	op := inspectCaller(tid)
	if !op.known && !sp.onWritePath(tid) {
		op = callerOp{known: true, off: -1} // stat of a caller we may not inspect
	}
	if !op.write {
		return 0
	}
	grow := n.growth(op)
	if grow == 0 {
		return 0
	}
	if !sp.admitCached(sp.need(grow)) {
		n.fsys.noteFull("write", "", errNoRoom)
		return syscall.ENOSPC
	}
	return 0
}

// errNoRoom is what the log says of a write the reservation refused.
var errNoRoom = errors.New("not enough backing space left for the data of this write(2)")

// growth is how many plaintext bytes the write op may add to what the
// backing stores: none for an overwrite of stored data without holes,
// else what reaches past the stored end, else all of it.
func (n *Node) growth(op callerOp) int64 {
	size := op.size
	if size < 0 {
		return spaceUnknownWrite
	}
	if op.off < 0 || size == 0 {
		return size
	}
	n.content.RLock()
	defer n.content.RUnlock()
	if n.of == nil {
		return size
	}
	grow, err := n.of.f.Growth(op.off, size)
	if err != nil {
		return size
	}
	return grow
}

// blocksOf is the backing allocation of fd in bytes, -1 when unknown.
func blocksOf(fd int) int64 {
	var st unix.Statx_t
	if statxFd(fd, &st) != nil {
		return -1
	}
	return int64(st.Blocks) * 512
}
