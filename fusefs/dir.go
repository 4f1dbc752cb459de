package fusefs

import (
	"context"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
)

// fixMode sets the permission bits the caller asked for when the daemon's
// own umask took some away (the kernel has already applied the caller's).
func fixMode(fd int, dirfd int, name string, st *unix.Statx_t, mode uint32) {
	want := mode & 07777
	if uint32(st.Mode)&07777 == want {
		return
	}
	if err := chmodEntry(fd, dirfd, name, want); err == nil {
		st.Mode = uint16(uint32(st.Mode)&unix.S_IFMT | want)
	}
}

// Create makes and opens a regular file.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	c, errno := n.child(ctx, "create", name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer c.done()
	var pre unix.Stat_t
	existed := unix.Fstatat(c.d.fd, c.bname, &pre, unix.AT_SYMLINK_NOFOLLOW) == nil
	if existed && flags&unix.O_EXCL != 0 {
		return nil, nil, 0, syscall.EEXIST
	}
	newLong, err := c.writeLong()
	if err != nil {
		return nil, nil, 0, n.fsys.errno(err, "create", name)
	}
	// O_NONBLOCK means nothing to a regular file, but os.NewFile would
	// then try to add the descriptor to the poller (a failing epoll_ctl per
	// file).
	oflags := int(flags)&^(unix.O_ACCMODE|unix.O_APPEND|unix.O_TRUNC|unix.O_DIRECT|unix.O_SYNC|unix.O_DSYNC|unix.O_NONBLOCK|fuse.FMODE_EXEC) |
		unix.O_RDWR | unix.O_CREAT | unix.O_CLOEXEC | unix.O_NOFOLLOW
	backingMode := mode & 07777
	if n.fsys.metaEnabled() {
		backingMode = backingFileMode
	}
	fd, err := openatNoAtime(c.d.fd, c.bname, oflags, backingMode, n.fsys.fileNoAtime)
	if err != nil {
		if newLong {
			c.dropLong()
		}
		return nil, nil, 0, n.fsys.errno(err, "create", name)
	}
	var st unix.Statx_t
	if err := statxFd(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, n.fsys.errno(err, "create", name)
	}
	var fresh newEntry
	if !existed {
		// The kernel holds the parent directory locked during create, so
		// no lookup through the mount sees the file before its mode and
		// owner are stored.
		o, err := n.newOwner(ctx, c.k, &c.d)
		m := meta{mode: mode & 07777, uid: o.uid, gid: o.gid}
		if err == nil {
			m, err = bound(c.k.Names, m, c.place())
		}
		if err == nil {
			fresh, err = n.initMeta(c.k, fd, &st, m, nil)
		}
		if err != nil {
			unix.Close(fd)
			_ = unix.Unlinkat(c.d.fd, c.bname, 0)
			if newLong {
				c.dropLong()
			}
			return nil, nil, 0, n.fsys.errno(err, "create", name)
		}
	}
	ch, errno := n.newChildMeta(ctx, c, &st, out, fresh.meta, nil)
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	cn := ch.Operations().(*Node)
	// The path names the file in the sector layer's errors and log lines.
	h, errno := cn.attach(c.k, c.d.path()+"/"+c.bname, fd, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if fresh.hdr != nil {
		cn.freshBacking(fresh.hdr)
	}
	if flags&unix.O_TRUNC != 0 && st.Size != 0 {
		// Existing file opened with O_CREAT|O_TRUNC: the new size shows in
		// the next getattr.
		out.Attr.Size = 0
	}
	var fuseFlags uint32
	if n.fsys.careful() != nil {
		// Nearly full backing (space.go): write(2) must meet the daemon.
		h.direct = true
		fuseFlags |= fuse.FOPEN_DIRECT_IO
	}
	return ch, h, fuseFlags, 0
}

