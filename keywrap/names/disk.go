package names

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
)

// DirIDFile is the per-directory ID file, present in every backing directory
// including the root. It holds exactly DirIDLen random bytes and nothing else
// (no version byte: the volume header's version covers the whole format).
const DirIDFile = "encvol.dirid"

// DirIDLen is the size of a directory ID.
const DirIDLen = 16

// LongNamePrefix starts the backing name of an entry whose encoded name is
// longer than NameMax: LongNamePrefix + base64url(sha256(encoded)) (59
// bytes). The encoded name itself is kept in the side file of that name plus
// LongNameSuffix.
const (
	LongNamePrefix = "encvol.longname."
	LongNameSuffix = ".name"
)

const (
	longHashLen  = 43    // base64url without padding of 32 bytes
	metaFileMode = 0o600 // never more than the daemon's user: the backing shows no plaintext permissions
	maxSideFile  = maxEncodedName
)

func longNameFor(encoded string) string {
	sum := sha256.Sum256([]byte(encoded))
	return LongNamePrefix + b64.EncodeToString(sum[:])
}

// IsLongName reports whether backingName is the hashed backing name of a
// long name (not its side file).
func IsLongName(backingName string) bool {
	h, ok := strings.CutPrefix(backingName, LongNamePrefix)
	if !ok || len(h) != longHashLen {
		return false
	}
	_, err := decodeB64(h)
	return err == nil
}

// IsReserved reports whether a backing entry belongs to encvol itself and must
// not appear in directory listings of an encrypted-names volume: the header,
// directory ID files, long-name side files and temporary files. (Regular
// encrypted names never contain '.', so they cannot collide with these.)
func IsReserved(backingName string) bool {
	if IsReservedPlaintext(backingName) {
		return true
	}
	if b, ok := strings.CutSuffix(backingName, LongNameSuffix); ok && IsLongName(b) {
		return true
	}
	if backingName == LongLinkDir {
		return true
	}
	return false
}

// IsReservedPlaintext reports whether a name is reserved in a
// plaintext-names volume: the header, the directory ID file, the marker of
// an unfinished copy and temporary files (names starting with
// keywrap.TempPrefix). Users cannot create these.
func IsReservedPlaintext(name string) bool {
	return name == keywrap.HeaderFile || name == DirIDFile || name == keywrap.IncompleteFile || strings.HasPrefix(name, keywrap.TempPrefix)
}

// IsReserved is the mode-aware variant that readdir should use.
func (c *Codec) IsReserved(backingName string) bool {
	if c.plaintext {
		return IsReservedPlaintext(backingName)
	}
	return IsReserved(backingName)
}

// testHook, when set by tests, runs at named points of the atomic writers so a
// test can fail or inspect them mid-way.
var testHook func(stage string, dirfd int, tmp string) error

// writeAtomicAt creates name in dirfd with data: temp file, fsync, rename,
// fsync of the directory. With noReplace an existing name is left alone and
// the call fails with EEXIST.
func writeAtomicAt(dirfd int, name string, data []byte, noReplace bool) (err error) {
	tmp, err := keywrap.TempName()
	if err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, metaFileMode)
	if err != nil {
		return fmt.Errorf("create temp %s: %w", tmp, err)
	}
	renamed := false
	defer func() {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		if !renamed {
			_ = unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			return fmt.Errorf("write temp %s: %w", tmp, err)
		}
		data = data[n:]
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync temp %s: %w", tmp, err)
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return fmt.Errorf("close temp %s: %w", tmp, err)
	}
	if testHook != nil {
		if err := testHook("before-rename", dirfd, tmp); err != nil {
			return err
		}
	}
	if noReplace {
		err = unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// File systems without RENAME_NOREPLACE: link fails on an
			// existing name just the same.
			if err = unix.Linkat(dirfd, tmp, dirfd, name, 0); err == nil {
				_ = unix.Unlinkat(dirfd, tmp, 0)
				renamed = true
			}
		} else if err == nil {
			renamed = true
		}
	} else if err = unix.Renameat(dirfd, tmp, dirfd, name); err == nil {
		renamed = true
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, name, err)
	}
	if err := unix.Fsync(dirfd); err != nil {
		return fmt.Errorf("fsync directory after creating %s: %w", name, err)
	}
	return nil
}

