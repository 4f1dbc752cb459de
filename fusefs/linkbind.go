package fusefs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
)

// Symlink targets bound to their entry (header version 4). A target is
// sealed for the directory ID and plaintext name of its symlink, so a
// backing symlink cannot be given the target of another. A name that a
// symlink gets from rename or link therefore needs its target sealed
// again, and a backing symlink's target cannot change in place: the
// re-sealed target goes into a new backing symlink under a temporary name
// that is then renamed over the destination. The symlink thus gets a new
// backing inode, and the kernel's entry of the name is dropped after the
// reply so that its next lookup meets that inode.

// readBound returns the plaintext target of the backing symlink bname of
// dirfd, the entry e, with its backing stat and stored target.
func (f *FS) readBound(k *Keys, dirfd int, bname string, e Place) (plain, stored string, st unix.Stat_t, err error) {
	if err = unix.Fstatat(dirfd, bname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", "", st, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", "", st, syscall.EINVAL
	}
	if stored, err = readlinkAt(dirfd, bname); err != nil {
		return "", "", st, err
	}
	plain, err = f.decodeLink(k, stored, e)
	return plain, stored, st, err
}

// boundTemp makes a backing symlink under a temporary name in dirfd that
// holds plain sealed for the entry e, with the owner and times of st (the
// symlink it stands for). It returns the temporary name and the stored
// target (for dropLink should the symlink not be used).
func (f *FS) boundTemp(k *Keys, dirfd int, e Place, plain string, st *unix.Stat_t) (tmp, stored string, err error) {
	enc, err := k.Names.EncryptSymlink(e.DirID, e.Name, plain)
	if err != nil {
		return "", "", err
	}
	if stored, err = f.storeLink(enc); err != nil {
		return "", "", err
	}
	if tmp, err = keywrap.TempName(); err != nil {
		f.dropLink(stored)
		return "", "", err
	}
	if err = unix.Symlinkat(stored, dirfd, tmp); err != nil {
		f.dropLink(stored)
		return "", "", err
	}
	if f.euidRoot {
		err = unix.Fchownat(dirfd, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
	if err == nil {
		ts := []unix.Timespec{st.Atim, st.Mtim}
		err = unix.UtimesNanoAt(dirfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		_ = unix.Unlinkat(dirfd, tmp, 0)
		f.dropLink(stored)
		return "", "", err
	}
	return tmp, stored, nil
}

// authFail logs a symlink target that failed authentication during op and
// returns EIO.
func (f *FS) authFail(op, path string, err error) syscall.Errno {
	f.errs.Add(1)
	f.log.Error().Str("op", op).Str("path", realPath(path)).Err(err).Msg("symlink target failed authentication")
	return syscall.EIO
}

// renameLink is Rename (without RENAME_EXCHANGE) of the symlink src to
// dst on a volume that binds targets. The destination gets a new backing
// symlink sealed for it, renamed into place (RENAME_NOREPLACE honoured),
// before the source goes: a crash in between leaves both names, each
// readable, never neither.
func (n *Node) renameLink(src, dst *childOp, np *Node, flags uint32, dstExists bool) syscall.Errno {
	f := n.fsys
	plain, _, sst, err := f.readBound(src.k, src.d.fd, src.bname, Place{DirID: src.d.id, Name: src.name})
	if err != nil {
		if isAuthErr(err) {
			return f.authFail("rename", fdPath(src.d.fd, src.bname), err)
		}
		return f.errno(err, "rename", src.name)
	}
	tmp, stored, err := f.boundTemp(src.k, dst.d.fd, Place{DirID: dst.d.id, Name: dst.name}, plain, &sst)
	if err != nil {
		return f.errno(err, "rename", dst.name)
	}
	newLong, err := dst.writeLong()
	if err != nil {
		_ = unix.Unlinkat(dst.d.fd, tmp, 0)
		f.dropLink(stored)
		return f.errno(err, "rename", dst.name)
	}
	unpin := func() {}
	replacedLink := ""
	if dstExists {
		unpin = f.pinChild(np, dst.name, dst.d.fd, dst.bname)
		replacedLink = longLinkOf(np.GetChild(dst.name), dst.d.fd, dst.bname)
	}
	err = unix.Renameat2(dst.d.fd, tmp, dst.d.fd, dst.bname, uint(flags&unix.RENAME_NOREPLACE))
	unpin()
	if err != nil {
		_ = unix.Unlinkat(dst.d.fd, tmp, 0)
		f.dropLink(stored)
		if newLong {
			dst.dropLong()
		}
		return f.errno(err, "rename", src.name)
	}
	oldLink := longLinkOf(nil, src.d.fd, src.bname)
	if err := unix.Unlinkat(src.d.fd, src.bname, 0); err != nil {
		// The new name is in place, so the rename stands; the old name
		// stays, readable, and a lookup finds it again.
		f.log.Warn().Str("op", "rename").Err(err).Msg("cannot remove the old name of a renamed symlink")
		f.forgetEntry(np, dst.name)
		return 0
	}
	src.dropLong()
	f.dropLink(oldLink)
	f.dropLink(replacedLink)
	f.forgetEntry(np, dst.name)
	return 0
}

// resealAfterExchange seals again, for its new entry now, the target of
// a symlink that RENAME_EXCHANGE moved from the entry was to bname of d.
// Until it has, the symlink reads as EIO: docs/format.md, "Symlink
// targets", names this window. A failure is logged; the symlink then
// stays unreadable and fsck reports it.
func (n *Node) resealAfterExchange(k *Keys, d *dirRef, bname string, was, now Place, parent *Node) {
	f := n.fsys
	plain, old, st, err := f.readBound(k, d.fd, bname, was)
	if err != nil {
		if isAuthErr(err) {
			f.authFail("rename", fdPath(d.fd, bname), err)
		} else {
			f.resealFail(d.fd, bname, err)
		}
		return
	}
	tmp, stored, err := f.boundTemp(k, d.fd, now, plain, &st)
	if err == nil {
		if err = unix.Renameat(d.fd, tmp, d.fd, bname); err != nil {
			_ = unix.Unlinkat(d.fd, tmp, 0)
			f.dropLink(stored)
		}
	}
	if err != nil {
		f.resealFail(d.fd, bname, err)
		return
	}
	if st.Nlink == 1 {
		f.dropLink(old)
	}
	f.forgetEntry(parent, now.Name)
}

func (f *FS) resealFail(dirfd int, bname string, err error) {
	f.errs.Add(1)
	f.log.Error().Str("op", "rename").Str("path", realPath(fdPath(dirfd, bname))).Err(err).
		Msg("cannot seal an exchanged symlink's target for its new name; it reads as an I/O error until it is made again")
}

// linkSymlink is Link of the symlink tn on a volume that binds targets:
// the new name gets its own backing symlink (own inode, one link) with the
// target sealed for it, and the source's owner and times.
func (n *Node) linkSymlink(ctx context.Context, c *childOp, tn *Node, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	tp, te, trel, err := tn.pathEntry(c.k)
	if err != nil {
		return nil, f.errno(err, "link", c.name)
	}
	defer trel()
	plain, _, st, err := f.readBound(c.k, unix.AT_FDCWD, tp, te)
	if err != nil {
		if isAuthErr(err) {
			return nil, f.authFail("link", tp, err)
		}
		return nil, f.errno(err, "link", c.name)
	}
	tmp, stored, err := f.boundTemp(c.k, c.d.fd, Place{DirID: c.d.id, Name: c.name}, plain, &st)
	if err != nil {
		return nil, f.errno(err, "link", c.name)
	}
	newLong, err := c.writeLong()
	if err == nil {
		err = unix.Renameat2(c.d.fd, tmp, c.d.fd, c.bname, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		_ = unix.Unlinkat(c.d.fd, tmp, 0)
		f.dropLink(stored)
		if newLong {
			c.dropLong()
		}
		return nil, f.errno(err, "link", c.name)
	}
	var sx unix.Statx_t
	if err := statxAt(c.d.fd, c.bname, &sx); err != nil {
		return nil, f.errno(err, "link", c.name)
	}
	// The kernel may count the new link on the source's cached
	// attributes; the source keeps its one link, so they are read again.
	if f.server.Load() != nil {
		tn.NotifyContent(-1, 0)
	}
	return n.newChild(ctx, c, &sx, out)
}

// forgetEntry drops the kernel's entry of name in parent once the current
// request is answered: the name now stands for another backing inode. The
// kernel holds the parent's lock until then, so it cannot run inside.
func (f *FS) forgetEntry(parent *Node, name string) {
	if f.server.Load() == nil {
		return
	}
	go parent.NotifyEntry(name)
}

// isAuthErr reports whether err is a failed authentication of a target
// or of its long-target side file.
func isAuthErr(err error) bool { return errors.Is(err, names.ErrNameAuth) }
