package fusefs

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// Authenticated metadata (volume header version 3): the record of meta
// followed by a tag that binds it to the entry's identity, its file ID
// (regular files) or directory ID (directories). Without the tag anyone
// who can write the backing directory could hand a file to another user
// or make it set-user-ID; with it a changed field, or a record copied from
// another entry, is reported instead of shown.
//
// Version 3 of the record (header version 5) adds the entries it names
// (entrybind.go) between the fields and the tag: a count (0, 1 or 2) and
// that many entry tags.
const (
	metaVersionAuth  = 2
	metaLenAuth      = metaLen + names.MetaTagLen
	metaVersionBound = 3
	metaLenMax       = metaLen + 1 + maxBindSlots*names.EntryTagLen + names.MetaTagLen
)

// errMetaAuth: the stored mode and owner are missing, malformed, changed
// or belong to another entry.
var errMetaAuth = errors.New("stored mode and owner failed authentication (changed, removed, or copied from another entry)")

// errMetaMalformed: a record's fields are out of range.
var errMetaMalformed = errors.New("malformed record")

// encodeMetaAuth returns the version 2 metaXattr value of m for the entry
// whose file or directory ID is id, or version 3 (with m.bind) on a volume
// that binds entries.
func encodeMetaAuth(nc *names.Codec, id []byte, m meta) ([]byte, error) {
	b := make([]byte, metaLen, metaLenMax)
	b[0] = metaVersionAuth
	if nc.BindEntries() {
		b[0] = metaVersionBound
		b = append(b, byte(m.bind.n))
		for i := range m.bind.n {
			b = append(b, m.bind.slots[i][:]...)
		}
	}
	binary.BigEndian.PutUint32(b[1:], m.mode&07777)
	binary.BigEndian.PutUint32(b[5:], m.uid)
	binary.BigEndian.PutUint32(b[9:], m.gid)
	tag, err := nc.MetaTag(id, b)
	if err != nil {
		return nil, err
	}
	return append(b, tag...), nil
}

// decodeMetaAuth checks and parses a version 2 metaXattr value of the
// entry whose ID is id.
func decodeMetaAuth(nc *names.Codec, id, b []byte) (meta, error) {
	want, version := metaLenAuth, metaVersionAuth
	if nc.BindEntries() {
		version = metaVersionBound
		want = -1
		if len(b) > metaLen && int(b[metaLen]) <= maxBindSlots {
			want = metaLen + 1 + int(b[metaLen])*names.EntryTagLen + names.MetaTagLen
		}
	}
	if len(b) != want || b[0] != byte(version) {
		return meta{}, fmt.Errorf("%w: %d bytes of version %d, not a version %d record", errMetaAuth, len(b), firstByte(b), version)
	}
	body := len(b) - names.MetaTagLen
	tag, err := nc.MetaTag(id, b[:body])
	if err != nil {
		return meta{}, err
	}
	if subtle.ConstantTimeCompare(tag, b[body:]) != 1 {
		return meta{}, errMetaAuth
	}
	m, err := parseRecord(b)
	if err != nil {
		return meta{}, fmt.Errorf("%w: %w", errMetaAuth, err)
	}
	if version == metaVersionBound {
		m.bind.n = int(b[metaLen])
		for i := range m.bind.n {
			copy(m.bind.slots[i][:], b[metaLen+1+i*names.EntryTagLen:])
		}
	}
	return m, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// entryID returns the identity the metadata of a regular file or
// directory (dir) is bound to: the file ID in its sector header, or its
// directory ID. It reads through fd when >= 0, else opens path (without
// following a final symlink). The file is read without updating its
// access time, which the mount shows as the plaintext one.
func entryID(fd int, path string, dir bool) ([]byte, error) {
	if fd >= 0 {
		if dir {
			return names.ReadDirID(fd)
		}
		// A read through fd would count as an access of the file.
		path = "/proc/self/fd/" + itoa(fd)
		fd = -1
	}
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if dir {
		flags |= unix.O_DIRECTORY | unix.O_NOFOLLOW
	} else if !isProcFD(path) {
		flags |= unix.O_NOFOLLOW
	}
	// A name in a directory descriptor (a lookup's path) is opened
	// relative to it: cheaper than resolving the /proc link.
	dirfd, name := splitFDPath(path)
	fd, err := openatNoAtime(dirfd, name, flags, 0, unix.O_NOATIME)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if dir {
		return names.ReadDirID(fd)
	}
	var b [sector.HeaderSize]byte
	n, err := unix.Pread(fd, b[:], 0)
	if err != nil {
		return nil, err
	}
	id, err := sector.ParseFileID(b[:n], path)
	if err != nil {
		// Only a failure needs the readable name (a readlink of /proc).
		return sector.ParseFileID(b[:n], realPath(path))
	}
	return id, nil
}

// splitFDPath turns "/proc/self/fd/N/name" into (N, name); any other
// path comes back as (AT_FDCWD, path).
func splitFDPath(path string) (int, string) {
	const p = "/proc/self/fd/"
	rest, ok := strings.CutPrefix(path, p)
	if !ok {
		return unix.AT_FDCWD, path
	}
	num, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return unix.AT_FDCWD, path
	}
	fd, err := strconv.Atoi(num)
	if err != nil || fd < 0 {
		return unix.AT_FDCWD, path
	}
	return fd, name
}

// isProcFD reports whether path names a descriptor itself
// (/proc/self/fd/N): that is a symlink that must be followed.
func isProcFD(path string) bool {
	const p = "/proc/self/fd/"
	if len(path) <= len(p) || path[:len(p)] != p {
		return false
	}
	for _, c := range path[len(p):] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// metaCodec returns the names codec that authenticates metadata: k's, or,
// for a caller without keys on a volume with authenticated metadata, the
// gate's if it is open (EIO if not). rel releases what it took.
func (f *FS) metaCodec(k *Keys) (*names.Codec, func(), syscall.Errno) {
	if k != nil {
		return k.Names, noRelease, 0
	}
	if !f.authMeta {
		return nil, noRelease, 0
	}
	k, rel := f.gate.tryAcquire()
	if k == nil {
		return nil, noRelease, syscall.EIO
	}
	return k.Names, rel, 0
}

func noRelease() {}

// metaErrno logs a failed read of the stored mode and owner and maps it.
func (f *FS) metaErrno(err error, op string, fd int, path string) syscall.Errno {
	if path == "" && fd >= 0 {
		path = "/proc/self/fd/" + itoa(fd)
	}
	return f.errno(err, op, path)
}

// writeFileHeader gives a new, empty backing file (open as fd) its sector
// header of c's version and returns the header and its file ID.
func writeFileHeader(fd int, c *sector.Cipher) (hdr, id []byte, err error) {
	h, err := sector.NewFileHeader(c)
	if err != nil {
		return nil, nil, err
	}
	if _, err := unix.Pwrite(fd, h, 0); err != nil {
		_ = unix.Ftruncate(fd, 0)
		return nil, nil, fmt.Errorf("write the file header: %w", err)
	}
	id, err = sector.ParseFileID(h, "")
	return h, id, err
}
