package kms

import (
	"fmt"
	"os"
	"path/filepath"
)

// ReadableByOthers reports whether users other than the owner of the file
// at path can read it: its group or other read bit is set and every
// directory on the way lets that class through. A file with loose bits
// inside a 0700 directory is as private as a 0600 one; a 0600 file is
// private wherever it is. The file's mode is returned for messages.
//
// Files that hold secrets (principals with secret access keys,
// configurations with them, passphrase files) are checked with it before
// use, as ssh checks its private keys.
func ReadableByOthers(path string) (bool, os.FileMode, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false, 0, fmt.Errorf("check permissions of %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return false, 0, fmt.Errorf("check permissions of %s: %w", path, err)
	}
	mode := fi.Mode().Perm()
	other, group := mode&0o004 != 0, mode&0o040 != 0
	for dir := filepath.Dir(abs); other || group; dir = filepath.Dir(dir) {
		di, err := os.Stat(dir)
		if err != nil {
			return false, mode, fmt.Errorf("check permissions of %s: %w", path, err)
		}
		dm := di.Mode().Perm()
		// Group members who cannot search as group may still search as
		// others; other users only as others.
		other = other && dm&0o001 != 0
		group = group && dm&0o011 != 0
		if dir == filepath.Dir(dir) {
			break
		}
	}
	return other || group, mode, nil
}

// privateDir makes an existing store directory 0700: one created by hand,
// by an older version or restored from a backup with loose permissions
// would let other users list the store and read its audit log.
func privateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("kms: store dir %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("kms: store dir %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil {
		return fmt.Errorf("kms: store dir %s is mode %04o and cannot be made private: %w", dir, fi.Mode().Perm(), err)
	}
	return nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsynced and renamed, then fsyncs the directory: a crash
// leaves the old file or the new one, never a torn one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, perm)
}
