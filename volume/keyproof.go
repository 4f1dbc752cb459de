package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// maxProofEntries bounds how many backing entries proveDataKey reads: one
// that authenticates is proof, and a foreign key fails on every one.
const maxProofEntries = 16

// errForeignKey: entries of the backing directory do not authenticate
// under the data key, and none does.
var errForeignKey = errors.New("the data key does not open the files of this volume")

// proveDataKey looks in the backing directory for evidence that sub (the
// subkeys of a data key, with h the header that wraps it) belongs to this
// volume. Names and sectors are authenticated under subkeys of the data
// key, so one entry of the root directory whose encrypted name decrypts
// (or, with plaintext names, one sector that authenticates) proves it,
// while a foreign data key fails on all of them. It returns how it was
// proved, "" when the volume holds nothing to check (an empty volume, or
// a lost root directory ID), or errForeignKey.
func proveDataKey(backing string, h *keywrap.Header, sub *keywrap.Subkeys) (string, error) {
	ents, err := os.ReadDir(backing)
	if err != nil {
		return "", fmt.Errorf("read backing directory %s: %w", backing, err)
	}
	if h.NameMode == NameModePlaintext {
		return proveBySectors(backing, h, sub, ents)
	}
	dfd, err := unix.Open(backing, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open backing directory %s: %w", backing, err)
	}
	defer unix.Close(dfd)
	dirID, err := names.ReadDirID(dfd)
	if err != nil {
		return "", nil // no directory ID: the names cannot be checked
	}
	codec, err := names.NewCodec(sub.Names, false)
	if err != nil {
		return "", err
	}
	defer codec.Close()
	tried := 0
	for _, e := range ents {
		if tried == maxProofEntries {
			break
		}
		name := e.Name()
		if names.IsReserved(name) {
			continue
		}
		enc := name
		if names.IsLongName(name) {
			if enc, err = names.ReadLongName(dfd, name); err != nil {
				continue
			}
		}
		tried++
		if _, err := codec.DecryptName(dirID, enc); err == nil {
			return fmt.Sprintf("its data key decrypts the names in %s", backing), nil
		}
	}
	if tried > 0 {
		return "", errForeignKey
	}
	return "", nil
}

// proveBySectors reads the first sector of up to maxProofEntries regular
// files of the root directory.
func proveBySectors(backing string, h *keywrap.Header, sub *keywrap.Subkeys, ents []os.DirEntry) (string, error) {
	c, err := sector.NewCipher(sub.Content, h.SectorSize)
	if err != nil {
		return "", err
	}
	defer c.Close()
	useFormat(h, c, nil)
	tried := 0
	for _, e := range ents {
		if tried == maxProofEntries {
			break
		}
		if !e.Type().IsRegular() || names.IsReservedPlaintext(e.Name()) {
			continue
		}
		ok, checked := firstSectorOpens(filepath.Join(backing, e.Name()), h.SectorSize, c)
		if ok {
			return fmt.Sprintf("its data key decrypts the file contents in %s", backing), nil
		}
		if checked {
			tried++
		}
	}
	if tried > 0 {
		return "", errForeignKey
	}
	return "", nil
}

// firstSectorOpens reads one byte of the file through c. checked is false
// when the file says nothing about the key (empty, or unreadable for
// another reason than authentication).
func firstSectorOpens(path string, sectorSize int, c *sector.Cipher) (ok, checked bool) {
	f, err := os.Open(path)
	if err != nil {
		return false, false
	}
	defer f.Close()
	sf, err := sector.NewFile(f, sectorSize)
	if err != nil {
		return false, false
	}
	var b [1]byte
	n, err := sf.ReadAt(c, b[:], 0)
	switch {
	case n == 1:
		return true, true
	case errors.Is(err, sector.ErrAuth):
		return false, true
	}
	return false, false
}
