package fusefs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
)

// Only the user namespace is stored (names and values encrypted), except
// names under reservedXattrPrefix, which belong to encvol. Other
// namespaces (security, trusted, system ACLs) would need their plaintext
// on the backing file to mean anything there: reads report "no such
// attribute" and writes "not supported".
const userPrefix = "user."

// maxXattr bounds a backing value or list read; the kernel limit is 64 KiB.
const maxXattr = 1 << 17

// Getxattr returns a decrypted user.* attribute value.
func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.fsys.noXattr {
		return 0, syscall.ENOSYS // see MountOptions.NoXattr
	}
	if !strings.HasPrefix(attr, userPrefix) || strings.HasPrefix(attr, reservedXattrPrefix) {
		return 0, syscall.ENODATA
	}
	k, rel, errno := n.fsys.keys(ctx, "getxattr")
	if errno != 0 {
		return 0, errno
	}
	defer rel()
	p, prel, err := n.path(k)
	if err != nil {
		return 0, n.fsys.errno(err, "getxattr", "")
	}
	defer prel()
	stored, err := k.Names.EncryptXattrName(attr)
	if err != nil {
		return 0, n.fsys.errno(err, "getxattr", p)
	}
	sealed, err := lgetxattrAll(p, stored)
	if err != nil {
		return 0, n.fsys.errno(err, "getxattr", p)
	}
	entry, err := xattrEntry(k, p, n.IsDir())
	if err != nil {
		return 0, n.fsys.errno(err, "getxattr", p)
	}
	val, err := k.Names.OpenXattrValue(stored, entry, sealed)
	if err != nil {
		n.fsys.errs.Add(1)
		n.fsys.log.Error().Str("op", "getxattr").Str("path", p).Err(err).Msg("extended attribute failed authentication")
		return 0, syscall.EIO
	}
	if len(dest) == 0 {
		return uint32(len(val)), 0
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE
	}
	copy(dest, val)
	return uint32(len(val)), 0
}

func lgetxattrAll(path, name string) ([]byte, error) {
	for {
		sz, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		if sz > maxXattr {
			return nil, syscall.E2BIG
		}
		buf := make([]byte, sz)
		got, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, syscall.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, err
		}
		return buf[:got], nil
	}
}

// llistxattrAll returns the NUL-separated backing attribute names of path
// (not following a final symlink).
func llistxattrAll(path string) ([]byte, error) {
	for {
		sz, err := unix.Llistxattr(path, nil)
		if err != nil {
			return nil, err
		}
		if sz > maxXattr {
			return nil, syscall.E2BIG
		}
		raw := make([]byte, sz)
		got, err := unix.Llistxattr(path, raw)
		if errors.Is(err, syscall.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, err
		}
		return raw[:got], nil
	}
}

// Setxattr stores a user.* attribute with encrypted name and value.
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.fsys.noXattr {
		return syscall.ENOSYS
	}
	if !strings.HasPrefix(attr, userPrefix) {
		return syscall.EOPNOTSUPP
	}
	if strings.HasPrefix(attr, reservedXattrPrefix) {
		// encvol's own (the stored mode and owner live there).
		return syscall.EPERM
	}
	if len(attr) > 255 {
		return syscall.ERANGE
	}
	k, rel, errno := n.fsys.keys(ctx, "setxattr")
	if errno != 0 {
		return errno
	}
	defer rel()
	p, prel, err := n.path(k)
	if err != nil {
		return n.fsys.errno(err, "setxattr", "")
	}
	defer prel()
	stored, err := k.Names.EncryptXattrName(attr)
	if err != nil {
		return n.fsys.errno(err, "setxattr", p)
	}
	entry, err := xattrEntry(k, p, n.IsDir())
	if err != nil {
		return n.fsys.errno(err, "setxattr", p)
	}
	sealed, err := k.Names.SealXattrValue(stored, entry, data)
	if err != nil {
		return n.fsys.errno(err, "setxattr", p)
	}
	if err := unix.Lsetxattr(p, stored, sealed, int(flags)); err != nil {
		return n.fsys.errno(err, "setxattr", p)
	}
	return 0
}

// Removexattr deletes a user.* attribute.
func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.fsys.noXattr {
		return syscall.ENOSYS
	}
	if !strings.HasPrefix(attr, userPrefix) || strings.HasPrefix(attr, reservedXattrPrefix) {
		return syscall.ENODATA
	}
	k, rel, errno := n.fsys.keys(ctx, "removexattr")
	if errno != 0 {
		return errno
	}
	defer rel()
	p, prel, err := n.path(k)
	if err != nil {
		return n.fsys.errno(err, "removexattr", "")
	}
	defer prel()
	stored, err := k.Names.EncryptXattrName(attr)
	if err != nil {
		return n.fsys.errno(err, "removexattr", p)
	}
	if err := unix.Lremovexattr(p, stored); err != nil {
		return n.fsys.errno(err, "removexattr", p)
	}
	return 0
}

// Listxattr lists the decrypted user.* attribute names; stored names that
// do not decrypt are left out with a log line.
func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.fsys.noXattr {
		return 0, syscall.ENOSYS
	}
	k, rel, errno := n.fsys.keys(ctx, "listxattr")
	if errno != 0 {
		return 0, errno
	}
	defer rel()
	p, prel, err := n.path(k)
	if err != nil {
		return 0, n.fsys.errno(err, "listxattr", "")
	}
	defer prel()
	raw, err := llistxattrAll(p)
	if err != nil {
		return 0, n.fsys.errno(err, "listxattr", p)
	}
	var out []byte
	for _, s := range strings.Split(string(raw), "\x00") {
		if !strings.HasPrefix(s, userPrefix) || isOwnXattr(s) {
			continue
		}
		plain, err := k.Names.DecryptXattrName(s)
		if err != nil {
			n.fsys.log.Warn().Str("op", "listxattr").Str("path", p).Err(err).Msg("extended attribute name failed to decrypt; left out")
			continue
		}
		if strings.HasPrefix(plain, reservedXattrPrefix) {
			// Reserved names (set before they were reserved, or written
			// by encvol in plaintext-names mode) cannot be read: hide them.
			continue
		}
		out = append(out, plain...)
		out = append(out, 0)
	}
	if len(dest) == 0 {
		return uint32(len(out)), 0
	}
	if len(dest) < len(out) {
		return uint32(len(out)), syscall.ERANGE
	}
	copy(dest, out)
	return uint32(len(out)), 0
}

// xattrEntry is the entry ID a user attribute value of the regular file or
// directory (dir) at p is bound to on a volume with authenticated metadata;
// nil on older volumes, whose values are bound to their name only.
func xattrEntry(k *Keys, p string, dir bool) ([]byte, error) {
	if !k.Names.AuthMeta() {
		return nil, nil
	}
	id, err := entryID(-1, p, dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", names.ErrNameAuth, err)
	}
	return id, nil
}
