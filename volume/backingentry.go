package volume

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// listed is one name of a backing directory listing: an entry of the tree,
// with its plaintext name or why that did not decode.
type listed struct {
	backing string
	plain   string
	err     error
}

// readDirID reads d's directory ID into d.id, or the failure into d.idErr.
func (s *BackingSource) readDirID(d *backingDir) {
	d.id, d.idErr = names.ReadDirID(d.fd)
}

// list reads d's names, reports its strays and returns its entries in walk
// order: decoded names by plaintext name, then the rest by backing name.
func (s *BackingSource) list(d *backingDir) ([]listed, error) {
	all, err := readDirNames(d.fd)
	if err != nil {
		return nil, fmt.Errorf("walk %s: list %s: %w", s.root, joinRel(d.rel, "."), err)
	}
	slices.Sort(all)
	present := func(n string) bool { _, ok := slices.BinarySearch(all, n); return ok }
	var out []listed
	for _, n := range all {
		kind, skip, notEntry := s.strayKind(d, n, present)
		if skip {
			continue
		}
		if notEntry {
			if err := s.reportStray(d, n, kind); err != nil {
				return nil, err
			}
			continue
		}
		plain, err := s.decodeName(d, n)
		out = append(out, listed{backing: n, plain: plain, err: err})
	}
	slices.SortFunc(out, func(a, b listed) int {
		switch {
		case a.err == nil && b.err == nil:
			return strings.Compare(a.plain, b.plain)
		case a.err == nil:
			return -1
		case b.err == nil:
			return 1
		}
		return strings.Compare(a.backing, b.backing)
	})
	return out, nil
}

func (s *BackingSource) reportStray(d *backingDir, name string, kind StrayKind) error {
	st := &Stray{Kind: kind, Backing: joinRel(d.rel, name), Dir: d.rel, DirPath: d.path, PathKnown: d.pathKnown}
	var sx unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &sx, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		st.Size = sx.Size
	}
	if kind == StrayOrphanLongName && d.idErr == nil {
		// The name it held, for the report: read the side file as if the
		// entry were there.
		entry := strings.TrimSuffix(name, names.LongNameSuffix)
		if full, err := names.ReadLongName(d.fd, entry); err == nil {
			st.Name, _ = s.keys.Names.DecryptName(d.id, full)
		}
	}
	return s.stray(st)
}

// decodeName returns the plaintext name of backing entry name in d.
func (s *BackingSource) decodeName(d *backingDir, name string) (string, error) {
	if s.plaintext {
		plain, err := s.keys.Names.DecryptName(nil, name)
		if err != nil {
			return "", &EntryError{Part: PartName, Err: err}
		}
		return plain, nil
	}
	if d.idErr != nil {
		return "", &EntryError{Part: PartName, Err: fmt.Errorf("the directory's ID is unusable, so its names cannot be decrypted: %w", d.idErr)}
	}
	enc := name
	if names.IsLongName(name) {
		full, err := names.ReadLongName(d.fd, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				err = fmt.Errorf("long-name side file %s%s is missing", name, names.LongNameSuffix)
			}
			return "", &EntryError{Part: PartName, Err: err}
		}
		enc = full
	}
	plain, err := s.keys.Names.DecryptName(d.id, enc)
	if err != nil {
		return "", &EntryError{Part: PartName, Err: err}
	}
	return plain, nil
}

// fillEntry fills e from backing entry name of dirfd ("" for dirfd
// itself) as the mount shows it; xpath reaches the entry for the
// attribute calls. What does not decode is added to e.Err.
func (s *BackingSource) fillEntry(e *Entry, dirfd int, name, xpath string, ln linkName) {
	var st unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS, &st); err != nil {
		e.addErr(PartStat, "", err)
		return
	}
	e.Type = uint32(st.Mode) & unix.S_IFMT
	e.Mode = uint32(st.Mode) & 0o7777
	e.UID, e.GID = st.Uid, st.Gid
	e.Rdev = unix.Mkdev(st.Rdev_major, st.Rdev_minor)
	e.Atime = time.Unix(st.Atime.Sec, int64(st.Atime.Nsec))
	e.Mtime = time.Unix(st.Mtime.Sec, int64(st.Mtime.Nsec))
	e.Nlink = st.Nlink
	e.Inode = st.Ino
	switch e.Type {
	case unix.S_IFREG:
		e.Size = sector.PlainSize(int64(st.Size), s.sectorSize)
	case unix.S_IFLNK:
		s.readTarget(e, dirfd, name, ln)
	}
	if fusefs.HasMeta(e.Type) {
		s.readMeta(e, xpath, ln)
		s.readXattrs(e, xpath)
	}
}

// linkName is the entry a symlink target is bound to (format version 4):
// its directory's ID and plaintext name; ok is false when the name or the
// directory ID does not decode (already an error of the entry).
type linkName struct {
	dirID []byte
	name  string
	ok    bool
}

