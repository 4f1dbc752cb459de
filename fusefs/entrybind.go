package fusefs

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
)

// Entries bound to their name (header version 5). The metadata record of
// a regular file or directory (metaXattr) names the entry it belongs to:
// one entry tag (names.Codec.EntryTag of its directory's ID and its
// plaintext name), covered by the record's tag. A backing file or
// directory moved or copied to another name, or two swapped, then fails
// its lookup instead of showing its contents under the wrong name.
//
// A rename writes a record that names both the old and the new entry
// before the backing rename and one that names the new entry after it, so
// a crash in between leaves an entry that reads under either name. A hard
// link has more than one name and no record can name them all: link makes
// the record unbound first, and it stays unbound (bound to the file ID
// only). The root has no name and is unbound too.

// Place names an entry: the ID of its directory and its plaintext name.
// It is what a symlink target (names.LinkAAD) and the record of a regular
// file or directory are bound to.
type Place struct {
	DirID []byte
	Name  string
}

// ErrEntryMoved: a record authenticates but names another entry; the
// backing file or directory was moved or copied here from elsewhere.
var ErrEntryMoved = errors.New("this file or directory belongs to another name (moved or copied here in the backing directory)")

// maxBindSlots is the number of entries a record can name: two during a
// rename.
const maxBindSlots = 2

// binding is the entries a record names; n == 0 is an unbound record.
type binding struct {
	n     int
	slots [maxBindSlots][names.EntryTagLen]byte
}

// bindTo returns the binding that names the places ps (none: unbound).
func bindTo(nc *names.Codec, ps ...Place) (binding, error) {
	var b binding
	if len(ps) > maxBindSlots {
		return b, fmt.Errorf("a record names at most %d entries, not %d", maxBindSlots, len(ps))
	}
	for i, p := range ps {
		t, err := nc.EntryTag(p.DirID, p.Name)
		if err != nil {
			return b, err
		}
		copy(b.slots[i][:], t)
	}
	b.n = len(ps)
	return b, nil
}

// names reports whether b is unbound or names the entry whose tag is t.
func (b binding) names(t []byte) bool {
	if b.n == 0 {
		return true
	}
	ok := 0
	for i := range b.n {
		ok |= subtle.ConstantTimeCompare(b.slots[i][:], t)
	}
	return ok == 1
}

// checkPlace returns ErrEntryMoved unless the record m (authenticated) may
// stand at place p. On a volume that does not bind entries every record
// may.
func checkPlace(nc *names.Codec, m meta, p Place) error {
	if nc == nil || !nc.BindEntries() || m.bind.n == 0 {
		return nil
	}
	t, err := nc.EntryTag(p.DirID, p.Name)
	if err != nil {
		return err
	}
	if !m.bind.names(t) {
		return ErrEntryMoved
	}
	return nil
}

// bound returns m bound to the places ps on a volume that binds entries
// (m unchanged otherwise).
func bound(nc *names.Codec, m meta, ps ...Place) (meta, error) {
	if nc == nil || !nc.BindEntries() {
		return m, nil
	}
	b, err := bindTo(nc, ps...)
	if err != nil {
		return m, err
	}
	m.bind = b
	return m, nil
}

// checkEntry answers EIO (logged) when the stored record of n, a regular
// file or directory found as the entry c (stat'ed into st), names another
// entry. fillAttrMeta has read the record into n's cache just before.
func (n *Node) checkEntry(k *Keys, st *unix.Statx_t, c *childOp) syscall.Errno {
	if !k.Names.BindEntries() || !hasMeta(uint32(st.Mode)) || !n.fsys.metaEnabled() {
		return 0
	}
	e := n.meta.Load()
	if e == nil || !e.ok {
		// The record went away between the read and here (a concurrent
		// failed write dropped the cache): read it again.
		if _, _, _, err := n.storedMeta(k, -1, fdPath(c.d.fd, c.bname), st, uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR); err != nil {
			return n.fsys.metaErrno(err, "lookup", -1, fdPath(c.d.fd, c.bname))
		}
		if e = n.meta.Load(); e == nil || !e.ok {
			return 0
		}
	}
	if p := e.placed.Load(); p != nil && p.Name == c.name && bytes.Equal(p.DirID, c.d.id) {
		return 0
	}
	at := c.place()
	if err := checkPlace(k.Names, e.m, at); err != nil {
		n.fsys.errs.Add(1)
		n.fsys.log.Error().Str("op", "lookup").Str("path", realPath(fdPath(c.d.fd, c.bname))).Err(err).
			Msg("this file or directory belongs to another name")
		return syscall.EIO
	}
	e.placed.Store(&at)
	return 0
}
