package fusefs

// DisableMetaXattr makes f behave as on a backing file system without user
// xattrs: new and changed entries mirror their mode and owner.
func DisableMetaXattr(f *FS) { f.metaUnsupported(errTestNoXattr) }

var errTestNoXattr = errorString("user xattrs disabled by the test")

type errorString string

func (e errorString) Error() string { return string(e) }

// MetaReads reports how often f read a stored mode and owner from the
// backing directory.
func MetaReads(f *FS) uint64 { return f.metaReads.Load() }

// IDReads reports how often f read an entry's file or directory ID from
// the backing directory to check or seal its stored mode and owner.
func IDReads(f *FS) uint64 { return f.idReads.Load() }
