package fusefs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// The backing directory must not show the plaintext permissions and owners
// of the volume's files. Regular files and directories are therefore kept
// at backingFileMode/backingDirMode, owned by the daemon's user, and their
// plaintext permission bits, uid and gid live in the backing xattr
// metaXattr. Symlinks and special files cannot carry user.* xattrs on
// Linux; they hold no data and keep mirroring their mode and owner.
const (
	metaXattr       = "user.encvol.meta"
	metaVersion     = 1
	metaLen         = 13 // version, mode, uid, gid (big endian uint32s)
	backingFileMode = 0o600
	backingDirMode  = 0o700
)

// lostFoundXattr marks an entry that fsck moved into lost+found: its
// value (sealed like a user attribute value, bound to this name) records
// where the entry came from and what was wrong with it, so a later check
// can tell the damage it was quarantined for from new damage.
const lostFoundXattr = "user.encvol.lostfound"

// isOwnXattr reports whether a backing attribute name is one encvol keeps
// for itself beside the user's (encrypted) attributes.
func isOwnXattr(name string) bool {
	return name == metaXattr || name == lostFoundXattr || name == sector.HolesXattr
}

// reservedXattrPrefix starts the backing names encvol writes itself. In
// encrypted-names mode every stored user attribute also starts with it,
// but its encoded part is never shorter than 22 bytes, so it cannot equal
// metaXattr. Users cannot get, set or remove names under this prefix in
// either mode (in plaintext-names mode their names would be stored as
// they are and could reach metaXattr).
const reservedXattrPrefix = "user.encvol."

// meta is the plaintext view of an entry's permission bits (07777,
// including setuid, setgid and sticky) and owner.
type meta struct {
	mode, uid, gid uint32
	// bind: the entries the record names (header version 5, entrybind.go).
	bind binding
}

func (m meta) encode() []byte {
	b := make([]byte, metaLen)
	b[0] = metaVersion
	binary.BigEndian.PutUint32(b[1:], m.mode&07777)
	binary.BigEndian.PutUint32(b[5:], m.uid)
	binary.BigEndian.PutUint32(b[9:], m.gid)
	return b
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) == 0 || b[0] != metaVersion {
		return meta{}, fmt.Errorf("%s: unknown version", metaXattr)
	}
	if len(b) != metaLen {
		return meta{}, fmt.Errorf("%s: %d bytes, want %d", metaXattr, len(b), metaLen)
	}
	return parseRecord(b)
}

// parseRecord reads mode, uid and gid of a record of either version.
func parseRecord(b []byte) (meta, error) {
	m := meta{
		mode: binary.BigEndian.Uint32(b[1:]),
		uid:  binary.BigEndian.Uint32(b[5:]),
		gid:  binary.BigEndian.Uint32(b[9:]),
	}
	if m.mode&^07777 != 0 {
		return meta{}, fmt.Errorf("%w: %s: mode %#o has bits beyond 07777", errMetaMalformed, metaXattr, m.mode)
	}
	return m, nil
}

// statMeta is the fallback view of an entry without metaXattr (created by
// an older encvol, another tool, or on a backing file system without user
// xattrs): the backing stat itself.
func statMeta(st *unix.Statx_t) meta {
	return meta{mode: uint32(st.Mode) & 07777, uid: st.Uid, gid: st.Gid}
}

// hasMeta reports whether entries of file type typ (S_IFMT bits) keep
// their plaintext mode and owner in metaXattr.
func hasMeta(typ uint32) bool {
	typ &= unix.S_IFMT
	return typ == unix.S_IFREG || typ == unix.S_IFDIR
}

// canonicalMode is the backing permission of an entry of type typ that
// carries metaXattr.
func canonicalMode(typ uint32) uint32 {
	if typ&unix.S_IFMT == unix.S_IFDIR {
		return backingDirMode
	}
	return backingFileMode
}

// metaEnabled reports whether new and changed entries store metaXattr;
// false once the backing file system turned out not to support user xattrs.
func (f *FS) metaEnabled() bool { return f.metaOK.Load() }

