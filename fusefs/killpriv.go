package fusefs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Why the file system clears set-user-ID bits itself: unless the daemon
// takes that job (FUSE_HANDLE_KILLPRIV_V2), the kernel asks for the
// security.capability attribute before every write(2) to decide whether
// privileges must be dropped. That is one GETXATTR round trip per write
// even when the writeback cache absorbs the data, and it dominated small
// writes (one round trip per 512-byte dd block). With the capability the
// kernel marks the superblock SB_NOSEC, remembers per inode that there is
// nothing to drop, and leaves the clearing to us: it flags WRITE
// (FUSE_WRITE_KILL_SUIDGID), OPEN with O_TRUNC (FUSE_OPEN_KILL_SUIDGID) and
// SETATTR for truncate/chown (FATTR_KILL_SUIDGID) when the caller lacks
// CAP_FSETID. No security.capability attribute can exist on a volume (only
// user.* attributes are stored), so the mode bits are all there is to clear.

// killPrivFS passes every request to the node file system and acts on the
// kill flags of WRITE and OPEN, which the node API does not show.
type killPrivFS struct {
	fuse.RawFileSystem
	server atomic.Pointer[fuse.Server]
}

func (k *killPrivFS) Init(s *fuse.Server) {
	k.server.Store(s)
	k.RawFileSystem.Init(s)
}

func (k *killPrivFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.kill(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Write(cancel, in, data)
}

func (k *killPrivFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.kill(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Writev(cancel, in, data)
}

// Open clears the bits before an unprivileged O_TRUNC open, as the kernel's
// own truncate path would; a failure to clear fails the open.
func (k *killPrivFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Mode&fuse.OPEN_KILL_SUIDGID != 0 && in.Flags&unix.O_TRUNC != 0 {
		if st := k.kill(cancel, &in.InHeader); !st.Ok() {
			return st
		}
	}
	return k.RawFileSystem.Open(cancel, in, out)
}

// kill runs a SETATTR carrying only FATTR_KILL_SUIDGID through the node
// file system (Node.Setattr does the work), then drops the kernel's cached
// attributes of the inode: the kernel does not expect the mode to change
// under a WRITE. The invalidation is done before the request is answered,
// so a stat(2) after the write(2) or open(2) returns sees the cleared bits.
// That cannot deadlock: an invalidation of attributes only (offset -1)
// touches no page and takes no lock the kernel holds across this request.
func (k *killPrivFS) kill(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: *h, Valid: fuse.FATTR_KILL_SUIDGID}}
	var out fuse.AttrOut
	st := k.RawFileSystem.SetAttr(cancel, &in, &out)
	if st.Ok() {
		if srv := k.server.Load(); srv != nil {
			srv.InodeNotify(h.NodeId, -1, 0)
		}
	}
	return st
}

// killSUIDLocked clears set-user-ID, and set-group-ID of group-executable
// files, like the kernel does for an unprivileged write, truncate or chown.
// It reaches the backing entry through fd when open, else through path.
// Directories and symlinks are left alone. Caller holds n.content.
func (n *Node) killSUIDLocked(fd int, path string) error {
	if done, err := n.killSUIDMeta(fd, path); done || err != nil {
		return err // the mode lives in metaXattr (meta.go)
	}
	var st unix.Statx_t
	err := statxFdOrPath(fd, path, &st)
	if err != nil {
		return err
	}
	mode := uint32(st.Mode)
	if t := mode & unix.S_IFMT; t == unix.S_IFDIR || t == unix.S_IFLNK {
		return nil
	}
	keep := mode &^ unix.S_ISUID
	if mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		keep &^= unix.S_ISGID
	}
	if keep == mode {
		return nil
	}
	return chmodEntry(fd, unix.AT_FDCWD, path, keep&07777)
}
