package fusefs

import (
	"strings"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// The backing metadata format, for the volume operations that read and
// write backing directories without a mount (copy, import, fsck). They
// must write exactly what the mount writes, so they use the mount's codec.

// MetaXattr is the backing extended attribute that holds a regular file's
// or directory's plaintext permission bits and owner.
const MetaXattr = metaXattr

// LostFoundXattr is the backing extended attribute that marks an entry
// fsck quarantined into lost+found; see lostFoundXattr.
const LostFoundXattr = lostFoundXattr

// IsOwnXattr reports whether a backing attribute name is encvol's own
// (MetaXattr, LostFoundXattr) rather than a stored user attribute.
func IsOwnXattr(name string) bool { return isOwnXattr(name) }

// ListXattrs returns the backing attribute names of path (not following
// a final symlink), and GetXattr one value, as the mount reads them.
func ListXattrs(path string) ([]string, error) {
	raw, err := llistxattrAll(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(string(raw), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// GetXattr returns the value of backing attribute name of path.
func GetXattr(path, name string) ([]byte, error) { return lgetxattrAll(path, name) }

// OpenatNoAtime opens name in dirfd for reading without updating its
// access time where the caller may ask for that (the owner, or root), so
// that reading a backing directory leaves it as it was.
func OpenatNoAtime(dirfd int, name string, flags int) (int, error) {
	return openatNoAtime(dirfd, name, flags, 0, unix.O_NOATIME)
}

// ReadlinkAt returns the stored target of symlink name in dirfd.
func ReadlinkAt(dirfd int, name string) (string, error) { return readlinkAt(dirfd, name) }

// BackingFileMode and BackingDirMode are the modes of backing entries that
// carry MetaXattr.
const (
	BackingFileMode = backingFileMode
	BackingDirMode  = backingDirMode
)

// ReservedXattrPrefix starts every backing attribute name encvol writes.
const ReservedXattrPrefix = reservedXattrPrefix

// EncodeMeta returns the MetaXattr value for permission bits mode (07777)
// and owner uid, gid.
func EncodeMeta(mode, uid, gid uint32) []byte { return meta{mode: mode, uid: uid, gid: gid}.encode() }

// DecodeMeta parses a MetaXattr value.
func DecodeMeta(b []byte) (mode, uid, gid uint32, err error) {
	m, err := decodeMeta(b)
	return m.mode, m.uid, m.gid, err
}

// HasMeta reports whether entries of file type typ (S_IFMT bits) keep
// their plaintext mode and owner in MetaXattr rather than on the backing
// entry itself.
func HasMeta(typ uint32) bool { return hasMeta(typ) }

// EncodeMetaFor returns the MetaXattr value that the mount writes for an
// entry whose file or directory ID is id: authenticated when nc says the
// volume authenticates metadata (id is then required), else EncodeMeta.
// On a volume that binds entries the record names the entry at; nil makes
// it unbound (a hard-linked file, the root).
func EncodeMetaFor(nc *names.Codec, id []byte, at *Place, mode, uid, gid uint32) ([]byte, error) {
	m := meta{mode: mode, uid: uid, gid: gid}
	if nc == nil || !nc.AuthMeta() {
		return m.encode(), nil
	}
	if at != nil {
		var err error
		if m, err = bound(nc, m, *at); err != nil {
			return nil, err
		}
	}
	return encodeMetaAuth(nc, id, m)
}

// EncodeMetaAt is EncodeMetaFor for the regular file or directory (dir)
// open as fd (when >= 0, else at path): on a volume that authenticates
// metadata it reads the entry's ID first and returns it too, so that a
// caller that also binds attribute values to the entry reads it once.
func EncodeMetaAt(nc *names.Codec, fd int, path string, dir bool, at *Place, mode, uid, gid uint32) (val, id []byte, err error) {
	if nc != nil && nc.AuthMeta() {
		if id, err = entryID(fd, path, dir); err != nil {
			return nil, nil, err
		}
	}
	val, err = EncodeMetaFor(nc, id, at, mode, uid, gid)
	return val, id, err
}

// DecodeMetaFor parses and, on a volume that authenticates metadata,
// checks a MetaXattr value of the entry whose ID is id. A value that fails
// matches ErrMetaAuth. With at, on a volume that binds entries, a record
// that names another entry than at fails with ErrEntryMoved.
func DecodeMetaFor(nc *names.Codec, id []byte, at *Place, b []byte) (mode, uid, gid uint32, err error) {
	if nc == nil || !nc.AuthMeta() {
		return DecodeMeta(b)
	}
	m, err := decodeMetaAuth(nc, id, b)
	if err == nil && at != nil {
		err = checkPlace(nc, m, *at)
	}
	return m.mode, m.uid, m.gid, err
}

// RebindMeta checks the MetaXattr value b of the entry whose ID is id and
// returns it bound to at instead (nil: unbound), on a volume that binds
// entries; elsewhere b comes back as it is.
func RebindMeta(nc *names.Codec, id, b []byte, at *Place) ([]byte, error) {
	if nc == nil || !nc.BindEntries() {
		return b, nil
	}
	m, err := decodeMetaAuth(nc, id, b)
	if err != nil {
		return nil, err
	}
	return EncodeMetaFor(nc, id, at, m.mode, m.uid, m.gid)
}

// ErrMetaAuth: a stored mode and owner failed authentication.
var ErrMetaAuth = errMetaAuth

// EntryID returns the file ID (regular file) or directory ID (dir) that
// the metadata of the entry open as fd (when >= 0) or at path is bound to.
func EntryID(fd int, path string, dir bool) ([]byte, error) { return entryID(fd, path, dir) }

// WriteFileHeader gives a new, empty backing file its sector header (of
// c's version), as a volume that authenticates metadata does at create.
func WriteFileHeader(fd int, c *sector.Cipher) error {
	_, _, err := writeFileHeader(fd, c)
	return err
}
