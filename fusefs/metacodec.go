package fusefs

// The backing metadata format, for the volume operations that read and
// write backing directories without a mount (copy, import, fsck). They
// must write exactly what the mount writes, so they use the mount's codec.

// MetaXattr is the backing extended attribute that holds a regular file's
// or directory's plaintext permission bits and owner.
const MetaXattr = metaXattr

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
