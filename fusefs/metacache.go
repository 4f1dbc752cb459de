package fusefs

import (
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
)

// Why each node remembers its stored mode and owner: the kernel asks for
// attributes after nearly every change (a tar extraction sends four
// SETATTRs and a GETATTR per file), and reading metaXattr again each time
// cost one getxattr per answer and a statx plus a getxattr per chmod or
// chown. The value changes only through writeMeta, and every writeMeta of
// a mounted volume goes through the node of its inode (one node per
// backing inode, see stableAttr), which records what it wrote. Changes
// made to the backing directory behind a live mount's back are therefore
// not seen until the kernel forgets the inode; nothing in encvol writes
// them while a volume is mounted.
//
// Memory: one small entry per node the kernel knows, freed with the node.

// metaEntry is a node's cached view of its metaXattr.
type metaEntry struct {
	m  meta
	ok bool // the entry has metaXattr; false: the backing stat's mode and owner apply
	// canonical: the backing entry has its canonical mode and (for a root
	// daemon) owner, so a chmod or chown only needs to rewrite metaXattr.
	// It never turns false again while metaXattr is in use.
	canonical bool
	id        []byte // the entry ID the record is bound to (authenticated metadata), nil when not known yet
	// placed is the last entry the record was checked to name
	// (checkEntry), so that the kernel's next lookup there, and each
	// READDIRPLUS, costs a comparison instead of an HMAC. A record written
	// again keeps it only when it names the same entries.
	placed atomic.Pointer[Place]
}

// storedMeta returns n's stored mode and owner and, on a volume with
// authenticated metadata, the entry ID the record was checked against:
// from the cache, or read from metaXattr through fd (when >= 0) or path of
// a regular file or directory (dir), with the keys k (nil: the gate's). st,
// when not nil, is a stat of the backing entry taken before this call and
// marks the entry canonical. A record that fails authentication is an
// error and is not cached, so every later request fails too.
//
// A reader caches what it read only if no writer stored a value since it
// looked (CompareAndSwap with the entry it started from), so a read that
// raced with setMetaAttr can never leave the older value behind.
func (n *Node) storedMeta(k *Keys, fd int, path string, st *unix.Statx_t, dir bool) (meta, bool, []byte, error) {
	if e := n.meta.Load(); e != nil {
		return e.m, e.ok, e.id, nil
	}
	nc, rel, errno := n.fsys.metaCodec(k)
	if errno != 0 {
		return meta{}, false, nil, errno
	}
	defer rel()
	var id []byte
	m, ok, err := n.fsys.readMeta(nc, fd, path, dir, &id)
	if err != nil {
		return meta{}, false, nil, err
	}
	ne := &metaEntry{m: m, ok: ok, id: id}
	if ok && st != nil {
		ne.canonical = n.fsys.isCanonical(st)
	}
	n.meta.CompareAndSwap(nil, ne)
	return m, ok, id, nil
}

// isCanonical reports whether the backing stat st shows the canonical mode
// and owner of an entry that keeps its own in metaXattr.
func (f *FS) isCanonical(st *unix.Statx_t) bool {
	if uint32(st.Mode)&07777 != canonicalMode(uint32(st.Mode)) {
		return false
	}
	return !f.euidRoot || (st.Uid == f.euid && st.Gid == f.egid)
}

// canonicalStat returns a stat that stands for n's backing entry when the
// cache knows it is canonical (what canonicalize would compare against), so
// a chmod or chown does not need a statx of its own.
func (n *Node) canonicalStat() (unix.Statx_t, bool) {
	e := n.meta.Load()
	if e == nil || !e.ok || !e.canonical {
		return unix.Statx_t{}, false
	}
	typ := n.StableAttr().Mode & unix.S_IFMT
	var st unix.Statx_t
	st.Mode = uint16(typ | canonicalMode(typ))
	st.Uid, st.Gid = n.fsys.euid, n.fsys.egid
	return st, true
}

// writeNodeMeta is writeMeta for n's own backing entry (whose ID is id
// when the caller knows it), keeping the cache exact: on success it holds
// m, and after a failure (which may have changed metaXattr or not) it is
// dropped so the next reader asks the backing entry.
func (n *Node) writeNodeMeta(nc *names.Codec, fd int, path string, st *unix.Statx_t, m meta, id []byte) error {
	err := n.fsys.writeMeta(nc, fd, path, st, m, id)
	if err != nil {
		n.meta.Store(nil)
		return err
	}
	ne := &metaEntry{m: m, ok: true, canonical: true, id: id}
	if old := n.meta.Load(); old != nil && old.ok && old.m.bind == m.bind {
		// A chmod or chown keeps the entries the record names, so what
		// checkEntry found of the old record holds for the new one.
		if p := old.placed.Load(); p != nil {
			ne.placed.Store(p)
		}
	}
	n.meta.Store(ne)
	return nil
}

// rewriteNodeMeta is writeNodeMeta for n's entry at path without a stat
// of it from the caller: the cache's canonical one, else a statx.
func (n *Node) rewriteNodeMeta(nc *names.Codec, path string, m meta, id []byte) error {
	st, known := n.canonicalStat()
	if !known {
		if err := statxAt(unix.AT_FDCWD, path, &st); err != nil {
			return err
		}
	}
	return n.writeNodeMeta(nc, -1, path, &st, m, id)
}

// fillAttrMeta is fillAttr plus the plaintext mode and owner: from
// metaXattr of a regular file or directory (cached; read through fd when
// >= 0, else path, with the keys k or the gate's), otherwise the backing
// stat's. A stored mode and owner that fail authentication are logged and
// answered with EIO.
func (n *Node) fillAttrMeta(k *Keys, st *unix.Statx_t, fd int, path string, a *fuse.Attr) syscall.Errno {
	n.fsys.fillAttr(st, a)
	if !hasMeta(uint32(st.Mode)) || !n.fsys.metaEnabled() {
		return 0
	}
	m, ok, _, err := n.storedMeta(k, fd, path, st, uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return n.fsys.metaErrno(err, "getattr", fd, path)
	}
	if ok {
		a.Mode = uint32(st.Mode)&unix.S_IFMT | m.mode
		a.Owner = fuse.Owner{Uid: m.uid, Gid: m.gid}
	}
	return 0
}