// Mkdir makes a directory together with its own name-encryption ID.
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.child(ctx, "mkdir", name)
	if errno != 0 {
		return nil, errno
	}
	defer c.done()
	newLong, err := c.writeLong()
	if err != nil {
		return nil, n.fsys.errno(err, "mkdir", name)
	}
	fail := func(err error) (*fs.Inode, syscall.Errno) {
		_ = unix.Unlinkat(c.d.fd, c.bname, unix.AT_REMOVEDIR)
		if newLong {
			c.dropLong()
		}
		return nil, n.fsys.errno(err, "mkdir", name)
	}
	// Owner rwx: the ID file goes in first, and 0700 is also the
	// canonical backing mode of a directory whose mode is stored in
	// metaXattr.
	if err := unix.Mkdirat(c.d.fd, c.bname, backingDirMode); err != nil {
		if newLong {
			c.dropLong()
		}
		return nil, n.fsys.errno(err, "mkdir", name)
	}
	cfd, err := unix.Openat(c.d.fd, c.bname, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(cfd)
	id, err := names.CreateDirID(cfd)
	if err != nil {
		unix.Unlinkat(cfd, names.DirIDFile, 0)
		return fail(err)
	}
	var st unix.Statx_t
	if err := statxFd(cfd, &st); err != nil {
		unix.Unlinkat(cfd, names.DirIDFile, 0)
		return fail(err)
	}
	o, err := n.newOwner(ctx, c.k, &c.d)
	if err != nil {
		unix.Unlinkat(cfd, names.DirIDFile, 0)
		return fail(err)
	}
	dmode := mode & 07777
	if o.sgid {
		// A local file system passes set-group-ID on to subdirectories.
		dmode |= unix.S_ISGID
	}
	dm, err := bound(c.k.Names, meta{mode: dmode, uid: o.uid, gid: o.gid}, c.place())
	if err != nil {
		unix.Unlinkat(cfd, names.DirIDFile, 0)
		return fail(err)
	}
	fresh, err := n.initMeta(c.k, cfd, &st, dm, id)
	if err != nil {
		unix.Unlinkat(cfd, names.DirIDFile, 0)
		return fail(err)
	}
	if err := statxFd(cfd, &st); err != nil {
		unix.Unlinkat(cfd, names.DirIDFile, 0)
		return fail(err)
	}
	ch, errno := n.newChildMeta(ctx, c, &st, out, fresh.meta, nil)
	if errno != 0 {
		return nil, errno
	}
	ch.Operations().(*Node).dirID.Store(&id)
	return ch, 0
}

// Mknod makes FIFOs, sockets, device nodes and empty regular files; they
// are passed through as they are (special files carry no content).
func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.child(ctx, "mknod", name)
	if errno != 0 {
		return nil, errno
	}
	defer c.done()
	newLong, err := c.writeLong()
	if err != nil {
		return nil, n.fsys.errno(err, "mknod", name)
	}
	o, err := n.newOwner(ctx, c.k, &c.d)
	if err != nil {
		if newLong {
			c.dropLong()
		}
		return nil, n.fsys.errno(err, "mknod", name)
	}
	if typ := mode & unix.S_IFMT; typ == unix.S_IFREG || typ == 0 {
		// A regular file keeps its mode and owner like one made by create.
		if errno := n.mknodRegular(c, mode, o); errno != 0 {
			if newLong {
				c.dropLong()
			}
			return nil, errno
		}
	} else if err := unix.Mknodat(c.d.fd, c.bname, mode, int(dev)); err != nil {
		if newLong {
			c.dropLong()
		}
		return nil, n.fsys.errno(err, "mknod", name)
	} else if err := n.setOwner(&c.d, c.bname, o); err != nil {
		n.fsys.log.Warn().Str("op", "mknod").Err(err).Msg("cannot give the new node the caller's owner")
	}
	var st unix.Statx_t
	if err := statxAt(c.d.fd, c.bname, &st); err != nil {
		unix.Unlinkat(c.d.fd, c.bname, 0)
		c.dropLong()
		return nil, n.fsys.errno(err, "mknod", name)
	}
	if !hasMeta(uint32(st.Mode)) {
		fixMode(-1, c.d.fd, c.bname, &st, mode)
	}
	return n.newChild(ctx, c, &st, out)
}

