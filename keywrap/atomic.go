package keywrap

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file encvol creates next to
// the file it will replace. Package names hides such names in directory
// listings, so a crash between create and rename leaves nothing visible.
const TempPrefix = "encvol.tmp."

// TempName returns a fresh temporary name for a file that will become base:
// TempPrefix + 16 random hex digits (base is deliberately not part of it, so
// an encrypted name's length cannot push the temp name over NAME_MAX).
func TempName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("temp name: %w", err)
	}
	return TempPrefix + hex.EncodeToString(b[:]), nil
}

// WriteFileAtomic replaces path with data: it writes a temporary file in the
// same directory, fsyncs it, renames it over path and fsyncs the directory.
// After a crash path holds either its old content or data, never a partial
// file; the temporary file is removed on every error path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	name, err := TempName()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := filepath.Join(dir, name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: create temp: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// The umask may have narrowed perm; the result must be exactly perm.
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: chmod temp: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync temp: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: close temp: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	if err = SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory so that creates, renames and unlinks in it are
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