// metaUnsupported switches the file system to mirroring modes and owners
// on the backing entries, logging the reason once.
func (f *FS) metaUnsupported(err error) {
	f.metaOK.Store(false)
	f.metaWarn.Do(func() {
		f.log.Warn().Str("path", f.backing).Err(err).
			Msg("backing file system does not support user extended attributes; backing files show the plaintext modes and owners")
	})
}

func isNotSupported(err error) bool {
	return errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP)
}

// readMeta reads metaXattr through fd (when >= 0) or path (never
// following a final symlink) of a regular file or directory (dir).
//
// Without authenticated metadata (nc nil, or a volume older than header
// version 3) ok is false when the entry has none, and a malformed value is
// logged and treated as missing, so the entry falls back to its backing
// mode (0600/0700, the daemon's user), which is never more permissive than
// what was stored. With it, a missing, malformed or unauthentic value is an
// error (errMetaAuth): the caller answers EIO.
//
// idOut, when not nil, receives the entry ID the record was checked
// against, so that a caller that writes the record back reads it once.
func (f *FS) readMeta(nc *names.Codec, fd int, path string, dir bool, idOut *[]byte) (m meta, ok bool, err error) {
	f.metaReads.Add(1)
	var buf [metaLenMax + 1]byte
	var n int
	if fd >= 0 {
		n, err = unix.Fgetxattr(fd, metaXattr, buf[:])
	} else {
		n, err = lgetxattrFast(path, metaXattr, buf[:])
	}
	auth := nc != nil && nc.AuthMeta()
	if err != nil {
		if auth && errors.Is(err, syscall.ENODATA) {
			return meta{}, false, fmt.Errorf("%w: %s is missing", errMetaAuth, metaXattr)
		}
		if !errors.Is(err, syscall.ENODATA) && !isNotSupported(err) {
			if auth {
				return meta{}, false, err
			}
			f.log.Warn().Str("op", "getattr").Str("path", realPath(path)).Err(err).Msg("cannot read the stored mode and owner; showing the backing ones")
		}
		return meta{}, false, nil
	}
	if !auth {
		m, err = decodeMeta(buf[:n])
		if err != nil {
			f.log.Warn().Str("op", "getattr").Str("path", realPath(path)).Err(err).Msg("stored mode and owner are malformed; showing the backing ones")
			return meta{}, false, nil
		}
		return m, true, nil
	}
	f.idReads.Add(1)
	id, err := entryID(fd, path, dir)
	if err != nil {
		return meta{}, false, fmt.Errorf("%w: %w", errMetaAuth, err)
	}
	m, err = decodeMetaAuth(nc, id, buf[:n])
	if err != nil {
		return meta{}, false, err
	}
	if idOut != nil {
		*idOut = id
	}
	return m, true, nil
}

// writeMeta stores m in metaXattr of the backing regular file or directory
// (fd when >= 0, else path) whose stat is st, and gives the backing entry
// its canonical mode and the daemon's owner if it does not have them yet
// (entries from older volumes are migrated on their first chmod/chown).
// An error satisfying isNotSupported means the backing file system has no
// user xattrs: the caller mirrors instead.
//
// id is the entry's file or directory ID when the caller knows it (nil:
// read it).
func (f *FS) writeMeta(nc *names.Codec, fd int, path string, st *unix.Statx_t, m meta, id []byte) error {
	val := m.encode()
	if nc != nil && nc.AuthMeta() {
		var err error
		if id == nil {
			f.idReads.Add(1)
			if id, err = entryID(fd, path, uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR); err != nil {
				return fmt.Errorf("%w: %w", errMetaAuth, err)
			}
		}
		if val, err = encodeMetaAuth(nc, id, m); err != nil {
			return err
		}
	}
	set := func() error {
		if fd >= 0 {
			return unix.Fsetxattr(fd, metaXattr, val, 0)
		}
		return unix.Lsetxattr(path, metaXattr, val, 0)
	}
	err := set()
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		// A daemon that is not root needs write permission to set a user
		// xattr; an older entry may lack it (mode 0444). Its owner can
		// chmod it to the canonical mode first.
		if cerr := f.canonicalize(fd, path, st); cerr != nil {
			return err
		}
		err = set()
	}
	if err != nil {
		return err
	}
	// Only after the xattr holds the mode may the backing lose it.
	return f.canonicalize(fd, path, st)
}

