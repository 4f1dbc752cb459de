package volume

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
)

// writeRootMeta stores the backing root's own mode and owner as its
// authenticated metadata (header version 3): on such a volume every
// directory carries a record bound to its ID, the root too, so a mount
// can refuse a directory whose record is missing. The root has no name:
// on a volume that binds entries its record is unbound. rootID is the root's
// directory ID; dfd is the root, open. A backing file system without user
// extended attributes keeps the mirrored mode, as the mount does.
func writeRootMeta(dfd int, h *keywrap.Header, namesKey *keywrap.Key, plaintext bool, rootID []byte) error {
	nc, err := names.NewCodec(namesKey, plaintext)
	if err != nil {
		return err
	}
	defer nc.Close()
	useFormat(h, nil, nc)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return fmt.Errorf("root mode and owner: %w", err)
	}
	val, err := fusefs.EncodeMetaFor(nc, rootID, nil, st.Mode&0o7777, st.Uid, st.Gid)
	if err != nil {
		return fmt.Errorf("root mode and owner: %w", err)
	}
	if err := unix.Fsetxattr(dfd, fusefs.MetaXattr, val, 0); err != nil && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("root mode and owner: %w", err)
	}
	return nil
}
