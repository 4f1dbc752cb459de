package volume

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap/names"
)

// On a volume that binds entries (format version 5) the record of every
// regular file and directory names the entry it stands at. A repair that
// moves an entry, gives a directory a new ID or writes a fresh record
// binds the record to where the entry is afterwards, as the mount would.

// placeAt returns the entry that backing entry bname of the directory dfd
// stands for: nil for a regular file with more than one link (unbound).
func (r *repairer) placeAt(dfd int, bname string) (*fusefs.Place, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, bname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
		return nil, nil
	}
	id, err := names.ReadDirID(dfd)
	if err != nil {
		return nil, fmt.Errorf("the directory ID of the entry's directory: %w", err)
	}
	plain, err := r.fk.src.decodeName(&backingDir{fd: dfd, id: id}, bname)
	if err != nil {
		return nil, err
	}
	return &fusefs.Place{DirID: id, Name: plain}, nil
}

// placeOfRel is placeAt for the backing entry rel of the root ("" or
// "." is the root itself, which is unbound).
func (r *repairer) placeOfRel(rel string) (*fusefs.Place, error) {
	rel = strings.Trim(rel, "/")
	if rel == "" || rel == "." {
		return nil, nil
	}
	dir, name := path.Split(rel)
	dfd, err := r.openDir(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	return r.placeAt(dfd, name)
}

// rebind binds the record of the regular file or directory bname of dfd
// to at (nil: unbound), keeping its mode and owner. A record that does not
// authenticate is reset to 0600/0700 and this user, bound to at.
func (r *repairer) rebind(dfd int, bname string, dir bool, at *fusefs.Place) error {
	nc := r.keys.Names
	if !nc.BindEntries() {
		return nil
	}
	p := procPath(dfd, bname)
	b, err := fusefs.GetXattr(p, fusefs.MetaXattr)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	var val []byte
	if err == nil {
		var id []byte
		if id, err = fusefs.EntryID(-1, p, dir); err == nil {
			val, err = fusefs.RebindMeta(nc, id, b, at)
		}
	}
	if err != nil {
		return r.writeFreshMeta(p, dir, at)
	}
	if err := unix.Lsetxattr(p, fusefs.MetaXattr, val, 0); err != nil {
		return fmt.Errorf("bind the mode and owner to the entry: %w", err)
	}
	return nil
}

// rebindChildren binds the records of the regular files and directories
// in dfd to the directory's current ID: after a plaintext-names volume's
// directory got a new ID its names still read, but their records name the
// old one.
func (r *repairer) rebindChildren(dfd int) error {
	if !r.keys.Names.BindEntries() {
		return nil
	}
	f, err := os.Open(procPath(dfd, "."))
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		if r.keys.Names.IsReserved(e.Name()) || (!e.Type().IsRegular() && !e.IsDir()) {
			continue
		}
		at, err := r.placeAt(dfd, e.Name())
		if err == nil {
			err = r.rebind(dfd, e.Name(), e.IsDir(), at)
		}
		if err != nil {
			return fmt.Errorf("bind %s to the new directory ID: %w", e.Name(), err)
		}
	}
	return nil
}

// writeFreshMeta gives the regular file or directory at p the stored mode
// 0600 or 0700 and this user, bound to at.
func (r *repairer) writeFreshMeta(p string, dir bool, at *fusefs.Place) error {
	mode := uint32(fusefs.BackingFileMode)
	if dir {
		mode = fusefs.BackingDirMode
	}
	val, _, err := fusefs.EncodeMetaAt(r.keys.Names, -1, p, dir, at, mode, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err == nil {
		err = unix.Lsetxattr(p, fusefs.MetaXattr, val, 0)
	}
	return err
}
