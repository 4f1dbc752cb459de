package names

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Long symlink targets. A symlink target may be 4095 bytes (PATH_MAX - 1),
// but its encrypted form is a third longer plus 28 bytes of nonce and tag,
// and a backing symlink holds at most 4095. Encrypted forms that do not fit
// are stored in a side file under LongLinkDir at the root of the backing
// directory, named by the SHA-256 of its content, and the backing symlink
// points there by name. The side files sit at the root, not beside the
// symlink, so renaming a symlink (to any directory) never has to move
// them; the hash makes a swapped or edited side file fail like a tampered
// target.

// LongLinkDir holds the encrypted targets too long for a backing symlink.
const LongLinkDir = "encvol.links"

// longLinkPrefix starts the backing symlink target that refers to a side
// file. Encrypted targets are base64url and never contain '.'.
const longLinkPrefix = "encvol.longlink."

// maxStoredLink bounds an encrypted target: base64url of nonce, 4095
// bytes of target and tag.
var maxStoredLink = b64.EncodedLen(gcmNonceLen + symlinkMax + gcmTagLen)

// IsLongLink reports whether a backing symlink target refers to a side file.
func IsLongLink(backingTarget string) bool {
	h, ok := strings.CutPrefix(backingTarget, longLinkPrefix)
	return ok && len(h) == b64.EncodedLen(sha256.Size) && !strings.ContainsAny(h, "./")
}

func longLinkName(stored string) string {
	sum := sha256.Sum256([]byte(stored))
	return b64.EncodeToString(sum[:])
}

// StoreLink returns what to store as the backing symlink target for the
// encrypted target stored: stored itself when it fits a symlink, else a
// reference to a side file that it writes (atomically, fsynced) under
// LongLinkDir of the backing root rootfd. Create the symlink after it, and
// RemoveLink if that fails.
func StoreLink(rootfd int, stored string) (string, error) {
	if len(stored) <= symlinkMax {
		return stored, nil
	}
	if len(stored) > maxStoredLink {
		return "", wrap(ErrNameTooLong, "encrypted symlink target of %d bytes", len(stored))
	}
	if err := unix.Mkdirat(rootfd, LongLinkDir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("create %s: %w", LongLinkDir, err)
	}
	dfd, err := unix.Openat(rootfd, LongLinkDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", LongLinkDir, err)
	}
	defer unix.Close(dfd)
	name := longLinkName(stored)
	if err := writeAtomicAt(dfd, name, []byte(stored), false); err != nil {
		return "", fmt.Errorf("write long symlink target %s/%s: %w", LongLinkDir, name, err)
	}
	return longLinkPrefix + name, nil
}

// LoadLink returns the encrypted target a backing symlink target stands for
// (itself, or the content of its side file, checked against its hash).
// Pass the result to DecryptSymlink.
func LoadLink(rootfd int, backingTarget string) (string, error) {
	if !IsLongLink(backingTarget) {
		return backingTarget, nil
	}
	name := strings.TrimPrefix(backingTarget, longLinkPrefix)
	dfd, err := unix.Openat(rootfd, LongLinkDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", LongLinkDir, err)
	}
	defer unix.Close(dfd)
	b, err := readSmallAt(dfd, name, maxStoredLink)
	if err != nil {
		return "", fmt.Errorf("read long symlink target %s/%s: %w", LongLinkDir, name, err)
	}
	stored := string(b)
	if len(b) > maxStoredLink || longLinkName(stored) != name {
		return "", wrap(ErrNameAuth, "long symlink target %s/%s does not match its name", LongLinkDir, name)
	}
	return stored, nil
}

// RemoveLink deletes the side file a backing symlink target refers to, if
// any; a missing one is not an error. Call it after the last backing link
// to the symlink is gone, so a crash leaves at most an orphaned side file.
func RemoveLink(rootfd int, backingTarget string) error {
	if !IsLongLink(backingTarget) {
		return nil
	}
	name := strings.TrimPrefix(backingTarget, longLinkPrefix)
	err := unix.Unlinkat(rootfd, LongLinkDir+"/"+name, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove long symlink target %s/%s: %w", LongLinkDir, name, err)
	}
	return nil
}

// LongLinkFile returns the side file name (within LongLinkDir) a backing
// symlink target refers to; "" when it refers to none.
func LongLinkFile(backingTarget string) string {
	if !IsLongLink(backingTarget) {
		return ""
	}
	return strings.TrimPrefix(backingTarget, longLinkPrefix)
}