// mknodRegular makes the empty regular file of a mknod and stores its
// mode and owner.
func (n *Node) mknodRegular(c *childOp, mode uint32, o owner) syscall.Errno {
	// Read-write: a volume with authenticated metadata writes the file
	// header at once.
	fd, err := unix.Openat(c.d.fd, c.bname, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, backingFileMode)
	if err != nil {
		return n.fsys.errno(err, "mknod", c.d.path())
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	err = statxFd(fd, &st)
	var m meta
	if err == nil {
		m, err = bound(c.k.Names, meta{mode: mode & 07777, uid: o.uid, gid: o.gid}, c.place())
	}
	if err == nil {
		_, err = n.initMeta(c.k, fd, &st, m, nil)
	}
	if err != nil {
		_ = unix.Unlinkat(c.d.fd, c.bname, 0)
		return n.fsys.errno(err, "mknod", c.d.path())
	}
	return 0
}

// Symlink stores the target encrypted (or as it is on plaintext-name
// volumes); st_size reports the plaintext target length.
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.child(ctx, "symlink", name)
	if errno != 0 {
		return nil, errno
	}
	defer c.done()
	enc, err := c.k.Names.EncryptSymlink(c.d.id, name, target)
	if err != nil {
		return nil, n.fsys.errno(err, "symlink", name)
	}
	stored, err := n.fsys.storeLink(enc)
	if err != nil {
		return nil, n.fsys.errno(err, "symlink", name)
	}
	newLong, err := c.writeLong()
	if err != nil {
		n.fsys.dropLink(stored)
		return nil, n.fsys.errno(err, "symlink", name)
	}
	if err := unix.Symlinkat(stored, c.d.fd, c.bname); err != nil {
		if newLong {
			c.dropLong()
		}
		n.fsys.dropLink(stored)
		return nil, n.fsys.errno(err, "symlink", name)
	}
	o, err := n.newOwner(ctx, c.k, &c.d)
	if err != nil {
		unix.Unlinkat(c.d.fd, c.bname, 0)
		if newLong {
			c.dropLong()
		}
		n.fsys.dropLink(stored)
		return nil, n.fsys.errno(err, "symlink", name)
	}
	if err := n.setOwner(&c.d, c.bname, o); err != nil {
		n.fsys.log.Warn().Str("op", "symlink").Err(err).Msg("cannot give the new symlink the caller's owner")
	}
	var st unix.Statx_t
	if err := statxAt(c.d.fd, c.bname, &st); err != nil {
		unix.Unlinkat(c.d.fd, c.bname, 0)
		c.dropLong()
		return nil, n.fsys.errno(err, "symlink", name)
	}
	ch, errno := n.newChild(ctx, c, &st, out)
	if errno != 0 {
		return nil, errno
	}
	out.Attr.Size = uint64(len(target))
	return ch, 0
}

// Readlink decrypts the stored target.
func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	k, rel, errno := n.fsys.keys(ctx, "readlink")
	if errno != 0 {
		return nil, errno
	}
	defer rel()
	p, le, prel, err := n.pathEntry(k)
	if err != nil {
		return nil, n.fsys.errno(err, "readlink", "")
	}
	defer prel()
	t, err := readlinkAt(unix.AT_FDCWD, p)
	if err != nil {
		return nil, n.fsys.errno(err, "readlink", p)
	}
	plain, err := n.fsys.decodeLink(k, t, le)
	if err != nil {
		return nil, n.fsys.authFail("readlink", p, err)
	}
	return []byte(plain), 0
}