// canonicalize sets the backing mode to 0600/0700 and, when the daemon is
// root, the owner to the daemon's user.
func (f *FS) canonicalize(fd int, path string, st *unix.Statx_t) error {
	want := canonicalMode(uint32(st.Mode))
	if uint32(st.Mode)&07777 != want {
		if err := chmodEntry(fd, unix.AT_FDCWD, path, want); err != nil {
			return err
		}
		st.Mode = uint16(uint32(st.Mode)&unix.S_IFMT | want)
	}
	if f.euidRoot && (st.Uid != f.euid || st.Gid != f.egid) {
		var err error
		if fd >= 0 {
			err = unix.Fchown(fd, int(f.euid), int(f.egid))
		} else {
			err = unix.Fchownat(unix.AT_FDCWD, path, int(f.euid), int(f.egid), unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return err
		}
		st.Uid, st.Gid = f.euid, f.egid
	}
	return nil
}

// setMetaAttr applies the mode and owner parts of a setattr to a regular
// file or directory that stores them in metaXattr. handled is false when
// the backing file system turned out not to support user xattrs; the
// caller then changes the backing entry itself.
func (n *Node) setMetaAttr(k *Keys, in *fuse.SetAttrIn, fd int, path string) (handled bool, errno syscall.Errno) {
	st, known := n.canonicalStat()
	if !known {
		if err := statxFdOrPath(fd, path, &st); err != nil {
			return true, n.fsys.errno(err, "setattr", path)
		}
	}
	if !hasMeta(uint32(st.Mode)) {
		return false, 0
	}
	m, ok, id, err := n.storedMeta(k, fd, path, &st, uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return true, n.fsys.metaErrno(err, "setattr", fd, path)
	}
	nc, rel, errno := n.fsys.metaCodec(k)
	if errno != 0 {
		return true, errno
	}
	defer rel()
	if !ok {
		m = statMeta(&st)
	}
	if mode, ok := in.GetMode(); ok {
		m.mode = mode & 07777
	}
	if uid, ok := in.GetUID(); ok {
		if !n.fsys.euidRoot && uid != m.uid && uid != n.fsys.euid {
			// What the backing chown would have refused.
			return true, syscall.EPERM
		}
		m.uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		if !n.fsys.euidRoot && gid != m.gid && !n.fsys.inDaemonGroups(gid) {
			return true, syscall.EPERM
		}
		m.gid = gid
	}
	if _, mok := in.GetMode(); !mok && in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 &&
		uint32(st.Mode)&unix.S_IFMT != unix.S_IFDIR {
		// chown of a non-directory drops set-ID bits, even for root; with
		// FUSE_HANDLE_KILLPRIV_V2 the kernel leaves that to the file
		// system (the backing chown did it when modes were mirrored).
		m.mode = killSUIDBits(m.mode)
	}
	if err := n.writeNodeMeta(nc, fd, path, &st, m, id); err != nil {
		if isNotSupported(err) {
			n.fsys.metaUnsupported(err)
			return false, 0
		}
		return true, n.fsys.errno(err, "setattr", path)
	}
	return true, 0
}

func (f *FS) inDaemonGroups(gid uint32) bool {
	if gid == f.egid {
		return true
	}
	gs, err := unix.Getgroups()
	if err != nil {
		return false
	}
	for _, g := range gs {
		if uint32(g) == gid {
			return true
		}
	}
	return false
}

// owner is the plaintext owner of a new entry.
type owner struct {
	uid, gid uint32
	sgid     bool // the parent directory is set-group-ID
}

// newOwner returns the owner of a new entry in directory d: the caller
// (as a local file system running as root would; a daemon that is not
// root keeps its own user, which is all the backing could have shown), and
// in a set-group-ID directory the directory's group.
func (n *Node) newOwner(ctx context.Context, k *Keys, d *dirRef) (owner, error) {
	o := owner{uid: n.fsys.euid, gid: n.fsys.egid}
	if n.fsys.euidRoot {
		if caller, ok := fuse.FromContext(ctx); ok {
			o.uid, o.gid = caller.Uid, caller.Gid
		}
	}
	var pm meta
	ok := false
	if n.fsys.metaEnabled() {
		var err error
		if pm, ok, _, err = n.storedMeta(k, d.fd, d.path(), nil, true); err != nil {
			return o, err
		}
	}
	if !ok {
		var st unix.Statx_t
		if err := statxFd(d.fd, &st); err != nil {
			return o, nil
		}
		pm = statMeta(&st)
	}
	if pm.mode&unix.S_ISGID != 0 {
		o.gid = pm.gid
		o.sgid = true
	}
	return o, nil
}

// initMeta stores the mode and owner of a new regular file or directory
// (open as fd, stat'ed into st) and updates st to what the kernel must
// see. On a backing file system without user xattrs it mirrors them onto
// the backing entry instead.
//
// id is a new directory's ID (nil for a regular file, which gets its file
// ID here on a volume with authenticated metadata). What was stored comes
// back as fresh, so that the new node starts with it instead of reading
// it back: the record and its ID (nil when the mode and owner are
// mirrored), and the sector header written.
func (n *Node) initMeta(k *Keys, fd int, st *unix.Statx_t, m meta, id []byte) (fresh newEntry, err error) {
	if n.fsys.metaEnabled() {
		if k.Names.AuthMeta() && uint32(st.Mode)&unix.S_IFMT == unix.S_IFREG {
			// The metadata is bound to the file ID: the file gets it now.
			if fresh.hdr, id, err = writeFileHeader(fd, k.Content); err != nil {
				return newEntry{}, err
			}
			if err := statxFd(fd, st); err != nil {
				return newEntry{}, err
			}
		}
		err := n.fsys.writeMeta(k.Names, fd, "", st, m, id)
		if err == nil {
			fresh.meta = &metaEntry{m: m, ok: true, canonical: true, id: id}
			return fresh, nil
		}
		if !isNotSupported(err) {
			return newEntry{}, err
		}
		n.fsys.metaUnsupported(err)
		fresh.meta = nil
	}
	if n.fsys.euidRoot {
		if err := unix.Fchown(fd, int(m.uid), int(m.gid)); err != nil {
			n.fsys.log.Warn().Str("op", "create").Err(err).Msg("cannot give the new entry the caller's owner")
		}
	}
	// After chown, which may clear setuid/setgid.
	if err := unix.Fchmod(fd, m.mode); err != nil {
		return newEntry{}, err
	}
	return fresh, statxFd(fd, st)
}

// newEntry is what initMeta stored for a new entry.
type newEntry struct {
	meta *metaEntry // the node's first cached record, nil when mirrored
	hdr  []byte     // the sector header written, nil when none
}

// killSUIDBits clears set-user-ID, and set-group-ID of a group-executable
// file, as the kernel does for an unprivileged write or truncate and for
// every chown of a non-directory.
func killSUIDBits(mode uint32) uint32 {
	keep := mode &^ unix.S_ISUID
	if mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		keep &^= unix.S_ISGID
	}
	return keep
}

// killSUIDMeta is killSUIDLocked for a regular file whose mode lives in
// metaXattr (the backing mode holds no set-ID bits to clear). done is false
// for entries that mirror their mode on the backing file. Caller holds
// n.content.
func (n *Node) killSUIDMeta(fd int, path string) (done bool, err error) {
	if !n.fsys.metaEnabled() || n.StableAttr().Mode != unix.S_IFREG {
		return false, nil
	}
	m, ok, id, err := n.storedMeta(nil, fd, path, nil, false)
	if err != nil {
		return true, err
	}
	if !ok {
		return false, nil
	}
	keep := killSUIDBits(m.mode)
	if keep == m.mode {
		return true, nil
	}
	st, known := n.canonicalStat()
	if !known {
		if err := statxFdOrPath(fd, path, &st); err != nil {
			return true, err
		}
	}
	m.mode = keep
	nc, rel, errno := n.fsys.metaCodec(nil)
	if errno != 0 {
		return true, errno
	}
	defer rel()
	return true, n.writeNodeMeta(nc, fd, path, &st, m, id)
}
