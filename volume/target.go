package volume

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// target writes the backing tree of a new volume entry by entry, without a
// mount, byte for byte in the format the mount writes (docs/format.md):
// names encrypted per directory (long names with their side files), a
// directory ID in every directory, symlink targets and user.* attributes
// sealed, the plaintext mode and owner of files and directories in
// user.encvol.meta with the backing entries at 0600/0700, contents as
// sector files. Each entry is made under a temporary name in its
// directory and renamed to its own name only once complete, so a name
// that exists is finished: a resumed copy skips it.
type target struct {
	backing    string
	rootfd     int
	cipher     *sector.Cipher
	names      *names.Codec
	release    func() // zeroizes the content key once the cipher is closed
	sectorSize int
	euidRoot   bool
	// fixMode: the umask takes bits from 0600/0700, so new backing
	// entries are chmod'ed to the canonical mode.
	fixMode bool
	// metaOK is cleared once the backing file system refuses user
	// extended attributes; modes and owners are then mirrored onto the
	// backing entries, as the mount does.
	metaOK   atomic.Bool
	metaWarn sync.Once
	log      zerolog.Logger
}

// openTarget takes the keys of u (u must not be used afterwards).
func openTarget(u *Unlocked, log zerolog.Logger) (*target, error) {
	keys, err := openKeys(u)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(u.Backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		closeUnused(keys)
		return nil, fmt.Errorf("open %s: %w", u.Backing, err)
	}
	mask := unix.Umask(0)
	unix.Umask(mask)
	t := &target{
		backing: u.Backing, rootfd: fd, cipher: keys.Content, names: keys.Names, release: keys.Release,
		sectorSize: keys.Content.SectorSize(), euidRoot: os.Geteuid() == 0, fixMode: mask&0o700 != 0, log: log,
	}
	t.metaOK.Store(true)
	return t, nil
}

// Close zeroizes the keys.
func (t *target) Close() {
	if t.rootfd >= 0 {
		unix.Close(t.rootfd)
		t.rootfd = -1
	}
	closeUnused(&fusefs.Keys{Content: t.cipher, Names: t.names, Release: t.release})
}

// dirRec is a directory of the target: its backing path relative to the
// root and its name-encryption ID. fd is open while the walk is inside the
// directory or work on its entries is pending (refs counts both).
type dirRec struct {
	rel string
	id  []byte

	mu   sync.Mutex
	fd   int // GUARDED_BY(mu) for closing; read freely while refs > 0
	refs int // GUARDED_BY(mu)
}

func (d *dirRec) hold() {
	d.mu.Lock()
	d.refs++
	d.mu.Unlock()
}

func (d *dirRec) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refs--; d.refs == 0 && d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// rootDir opens the root directory of the target.
func (t *target) rootDir() (*dirRec, error) {
	fd, err := unix.Dup(t.rootfd)
	if err != nil {
		return nil, err
	}
	id, err := names.ReadDirID(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("volume root %s: %w", t.backing, err)
	}
	return &dirRec{rel: "", id: id, fd: fd, refs: 1}, nil
}

// name returns the backing name of the plaintext name in d, and the
// encoded name for its side file when it is a long one.
func (t *target) name(d *dirRec, name, shown string) (bname, long string, err error) {
	bname, long, err = t.names.EncryptName(d.id, name)
	if errors.Is(err, names.ErrReservedName) {
		return "", "", fmt.Errorf("%s: the name is one encvol keeps for its own files in a plaintext-names volume; rename it, or use a volume with encrypted names", shown)
	}
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", shown, err)
	}
	return bname, long, nil
}

// place gives the finished entry tmp in d its name: the side file of a
// long name first, then the rename. noReplace keeps an existing entry
// (EEXIST): directories are never replaced.
func (t *target) place(d *dirRec, tmp, bname, long string, noReplace bool) error {
	if long != "" {
		if err := names.WriteLongName(d.fd, bname, long); err != nil {
			return err
		}
	}
	var flags uint
	if noReplace {
		flags = unix.RENAME_NOREPLACE
	}
	if err := unix.Renameat2(d.fd, tmp, d.fd, bname, flags); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, bname, err)
	}
	return nil
}