// Link adds a hard link. The node is found again by its backing inode, so
// both names share one Node.
func (n *Node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, ok := target.(*Node)
	if !ok || tn.fsys != n.fsys {
		return nil, syscall.EXDEV
	}
	c, errno := n.child(ctx, "link", name)
	if errno != 0 {
		return nil, errno
	}
	defer c.done()
	if tn.StableAttr().Mode == syscall.S_IFLNK && c.k.Names.BindLinks() {
		return n.linkSymlink(ctx, c, tn, out)
	}
	tp, te, trel, err := tn.pathEntry(c.k)
	if err != nil {
		return nil, n.fsys.errno(err, "link", name)
	}
	defer trel()
	rebind, errno := tn.unbindForLink(c.k, tp, te)
	if errno != 0 {
		return nil, errno
	}
	newLong, err := c.writeLong()
	if err != nil {
		rebind()
		return nil, n.fsys.errno(err, "link", name)
	}
	if err := unix.Linkat(unix.AT_FDCWD, tp, c.d.fd, c.bname, 0); err != nil {
		rebind()
		if newLong {
			c.dropLong()
		}
		return nil, n.fsys.errno(err, "link", name)
	}
	var st unix.Statx_t
	if err := statxAt(c.d.fd, c.bname, &st); err != nil {
		return nil, n.fsys.errno(err, "link", name)
	}
	return n.newChild(ctx, c, &st, out)
}

// Unlink removes a name (and its long-name side file).
func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	c, errno := n.child(ctx, "unlink", name)
	if errno != 0 {
		return errno
	}
	defer c.done()
	longLink := longLinkOf(n.GetChild(name), c.d.fd, c.bname)
	unpin := n.fsys.pinChild(n, name, c.d.fd, c.bname)
	err := unix.Unlinkat(c.d.fd, c.bname, 0)
	unpin()
	if err != nil {
		return n.fsys.errno(err, "unlink", name)
	}
	c.dropLong()
	n.fsys.dropLink(longLink)
	return 0
}

// listReserved reads the backing directory dirfd and reports whether it
// holds anything but reserved names, and which reserved names it holds.
func listReserved(dirfd int, isReserved func(string) bool) (onlyReserved bool, reserved []string, err error) {
	dfd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	ents, err := f.Readdirnames(-1)
	if err != nil {
		return false, nil, err
	}
	for _, e := range ents {
		if !isReserved(e) {
			return false, nil, nil
		}
		reserved = append(reserved, e)
	}
	return true, reserved, nil
}

// readRaw and restoreRaw keep the exact bytes of a directory's ID file so
// a failed removal can put it back unchanged (the names inside the
// directory stay readable).
func readRaw(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	buf := make([]byte, 0, 64)
	tmp := make([]byte, 64)
	for {
		m, err := f.Read(tmp)
		buf = append(buf, tmp[:m]...)
		if err != nil || m == 0 {
			break
		}
		if len(buf) > 1<<16 {
			break
		}
	}
	return buf, nil
}

func restoreRaw(dirfd int, name string, data []byte) error {
	tmp, err := keywrap.TempName()
	if err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, backingFileMode)
	if err != nil {
		return err
	}
	if _, err := unix.Write(fd, data); err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return err
	}
	unix.Close(fd)
	if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
		return err
	}
	return unix.Fsync(dirfd)
}

// emptyDirForRemoval prepares the backing directory name (in dirfd) for
// rmdir or for being replaced by rename: it must hold nothing but reserved
// names, which are then removed. The caller must call finish with whether
// the removal succeeded; on failure finish puts the ID file back.
func emptyDirForRemoval(dirfd int, name string, isReserved func(string) bool) (finish func(removed bool), err error) {
	cfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	only, reserved, err := listReserved(cfd, isReserved)
	if err != nil {
		unix.Close(cfd)
		return nil, err
	}
	if !only {
		unix.Close(cfd)
		return nil, syscall.ENOTEMPTY
	}
	idRaw, idErr := readRaw(cfd, names.DirIDFile)
	for _, r := range reserved {
		if r == names.DirIDFile {
			continue
		}
		_ = unix.Unlinkat(cfd, r, 0)
	}
	if idErr == nil {
		if err := unix.Unlinkat(cfd, names.DirIDFile, 0); err != nil {
			unix.Close(cfd)
			return nil, err
		}
	}
	return func(removed bool) {
		if !removed && idErr == nil {
			_ = restoreRaw(cfd, names.DirIDFile, idRaw)
		}
		unix.Close(cfd)
	}, nil
}

