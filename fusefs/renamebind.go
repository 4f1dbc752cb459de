package fusefs

import (
	"cmp"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Rename on a volume that binds entries (entrybind.go): every regular file
// or directory the rename moves gets a record that names its old and its
// new entry before the backing rename, and one that names only the entry
// it ended at after it.

// move is one bound entry a rename moves.
type move struct {
	node     *Node // nil when the kernel holds no node for it
	dir      bool
	from, to Place
	// fromPath and toPath are its backing path before and after.
	fromPath, toPath string
	m                meta // its record, read before
	id               []byte
	// rebound: the record now names both entries and must be bound to
	// one again.
	rebound bool
}

// moves are the entries of one rename; release must be called.
type moves struct {
	f      *FS
	k      *Keys
	list   []*move
	locked []*Node
}

// prepareMoves checks and rebinds the entries that the rename of src to
// dst (flags) moves: the source, and with RENAME_EXCHANGE the destination
// too. sst and dstSt are their stats. An entry whose record does not name
// the entry it is renamed from is refused with EIO: it belongs to another
// name. The nodes of the entries stay locked (content) until release, so
// that no chmod or chown writes a record in between.
func (n *Node) prepareMoves(src, dst *childOp, np *Node, flags uint32, sst, dstSt *unix.Stat_t) (*moves, syscall.Errno) {
	ms := &moves{f: n.fsys, k: src.k}
	if !src.k.Names.BindEntries() || !n.fsys.metaEnabled() {
		return ms, 0
	}
	add := func(parent *Node, c, to *childOp, st *unix.Stat_t) {
		if !hasMeta(st.Mode) {
			return
		}
		mv := &move{dir: st.Mode&unix.S_IFMT == unix.S_IFDIR, from: c.place(), to: to.place(),
			fromPath: fdPath(c.d.fd, c.bname), toPath: fdPath(to.d.fd, to.bname)}
		if ch := parent.GetChild(c.name); ch != nil && ch.StableAttr().Ino == n.fsys.nodeIno(st.Dev, st.Ino) {
			mv.node, _ = ch.Operations().(*Node)
		}
		ms.list = append(ms.list, mv)
	}
	add(n, src, dst, sst)
	if flags&unix.RENAME_EXCHANGE != 0 {
		add(np, dst, src, dstSt)
	}
	ms.lock()
	for _, mv := range ms.list {
		if errno := ms.prepare(mv); errno != 0 {
			ms.release(false)
			return nil, errno
		}
	}
	return ms, 0
}

// lock takes the content locks of the moved nodes in address order, the
// order every holder of two of them uses.
func (ms *moves) lock() {
	for _, mv := range ms.list {
		if mv.node != nil && !slices.Contains(ms.locked, mv.node) {
			ms.locked = append(ms.locked, mv.node)
		}
	}
	slices.SortFunc(ms.locked, func(a, b *Node) int {
		return cmp.Compare(uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(b)))
	})
	for _, nd := range ms.locked {
		nd.content.Lock()
	}
}

// prepare reads mv's record, checks it names mv.from and writes it bound
// to both mv.from and mv.to. A record that is unbound (a hard-linked
// file) stays as it is.
func (ms *moves) prepare(mv *move) syscall.Errno {
	f := ms.f
	var err error
	if mv.node != nil {
		var ok bool
		mv.m, ok, mv.id, err = mv.node.storedMeta(ms.k, -1, mv.fromPath, nil, mv.dir)
		if err == nil && !ok {
			err = errMetaAuth
		}
	} else {
		mv.m, _, err = f.readMeta(ms.k.Names, -1, mv.fromPath, mv.dir, &mv.id)
	}
	if err != nil {
		return f.metaErrno(err, "rename", -1, mv.fromPath)
	}
	if mv.m.bind.n == 0 {
		return 0
	}
	if err := checkPlace(ms.k.Names, mv.m, mv.from); err != nil {
		f.errs.Add(1)
		f.log.Error().Str("op", "rename").Str("path", realPath(mv.fromPath)).Err(err).
			Msg("this file or directory belongs to another name; not renamed")
		return syscall.EIO
	}
	// Marked first: a failed write may have changed the record or not.
	mv.rebound = true
	if err := ms.write(mv, mv.fromPath, mv.from, mv.to); err != nil {
		return f.errno(err, "rename", "")
	}
	return 0
}

// write stores mv's record bound to ps through path.
func (ms *moves) write(mv *move, path string, ps ...Place) error {
	m, err := bound(ms.k.Names, mv.m, ps...)
	if err != nil {
		return err
	}
	if mv.node != nil {
		return mv.node.rewriteNodeMeta(ms.k.Names, path, m, mv.id)
	}
	var st unix.Statx_t
	if err := statxAt(unix.AT_FDCWD, path, &st); err != nil {
		return err
	}
	return ms.f.writeMeta(ms.k.Names, -1, path, &st, m, mv.id)
}

// release binds each moved entry to the one entry it is at now (renamed:
// whether the backing rename happened) and unlocks the nodes. A failure
// is logged: the record then still names both entries, and the entry
// reads under its new name.
func (ms *moves) release(renamed bool) {
	for _, mv := range ms.list {
		if !mv.rebound {
			continue
		}
		path, p := mv.fromPath, mv.from
		if renamed {
			path, p = mv.toPath, mv.to
		}
		if err := ms.write(mv, path, p); err != nil {
			ms.f.log.Warn().Str("op", "rename").Str("path", realPath(path)).Err(err).
				Msg("cannot bind a renamed entry to its name alone; its record still names its old name too")
		}
	}
	for _, nd := range ms.locked {
		nd.content.Unlock()
	}
	ms.list, ms.locked = nil, nil
}

// unbindForLink makes the record of regular file n (at backing path p,
// the entry at) unbound before link gives it a second name: no record can
// name every name of a hard-linked file, so it is bound to its file ID
// only from then on (docs/threat-model.md). rebind binds it to at again
// when the link fails.
func (n *Node) unbindForLink(k *Keys, p string, at Place) (rebind func(), errno syscall.Errno) {
	noop := func() {}
	if !k.Names.BindEntries() || !n.fsys.metaEnabled() || n.StableAttr().Mode != unix.S_IFREG {
		return noop, 0
	}
	n.content.Lock()
	defer n.content.Unlock()
	m, ok, id, err := n.storedMeta(k, -1, p, nil, false)
	if err == nil && !ok {
		err = errMetaAuth
	}
	if err != nil {
		return noop, n.fsys.metaErrno(err, "link", -1, p)
	}
	if m.bind.n == 0 {
		return noop, 0
	}
	was := m
	m.bind = binding{}
	if err := n.rewriteNodeMeta(k.Names, p, m, id); err != nil {
		return noop, n.fsys.errno(err, "link", "")
	}
	return func() {
		n.content.Lock()
		defer n.content.Unlock()
		if err := n.rewriteNodeMeta(k.Names, p, was, id); err != nil {
			n.fsys.log.Warn().Str("op", "link").Str("path", realPath(p)).Err(err).
				Msg("cannot bind a file to its name again after a failed link; it stays bound to its file ID only")
		}
	}, 0
}
