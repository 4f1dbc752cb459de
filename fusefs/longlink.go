package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
)

// withRoot runs fn with a descriptor of the backing root, where the side
// files of long symlink targets live (names.LongLinkDir). Only symlinks
// whose encrypted target does not fit a backing symlink need it.
func (f *FS) withRoot(fn func(rootfd int) error) error {
	fd, err := unix.Open(f.backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fd)
}

// storeLink turns an encrypted target into what the backing symlink holds.
func (f *FS) storeLink(enc string) (string, error) {
	if !f.plaintext && len(enc) > maxBackingLink {
		var out string
		err := f.withRoot(func(rootfd int) (err error) {
			out, err = names.StoreLink(rootfd, enc)
			return err
		})
		if err == nil {
			f.rootChanged()
		}
		return out, err
	}
	return enc, nil
}

// rootChanged drops the kernel's cached attributes of the root after the
// side directory of long targets may have been created in the backing root
// (its link count, size and times change): the kernel invalidates only the
// parent of a new symlink. Only attributes, which takes no kernel lock, so
// it may run inside the request.
func (f *FS) rootChanged() {
	if f.server.Load() != nil {
		f.root.NotifyContent(-1, 0)
	}
}

// loadLink turns what a backing symlink holds into the encrypted target.
func (f *FS) loadLink(t string) (string, error) {
	if !names.IsLongLink(t) {
		return t, nil
	}
	var out string
	err := f.withRoot(func(rootfd int) (err error) {
		out, err = names.LoadLink(rootfd, t)
		return err
	})
	return out, err
}

// dropLink removes the side file of backing target t, logging a failure:
// the symlink itself is gone, and fsck finds an orphaned side file.
func (f *FS) dropLink(t string) {
	if !names.IsLongLink(t) {
		return
	}
	if err := f.withRoot(func(rootfd int) error { return names.RemoveLink(rootfd, t) }); err != nil {
		f.log.Warn().Str("op", "unlink").Err(err).Msg("cannot remove the side file of a long symlink target")
	}
}

// maxBackingLink is the longest target a backing symlink holds.
const maxBackingLink = 4095

// longLinkOf returns the backing target of the child bname of dirfd when
// it is the last link of a symlink whose target lives in a side file,
// so that Unlink can remove that file after the entry. child is the
// kernel's inode for the name, if known: only symlinks pay the lookups.
func longLinkOf(child *fs.Inode, dirfd int, bname string) string {
	if child != nil && child.StableAttr().Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return ""
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, bname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Nlink != 1 {
		return ""
	}
	t, err := readlinkAt(dirfd, bname)
	if err != nil || !names.IsLongLink(t) {
		return ""
	}
	return t
}

// decodeLink returns the plaintext target of backing symlink target t of
// the entry e.
func (f *FS) decodeLink(k *Keys, t string, e Place) (string, error) {
	enc, err := f.loadLink(t)
	if err != nil {
		return "", err
	}
	return k.Names.DecryptSymlink(e.DirID, e.Name, enc)
}

// symlinkSize sets a symlink's size to its plaintext target's length, as
// a local file system reports it (lstat, ls -l); a target that does not
// decode keeps the backing size and fails at readlink.
func (f *FS) symlinkSize(k *Keys, st *unix.Statx_t, dirfd int, name string, e Place, a *fuse.Attr) {
	if uint32(st.Mode)&unix.S_IFMT != unix.S_IFLNK {
		return
	}
	if t, err := readlinkAt(dirfd, name); err == nil {
		if plain, err := f.decodeLink(k, t, e); err == nil {
			a.Size = uint64(len(plain))
		}
	}
}