// lookup stats the backing entry bname of d; ok is false when there is none.
func (t *target) lookup(d *dirRec, bname string) (st unix.Stat_t, ok bool, err error) {
	err = unix.Fstatat(d.fd, bname, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, syscall.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

// remove deletes the backing entry bname of d (a directory with all it
// holds), for an entry that an earlier run left different from the source.
func (t *target) remove(d *dirRec, bname string) error {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, bname, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return nil
	case err != nil:
		return err
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return os.RemoveAll(fdName(d.fd, bname))
	}
	return t.removeEntry(d.fd, bname)
}

// mkdir makes (or, resuming, finds) the directory e named bname in d and
// returns it open. A new one is complete before it gets its name: ID
// file, mode and owner, attributes.
func (t *target) mkdir(d *dirRec, e *Entry, bname, long string) (*dirRec, error) {
	st, ok, err := t.lookup(d, bname)
	if err != nil {
		return nil, err
	}
	if ok && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := t.remove(d, bname); err != nil {
			return nil, err
		}
		ok = false
	}
	if ok {
		fd, err := unix.Openat(d.fd, bname, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		id, err := names.ReadDirID(fd)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		return &dirRec{rel: joinRel(d.rel, bname), id: id, fd: fd, refs: 1}, nil
	}
	tmp, err := keywrap.TempName()
	if err != nil {
		return nil, err
	}
	if err := unix.Mkdirat(d.fd, tmp, fusefs.BackingDirMode); err != nil {
		return nil, fmt.Errorf("mkdir: %w", err)
	}
	fd, err := unix.Openat(d.fd, tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Unlinkat(d.fd, tmp, unix.AT_REMOVEDIR)
		return nil, err
	}
	fail := func(err error) (*dirRec, error) {
		unix.Close(fd)
		_ = os.RemoveAll(fdName(d.fd, tmp))
		return nil, err
	}
	id, err := names.CreateDirID(fd)
	if err != nil {
		return fail(err)
	}
	if err := t.setAttrs(fd, e, true, placeOf(d, e)); err != nil {
		return fail(err)
	}
	if err := t.place(d, tmp, bname, long, true); err != nil {
		return fail(err)
	}
	return &dirRec{rel: joinRel(d.rel, bname), id: id, fd: fd, refs: 1}, nil
}

// setAttrs stores the mode and owner of a regular file or directory open
// as fd (user.encvol.meta, or mirrored where the backing has no user
// attributes) and its sealed user.* attributes.
//
// at is the entry the record names on a volume that binds entries (nil:
// unbound, see placeOf).
func (t *target) setAttrs(fd int, e *Entry, dir bool, at *fusefs.Place) error {
	canonical := uint32(fusefs.BackingFileMode)
	if dir {
		canonical = fusefs.BackingDirMode
	}
	var entry []byte // the file or directory ID the record and values are bound to
	if t.metaOK.Load() {
		val, id, err := fusefs.EncodeMetaAt(t.names, fd, "", dir, at, e.Mode, e.UID, e.GID)
		if err != nil {
			return fmt.Errorf("store mode and owner: %w", err)
		}
		entry = id
		err = unix.Fsetxattr(fd, fusefs.MetaXattr, val, 0)
		switch {
		case err == nil:
			if t.fixMode {
				if err := unix.Fchmod(fd, canonical); err != nil {
					return fmt.Errorf("chmod: %w", err)
				}
			}
		case errors.Is(err, syscall.ENOTSUP):
			t.metaOK.Store(false)
			t.metaWarn.Do(func() {
				t.log.Warn().Str("path", t.backing).Msg("the target file system does not support user extended attributes; backing files show the plaintext modes and owners")
			})
		default:
			return fmt.Errorf("store mode and owner: %w", err)
		}
	}
	if !t.metaOK.Load() {
		if t.euidRoot {
			if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
		if err := unix.Fchmod(fd, e.Mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for _, x := range e.Xattrs {
		stored, err := t.names.EncryptXattrName(x.Name)
		if err != nil {
			return fmt.Errorf("extended attribute %s: %w", x.Name, err)
		}
		if entry == nil && t.names.AuthMeta() {
			if entry, err = fusefs.EntryID(fd, "", dir); err != nil {
				return fmt.Errorf("extended attribute %s: %w", x.Name, err)
			}
		}
		sealed, err := t.names.SealXattrValue(stored, entry, x.Value)
		if err != nil {
			return fmt.Errorf("extended attribute %s: %w", x.Name, err)
		}
		if err := unix.Fsetxattr(fd, stored, sealed, 0); err != nil {
			if errors.Is(err, syscall.ENOTSUP) {
				return fmt.Errorf("extended attribute %s: the target file system does not support user extended attributes; put the volume on one that does (ext4, xfs, btrfs, tmpfs)", x.Name)
			}
			return fmt.Errorf("extended attribute %s: %w", x.Name, err)
		}
	}
	return nil
}

// setTimes sets the access and modification time of the entry name of
// dirfd ("" for dirfd itself), not following a symlink.
func setTimes(dirfd int, name string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if name == "" {
		return unix.UtimesNanoAt(unix.AT_FDCWD, fdName(dirfd, ""), ts, 0)
	}
	return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// special makes a symlink, FIFO, socket or device node e named bname in d.
// These hold no data and keep their mode and owner on the backing entry,
// as the mount makes them.
func (t *target) special(d *dirRec, e *Entry, bname, long string) error {
	tmp, err := keywrap.TempName()
	if err != nil {
		return err
	}
	if e.Type == unix.S_IFLNK {
		// Sealed for the entry it becomes (format version 4).
		_, name := splitRel(e.Path)
		enc, err := t.names.EncryptSymlink(d.id, name, e.Target)
		if errors.Is(err, names.ErrNameTooLong) {
			return fmt.Errorf("the symlink target is %d bytes long, more than a volume stores (%s)", len(e.Target), err)
		}
		if err != nil {
			return err
		}
		// A target too long for a backing symlink goes to a side file
		// under names.LongLinkDir, written first.
		stored, err := names.StoreLink(t.rootfd, enc)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(stored, d.fd, tmp); err != nil {
			_ = names.RemoveLink(t.rootfd, stored)
			return fmt.Errorf("symlink: %w", err)
		}
	} else if err := unix.Mknodat(d.fd, tmp, e.Type|e.Mode&0o777, int(e.Rdev)); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("mknod: %w (device nodes need root)", err)
		}
		return fmt.Errorf("mknod: %w", err)
	}
	err = t.finishSpecial(d.fd, tmp, e)
	if err == nil {
		err = t.place(d, tmp, bname, long, false)
	}
	if err != nil {
		_ = t.removeEntry(d.fd, tmp)
	}
	return err
}

// removeEntry unlinks the non-directory name of dirfd, and the side file
// of its symlink target when that was its last link.
func (t *target) removeEntry(dirfd int, name string) error {
	var st unix.Stat_t
	target := ""
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK && st.Nlink == 1 {
		target, _ = fusefs.ReadlinkAt(dirfd, name)
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return err
	}
	return names.RemoveLink(t.rootfd, target)
}

func (t *target) finishSpecial(dirfd int, tmp string, e *Entry) error {
	if t.euidRoot {
		if err := unix.Fchownat(dirfd, tmp, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if e.Type != unix.S_IFLNK {
		// After chown, which may clear set-ID bits.
		if err := unix.Fchmodat(dirfd, tmp, e.Mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return setTimes(dirfd, tmp, e.Atime, e.Mtime)
}

// fileWriter is a regular file of the target being written under its
// temporary name. Several workers may write disjoint sector ranges at
// once, each through its own sector.File on the shared descriptor.
type fileWriter struct {
	t   *target
	d   *dirRec
	e   *Entry
	tmp string
	f   *os.File
}

// createFile starts the file e in d under a temporary name. With presize
// the file gets its full size at once (a header and holes), so that
// workers can fill sector ranges in any order.
func (t *target) createFile(d *dirRec, e *Entry, presize bool) (*fileWriter, error) {
	tmp, err := keywrap.TempName()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.fd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fusefs.BackingFileMode)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	w := &fileWriter{t: t, d: d, e: e, tmp: tmp, f: os.NewFile(uintptr(fd), filepath.Join(t.backing, d.rel, tmp))}
	if t.names.AuthMeta() {
		// Its metadata is bound to the file ID, also when it stays empty.
		if err := fusefs.WriteFileHeader(fd, t.cipher); err != nil {
			w.abort()
			return nil, err
		}
	}
	if presize && e.Size > 0 {
		if err := w.truncate(); err != nil {
			w.abort()
			return nil, err
		}
	}
	return w, nil
}

// sectorFile returns a sector.File of the file for one writer.
func (w *fileWriter) sectorFile() (*sector.File, error) {
	return sector.NewFile(w.f, w.t.sectorSize)
}

// truncate gives the file its plaintext size, leaving what was not
// written a hole.
func (w *fileWriter) truncate() error {
	sf, err := w.sectorFile()
	if err != nil {
		return err
	}
	size, err := sf.Size()
	if err != nil {
		return err
	}
	if size == w.e.Size {
		return nil
	}
	return sf.Truncate(w.t.cipher, w.e.Size)
}

// setHoles gives the file the hole map of exactly the sectors its writers
// left unwritten (see sector.File.SetHoles).
func (w *fileWriter) setHoles(holes []sector.Extent) error {
	sf, err := w.sectorFile()
	if err != nil {
		return err
	}
	return sf.SetHoles(w.t.cipher, holes)
}

// finish completes the file (size, mode, owner, attributes, times) and
// gives it its name.
func (w *fileWriter) finish(bname, long string) error {
	if err := w.truncate(); err != nil {
		return err
	}
	fd := int(w.f.Fd())
	if err := w.t.setAttrs(fd, w.e, false, placeOf(w.d, w.e)); err != nil {
		return err
	}
	if err := setTimes(fd, "", w.e.Atime, w.e.Mtime); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	if err := w.f.Close(); err != nil {
		w.f = nil
		_ = unix.Unlinkat(w.d.fd, w.tmp, 0)
		return err
	}
	w.f = nil
	if err := w.t.place(w.d, w.tmp, bname, long, false); err != nil {
		_ = unix.Unlinkat(w.d.fd, w.tmp, 0)
		return err
	}
	return nil
}

// abort removes the unfinished file (on a full disk that frees its space).
func (w *fileWriter) abort() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	_ = unix.Unlinkat(w.d.fd, w.tmp, 0)
}

// isDone reports whether st, the backing entry at a file's name, is that
// file as an earlier run finished it: a renamed file is complete, and the
// size and modification time tell whether the source still matches.
func (t *target) isDone(st *unix.Stat_t, e *Entry) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG &&
		sector.PlainSize(st.Size, t.sectorSize) == e.Size &&
		st.Mtim.Sec == e.Mtime.Unix() && st.Mtim.Nsec == int64(e.Mtime.Nanosecond())
}

// placeOf is the entry e becomes in the target directory d: what its
// record names on a volume that binds entries. A regular file with more
// than one name is unbound, as a hard link through the mount makes it.
func placeOf(d *dirRec, e *Entry) *fusefs.Place {
	if e.Type == unix.S_IFREG && e.Nlink > 1 {
		return nil
	}
	return &fusefs.Place{DirID: d.id, Name: path.Base(e.Path)}
}