// readSmallAt reads a small metadata file without updating its access
// time where the caller may ask for that (its owner, or root): copies,
// snapshots and checks read volumes that they must leave as they were.
func readSmallAt(dirfd int, name string, limit int) ([]byte, error) {
	const flags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, limit+1)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

// CreateDirID writes a new random directory ID file into the directory open
// as dirfd and returns the ID. The file appears only complete: it is written
// to a temporary name, fsynced, renamed into place without replacing an
// existing ID (EEXIST), and the directory is fsynced, so a crash leaves either
// no ID file or a complete one — never an empty one. The caller must also
// fsync the parent of a new directory to make the directory itself durable.
func CreateDirID(dirfd int) ([]byte, error) {
	id := make([]byte, DirIDLen)
	for {
		if _, err := io.ReadFull(rand.Reader, id); err != nil {
			return nil, fmt.Errorf("create %s: %w", DirIDFile, err)
		}
		if !allZero(id) { // all-zero is how ReadDirID recognises a zeroed file
			break
		}
	}
	if err := writeAtomicAt(dirfd, DirIDFile, id, true); err != nil {
		return nil, fmt.Errorf("create %s: %w", DirIDFile, err)
	}
	return id, nil
}

// ReadDirID reads the directory ID of the directory open as dirfd. A file of
// the wrong size or all zero bytes fails with ErrDirIDCorrupt; a missing file
// with an error satisfying errors.Is(err, fs.ErrNotExist).
func ReadDirID(dirfd int) ([]byte, error) {
	b, err := readSmallAt(dirfd, DirIDFile, DirIDLen)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", DirIDFile, err)
	}
	if len(b) != DirIDLen {
		return nil, wrap(ErrDirIDCorrupt, "%s has %s bytes, want %d", DirIDFile, sizeString(len(b)), DirIDLen)
	}
	if allZero(b) {
		return nil, wrap(ErrDirIDCorrupt, "%s is all zero", DirIDFile)
	}
	return b, nil
}

func sizeString(n int) string {
	if n > DirIDLen {
		return fmt.Sprintf("more than %d", DirIDLen)
	}
	return fmt.Sprint(n)
}

func allZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

// WriteLongName stores the full encoded name of long name backing in its side
// file (backing + LongNameSuffix) atomically, fsyncing the file and the
// directory. Write it before creating the entry itself, so that an entry never
// exists without its name. An existing side file is replaced (its content
// can only be the same, since backing is the hash of full).
func WriteLongName(dirfd int, backing, full string) error {
	if !IsLongName(backing) || longNameFor(full) != backing {
		return wrap(ErrInvalidName, "long name %q does not match its encoded name", clip(backing))
	}
	if err := writeAtomicAt(dirfd, backing+LongNameSuffix, []byte(full), false); err != nil {
		return fmt.Errorf("write long name side file %s%s: %w", backing, LongNameSuffix, err)
	}
	return nil
}

// ReadLongName returns the full encoded name stored for the long name backing
// and checks that it hashes to backing (ErrNameAuth otherwise: a side file
// swapped or edited). Pass the result to DecryptName.
func ReadLongName(dirfd int, backing string) (string, error) {
	if !IsLongName(backing) {
		return "", wrap(ErrInvalidName, "%q is not a long name", clip(backing))
	}
	side := backing + LongNameSuffix
	b, err := readSmallAt(dirfd, side, maxSideFile)
	if err != nil {
		return "", fmt.Errorf("read long name side file %s: %w", side, err)
	}
	if len(b) > maxSideFile {
		return "", wrap(ErrNameAuth, "side file %s larger than %d bytes", side, maxSideFile)
	}
	full := string(b)
	if longNameFor(full) != backing {
		return "", wrap(ErrNameAuth, "side file %s does not match its entry", side)
	}
	return full, nil
}

// RemoveLongName deletes the side file of a long name; a missing side file is
// not an error. Remove it after the entry, so a crash leaves at most an
// orphaned side file (hidden by IsReserved), never a nameless entry.
func RemoveLongName(dirfd int, backing string) error {
	if !IsLongName(backing) {
		return wrap(ErrInvalidName, "%q is not a long name", clip(backing))
	}
	if err := unix.Unlinkat(dirfd, backing+LongNameSuffix, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove long name side file %s%s: %w", backing, LongNameSuffix, err)
	}
	return nil
}