func (s *BackingSource) readTarget(e *Entry, dirfd int, name string, ln linkName) {
	stored, err := fusefs.ReadlinkAt(dirfd, name)
	if err != nil {
		e.addErr(PartTarget, "", err)
		return
	}
	if stored, err = s.loadLink(stored); err != nil {
		e.addErr(PartTarget, "", err)
		return
	}
	bound := s.keys.Names.BindLinks()
	if bound && !ln.ok {
		// Nothing to check the target against; the name's own error
		// stands for the entry.
		return
	}
	t, err := s.keys.Names.DecryptSymlink(ln.dirID, ln.name, stored)
	if err != nil {
		e.addErr(PartTarget, "", err)
		return
	}
	e.Target = t
	e.Size = int64(len(t))
}

// readMeta takes the mode and owner from the stored attribute when there
// is one; a malformed one is an error, and the entry then shows its backing
// mode and owner, as the mount does.
//
// On a volume with authenticated metadata the attribute must be there and
// authenticate against the entry's file or directory ID; on one that binds
// entries it must also name the entry ln (when its name decoded), as a
// lookup through the mount checks.
func (s *BackingSource) readMeta(e *Entry, xpath string, ln linkName) {
	nc := s.keys.Names
	auth := nc.AuthMeta()
	b, err := fusefs.GetXattr(xpath, fusefs.MetaXattr)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) || (errors.Is(err, unix.ENODATA) && !auth) {
		return
	}
	if errors.Is(err, unix.ENODATA) {
		e.addErr(PartMeta, "", fmt.Errorf("%w: %s is missing", fusefs.ErrMetaAuth, fusefs.MetaXattr))
		return
	}
	if err != nil {
		e.addErr(PartMeta, "", err)
		return
	}
	var id []byte
	if auth {
		if id, err = fusefs.EntryID(-1, xpath, e.Type == unix.S_IFDIR); err != nil {
			if e.Type == unix.S_IFDIR && (errors.Is(err, names.ErrDirIDCorrupt) || errors.Is(err, unix.ENOENT)) {
				// Reported as the directory ID's damage; its repair
				// resets the mode and owner too.
				return
			}
			e.addErr(PartMeta, "", fmt.Errorf("%w: %w", fusefs.ErrMetaAuth, err))
			return
		}
	}
	var at *fusefs.Place
	if ln.ok {
		at = &fusefs.Place{DirID: ln.dirID, Name: ln.name}
	}
	mode, uid, gid, err := fusefs.DecodeMetaFor(nc, id, at, b)
	if err != nil {
		e.addErr(PartMeta, "", err)
		return
	}
	e.Mode, e.UID, e.GID = mode, uid, gid
}

// readXattrs decrypts the user attributes the mount lists; attributes
// encvol keeps for itself and foreign ones (which the mount hides) are
// left out.
func (s *BackingSource) readXattrs(e *Entry, xpath string) {
	list, err := fusefs.ListXattrs(xpath)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return
	}
	if err != nil {
		e.addErr(PartXattr, "", err)
		return
	}
	var entry []byte // the file or directory ID the values are bound to
	for _, stored := range list {
		if !strings.HasPrefix(stored, "user.") || fusefs.IsOwnXattr(stored) {
			continue
		}
		plain, err := s.keys.Names.DecryptXattrName(stored)
		if errors.Is(err, names.ErrXattrForeign) {
			continue
		}
		if err != nil {
			e.addErr(PartXattr, stored, err)
			continue
		}
		if strings.HasPrefix(plain, fusefs.ReservedXattrPrefix) {
			continue
		}
		sealed, err := fusefs.GetXattr(xpath, stored)
		if err != nil {
			e.addErr(PartXattr, stored, err)
			continue
		}
		if entry == nil && s.keys.Names.AuthMeta() {
			if entry, err = fusefs.EntryID(-1, xpath, e.Type == unix.S_IFDIR); err != nil {
				e.addErr(PartXattr, stored, err)
				continue
			}
		}
		val, err := s.keys.Names.OpenXattrValue(stored, entry, sealed)
		if err != nil {
			e.addErr(PartXattr, stored, err)
			continue
		}
		e.Xattrs = append(e.Xattrs, Xattr{Name: plain, Value: val})
	}
	slices.SortFunc(e.Xattrs, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
}

// readDirNames lists the directory open as fd through a descriptor of
// its own, so fd's offset stays where it is.
func readDirNames(fd int) ([]string, error) {
	lfd, err := fusefs.OpenatNoAtime(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(lfd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// openBackingFile opens the backing file rel (relative to root) for
// reading, one directory at a time when the whole path is longer than the
// kernel takes in one call. It never follows symlinks.
func openBackingFile(root, rel string) (*os.File, error) {
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if len(root)+1+len(rel) < unix.PathMax {
		fd, err := fusefs.OpenatNoAtime(unix.AT_FDCWD, root+"/"+rel, flags)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: root + "/" + rel, Err: err}
		}
		return os.NewFile(uintptr(fd), root+"/"+rel), nil
	}
	rfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	dir, name := path.Split(rel)
	dfd, err := openDirRel(rfd, strings.TrimSuffix(dir, "/"))
	unix.Close(rfd)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root + "/" + rel, Err: err}
	}
	fd, err := fusefs.OpenatNoAtime(dfd, name, flags)
	unix.Close(dfd)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root + "/" + rel, Err: err}
	}
	return os.NewFile(uintptr(fd), root+"/"+rel), nil
}