// Rmdir removes an empty directory: its ID file goes first and comes back
// if the backing rmdir fails (for example because a file appeared).
func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	c, errno := n.child(ctx, "rmdir", name)
	if errno != 0 {
		return errno
	}
	defer c.done()
	var st unix.Stat_t
	if err := unix.Fstatat(c.d.fd, c.bname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return n.fsys.errno(err, "rmdir", name)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return syscall.ENOTDIR
	}
	finish, err := emptyDirForRemoval(c.d.fd, c.bname, c.k.Names.IsReserved)
	if err != nil {
		return n.fsys.errno(err, "rmdir", name)
	}
	if err := unix.Unlinkat(c.d.fd, c.bname, unix.AT_REMOVEDIR); err != nil {
		finish(false)
		return n.fsys.errno(err, "rmdir", name)
	}
	finish(true)
	c.dropLong()
	n.fsys.dropDir(n, name)
	return 0
}

// Rename moves name to newName in newParent, within or across directories,
// over an existing target, and honours RENAME_NOREPLACE and
// RENAME_EXCHANGE. Long-name side files follow their names.
func (n *Node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok || np.fsys != n.fsys {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	if len(newName) > nameMax {
		return syscall.ENAMETOOLONG
	}
	src, errno := n.child(ctx, "rename", name)
	if errno != 0 {
		return errno
	}
	defer src.done()
	// The destination reuses the source's key acquisition: acquiring twice
	// could deadlock against a closing gate.
	dst := &childOp{k: src.k, name: newName, d: dirRef{fsys: n.fsys, fd: -1}}
	defer dst.done()
	d, err := np.openDir(src.k)
	if err != nil {
		return n.fsys.errno(err, "rename", newName)
	}
	dst.d = d
	b, long, err := src.k.Names.EncryptName(d.id, newName)
	if err != nil {
		return np.nameErr(err, "rename", newName)
	}
	dst.bname, dst.long = b, long

	var sst, dstSt unix.Stat_t
	if err := unix.Fstatat(src.d.fd, src.bname, &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return n.fsys.errno(err, "rename", name)
	}
	dstExists := unix.Fstatat(dst.d.fd, dst.bname, &dstSt, unix.AT_SYMLINK_NOFOLLOW) == nil
	if dstExists && sst.Ino == dstSt.Ino && sst.Dev == dstSt.Dev {
		// Two names of one inode (or the same name): POSIX says do nothing.
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		return 0
	}
	if flags&unix.RENAME_EXCHANGE != 0 && !dstExists {
		return syscall.ENOENT
	}
	if flags&unix.RENAME_NOREPLACE != 0 && dstExists {
		return syscall.EEXIST
	}
	bind := src.k.Names.BindLinks()
	if bind && flags&unix.RENAME_EXCHANGE == 0 && sst.Mode&unix.S_IFMT == unix.S_IFLNK {
		return n.renameLink(src, dst, np, flags, dstExists)
	}
	ms, errno := n.prepareMoves(src, dst, np, flags, &sst, &dstSt)
	if errno != 0 {
		return errno
	}
	renamed := false
	defer func() { ms.release(renamed) }()

	newLong, err := dst.writeLong()
	if err != nil {
		return n.fsys.errno(err, "rename", newName)
	}
	if flags&unix.RENAME_EXCHANGE != 0 && src.long != "" {
		// After the exchange the source name holds the other file; its side
		// file must still be there (it is, the source existed).
		if _, err := src.writeLong(); err != nil {
			return n.fsys.errno(err, "rename", name)
		}
	}
	finish := func(bool) {}
	if dstExists && flags&unix.RENAME_EXCHANGE == 0 &&
		dstSt.Mode&unix.S_IFMT == unix.S_IFDIR && sst.Mode&unix.S_IFMT == unix.S_IFDIR {
		f, err := emptyDirForRemoval(dst.d.fd, dst.bname, src.k.Names.IsReserved)
		if err != nil {
			if newLong {
				dst.dropLong()
			}
			return n.fsys.errno(err, "rename", newName)
		}
		finish = f
	}
	unpin := func() {}
	replacedLink := ""
	if dstExists && flags&unix.RENAME_EXCHANGE == 0 {
		// The file replaced loses its name; the kernel may still have it open.
		unpin = n.fsys.pinChild(np, newName, dst.d.fd, dst.bname)
		replacedLink = longLinkOf(np.GetChild(newName), dst.d.fd, dst.bname)
	}
	var moved []*fs.Inode
	if np != n {
		if sst.Mode&unix.S_IFMT == unix.S_IFDIR {
			moved = append(moved, n.GetChild(name))
		}
		if flags&unix.RENAME_EXCHANGE != 0 && dstSt.Mode&unix.S_IFMT == unix.S_IFDIR {
			moved = append(moved, np.GetChild(newName))
		}
	}
	if flags != 0 {
		err = unix.Renameat2(src.d.fd, src.bname, dst.d.fd, dst.bname, uint(flags))
	} else {
		err = unix.Renameat(src.d.fd, src.bname, dst.d.fd, dst.bname)
	}
	unpin()
	renamed = err == nil
	finish(err == nil)
	if err == nil && dstExists && flags&unix.RENAME_EXCHANGE == 0 && dstSt.Mode&unix.S_IFMT == unix.S_IFDIR {
		n.fsys.dropDir(np, newName)
	}
	if err != nil {
		if newLong {
			dst.dropLong()
		}
		return n.fsys.errno(err, "rename", name)
	}
	if flags&unix.RENAME_EXCHANGE == 0 && src.long != "" {
		src.dropLong()
	}
	n.fsys.dropLink(replacedLink)
	n.fsys.dropListings(moved)
	if bind && flags&unix.RENAME_EXCHANGE != 0 {
		// The exchange is done: the kernel must learn of it whatever
		// follows. A symlink left unsealed reads as EIO (logged) and fsck
		// reports it.
		n.resealExchanged(src, dst, np, &sst, &dstSt)
	}
	return 0
}

// resealExchanged seals again the targets of the symlinks among the two
// entries RENAME_EXCHANGE just swapped (sst and dstSt: their stats from
// before), each for the name it has now.
func (n *Node) resealExchanged(src, dst *childOp, np *Node, sst, dstSt *unix.Stat_t) {
	srcE := Place{DirID: src.d.id, Name: src.name}
	dstE := Place{DirID: dst.d.id, Name: dst.name}
	if sst.Mode&unix.S_IFMT == unix.S_IFLNK {
		n.resealAfterExchange(src.k, &dst.d, dst.bname, srcE, dstE, np)
	}
	if dstSt.Mode&unix.S_IFMT == unix.S_IFLNK {
		n.resealAfterExchange(src.k, &src.d, src.bname, dstE, srcE, n)
	}
}

// dropListings drops the kernel's cached listings of directories that
// moved to another parent: their ".." entry names the old one. Done before
// the rename is answered, so no listing after it sees the old "..". That
// cannot deadlock: it touches only pages of those directories, which the
// kernel locks while filling a cached listing but never while waiting for
// this daemon.
func (f *FS) dropListings(dirs []*fs.Inode) {
	if f.server.Load() == nil {
		return
	}
	for _, d := range dirs {
		if d != nil {
			d.NotifyContent(0, 0)
		}
	}
}

// dropDir forgets the cached descriptor of directory name in parent after
// the directory was removed or replaced.
func (f *FS) dropDir(parent *Node, name string) {
	if ch := parent.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*Node); ok {
			f.dirs.drop(cn)
		}
	}
}
