package fusefs

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Negative entries and the gate. A LOOKUP that finds nothing is answered
// with a negative entry (node ID 0 and an entry timeout), so that the
// kernel does not ask again for the same missing name: compilers, shells
// and loaders probe many. go-fuse's NegativeTimeout would do the same but
// keeps no record of the names, and a closing gate must take every cached
// answer back, "no such file" included: after the close a lookup must fail
// with EIO, not ENOENT. So this layer remembers each negative answer as
// (parent node ID, name) and the gate's invalidation (FS.InvalidateAll)
// sends an entry invalidation for each. The set is bounded: expired
// records are dropped when it is full, and when it is still full the
// answer is a plain ENOENT, which the kernel does not cache.
//
// The race with a closing gate. A reply is prepared, then written to the
// kernel after the handler returns; the gate may close in between. Two
// rules make every answer either invalidated or never cached:
//
//  1. An answer is cached only if the gate was open, with the same close
//     count, both when its request started and after its handler
//     returned. Otherwise its entry and attribute timeouts are zero (or,
//     for READDIRPLUS, whose entries cannot be edited once serialized,
//     the request fails with EIO), so the kernel asks again and meets the
//     closed gate. The check after the handler and the recording of a
//     negative answer happen under one lock that the invalidation also
//     takes, after the gate dropped its keys: either the record is made
//     before the invalidation reads the set (and is invalidated), or the
//     check sees the gate closed (and nothing is cached). For a positive
//     answer the node is in go-fuse's tree before the check, hence before
//     the invalidation walks the tree.
//  2. The invalidation of a name may reach the kernel before the reply
//     that created it: the kernel holds the parent directory's lock for
//     the whole LOOKUP (and READDIRPLUS), and an entry invalidation takes
//     that lock first, so it waits for the reply and then drops the new
//     entry. Pages are alike: an invalidation waits for the page lock a
//     READ in flight holds. Attributes carry a version: a GETATTR reply
//     older than an inode invalidation is not cached; SETATTR replies are
//     not versioned and get rule 1.

// maxNegative bounds the remembered negative entries: at most about
// 2.5 MiB with names of the full 255 bytes, far less with usual names.
const maxNegative = 8192

// negativeSlack keeps a record a little past the timeout the kernel got:
// the kernel starts its clock when the reply arrives, after the record.
const negativeSlack = time.Second

type negKey struct {
	parent uint64
	name   string
}

// entryFS answers missing names with negative entries and keeps replies
// prepared across a gate close out of the kernel's caches.
type entryFS struct {
	fuse.RawFileSystem
	gate    *Gate
	timeout time.Duration // negative entry timeout; 0: none cached
	server  atomic.Pointer[fuse.Server]

	mu  sync.Mutex
	neg map[negKey]time.Time // GUARDED_BY(mu): expiry of each negative entry
}

func newEntryFS(inner fuse.RawFileSystem, g *Gate, timeout time.Duration) *entryFS {
	return &entryFS{RawFileSystem: inner, gate: g, timeout: timeout, neg: make(map[negKey]time.Time)}
}

func (e *entryFS) Init(s *fuse.Server) {
	e.server.Store(s)
	e.RawFileSystem.Init(s)
}

// start returns the close count a request begins under.
func (e *entryFS) start() uint64 {
	n, _ := e.gate.epoch()
	return n
}

// stable reports whether the gate stayed open since start (rule 1).
func (e *entryFS) stable(start uint64) bool {
	n, open := e.gate.epoch()
	return open && n == start
}

// settle makes out uncacheable unless the gate stayed open.
func (e *entryFS) settle(start uint64, out *fuse.EntryOut) {
	if !e.stable(start) {
		out.EntryValid, out.EntryValidNsec = 0, 0
		out.AttrValid, out.AttrValidNsec = 0, 0
	}
}

func (e *entryFS) settleAttr(start uint64, out *fuse.AttrOut) {
	if !e.stable(start) {
		out.AttrValid, out.AttrValidNsec = 0, 0
	}
}

func (e *entryFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.Lookup(c, h, name, out)
	switch {
	case st.Ok():
		e.settle(s, out)
	case st == fuse.ENOENT && e.timeout > 0 && name != "." && name != "..":
		if e.remember(s, h.NodeId, name) {
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(e.timeout)
			return fuse.OK
		}
	}
	return st
}

// remember records a negative answer if the gate stayed open and the set
// has room.
func (e *entryFS) remember(start, parent uint64, name string) bool {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.stable(start) {
		return false
	}
	k := negKey{parent, name}
	if _, ok := e.neg[k]; !ok && len(e.neg) >= maxNegative {
		for o, exp := range e.neg {
			if now.After(exp) {
				delete(e.neg, o)
			}
		}
		if len(e.neg) >= maxNegative {
			return false
		}
	}
	e.neg[k] = now.Add(e.timeout + negativeSlack)
	return true
}

// forget drops the record of a name that now exists: the kernel turned
// its negative entry into the new one.
func (e *entryFS) forget(parent uint64, name string) {
	e.mu.Lock()
	delete(e.neg, negKey{parent, name})
	e.mu.Unlock()
}

// invalidate makes the kernel drop every negative entry it may still hold.
// Called by FS.InvalidateAll after the gate dropped its keys; never from
// a request handler.
func (e *entryFS) invalidate() {
	e.mu.Lock()
	old := e.neg
	e.neg = make(map[negKey]time.Time)
	e.mu.Unlock()
	srv := e.server.Load()
	if srv == nil {
		return
	}
	now := time.Now()
	for k, exp := range old {
		if now.Before(exp) {
			srv.EntryNotify(k.parent, k.name)
		}
	}
}

func (e *entryFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.Mknod(c, in, name, out)
	e.created(s, st, in.NodeId, name, out)
	return st
}

func (e *entryFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.Mkdir(c, in, name, out)
	e.created(s, st, in.NodeId, name, out)
	return st
}

func (e *entryFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.Symlink(c, h, target, name, out)
	e.created(s, st, h.NodeId, name, out)
	return st
}

func (e *entryFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.Link(c, in, name, out)
	e.created(s, st, in.NodeId, name, out)
	return st
}

func (e *entryFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.Create(c, in, name, out)
	e.created(s, st, in.NodeId, name, &out.EntryOut)
	return st
}

func (e *entryFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	st := e.RawFileSystem.Rename(c, in, oldName, newName)
	if st.Ok() {
		e.forget(in.Newdir, newName)
	}
	return st
}

// created settles the reply of a call that made name in parent.
func (e *entryFS) created(start uint64, st fuse.Status, parent uint64, name string, out *fuse.EntryOut) {
	if st.Ok() {
		e.forget(parent, name)
		e.settle(start, out)
	}
}

func (e *entryFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.ReadDirPlus(c, in, out)
	if st.Ok() && !e.stable(s) {
		// The nodes go-fuse added for these entries stay known until
		// unmount; the kernel never learns of them.
		return fuse.EIO
	}
	return st
}

func (e *entryFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.GetAttr(c, in, out)
	if st.Ok() {
		e.settleAttr(s, out)
	}
	return st
}

func (e *entryFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	s := e.start()
	st := e.RawFileSystem.SetAttr(c, in, out)
	if st.Ok() {
		e.settleAttr(s, out)
	}
	return st
}
