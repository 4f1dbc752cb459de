package volume

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Copying one backing entry: regular files by reflink (FICLONE) where the
// file system shares extents, else by a copy that keeps holes where the
// source has them; symlinks, special files, and the metadata of all of
// them (extended attributes such as user.encvol.meta, owner, mode, times).
// Everything here moves ciphertext; nothing is decrypted.

// reflink states of a clone.
const (
	reflinkUnknown int32 = iota
	reflinkWorks
	reflinkUnsupported
)

// copyChunk is how much one copy_file_range call moves, so progress moves
// steadily through a large file.
const copyChunk = 16 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// cloneUnsupported reports whether err from FICLONE means the file systems
// cannot share extents between these files (tmpfs, ext4, two devices),
// as opposed to a failure of this one file.
func cloneUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS)
}

// openSource opens a source file for reading without touching its access
// time where the caller may ask for that.
func openSource(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	return f, err
}

// copyRegular writes the content of src (size bytes as the caller saw it)
// into the new file dst: a reflink when the clone's state allows, else a
// sparse copy. add is told the bytes as they are done. It reports whether
// it reflinked.
func (c *TreeClone) copyRegular(dst, src *os.File, size int64, add func(int64)) (bool, error) {
	if c.reflink.Load() != reflinkUnsupported {
		err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
		if err == nil {
			c.reflink.CompareAndSwap(reflinkUnknown, reflinkWorks)
			var st unix.Stat_t
			if unix.Fstat(int(dst.Fd()), &st) == nil {
				add(st.Size)
			}
			return true, nil
		}
		if !cloneUnsupported(err) {
			return false, fmt.Errorf("reflink %s: %w", src.Name(), err)
		}
		c.reflink.Store(reflinkUnsupported)
	}
	return false, copySparse(dst, src, size, add)
}

// copySparse copies the data ranges of src (SEEK_DATA/SEEK_HOLE) and sets
// dst's size to size, so holes stay holes (a hole sector of a sector file
// is all zeros, see docs/format.md).
func copySparse(dst, src *os.File, size int64, add func(int64)) error {
	sfd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		hole := size
		if err != nil {
			data = off // no SEEK_DATA here: everything is data
		} else if h, err := unix.Seek(sfd, data, unix.SEEK_HOLE); err == nil {
			hole = min(h, size)
		}
		if data >= size {
			break
		}
		if err := copyRange(dst, src, data, hole-data, add); err != nil {
			return err
		}
		off = hole
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("copy %s: set size: %w", src.Name(), err)
	}
	return nil
}

// copyRange copies n bytes at off from src to the same offset of dst, with
// copy_file_range where the kernel can, else through a buffer. A source
// that ends early (a file that shrank) ends the copy.
func copyRange(dst, src *os.File, off, n int64, add func(int64)) error {
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	for n > 0 {
		so, do := off, off
		m, err := unix.CopyFileRange(sfd, &so, dfd, &do, int(min(n, copyChunk)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
				return copyBuffered(dst, src, off, n, add)
			}
			return fmt.Errorf("copy %s: %w", src.Name(), err)
		}
		if m == 0 {
			return nil
		}
		add(int64(m))
		off += int64(m)
		n -= int64(m)
	}
	return nil
}

func copyBuffered(dst, src *os.File, off, n int64, add func(int64)) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for n > 0 {
		m, err := src.ReadAt(buf[:min(n, int64(len(buf)))], off)
		if m > 0 {
			if _, werr := dst.WriteAt(buf[:m], off); werr != nil {
				return fmt.Errorf("copy to %s: %w", dst.Name(), werr)
			}
			add(int64(m))
			off += int64(m)
			n -= int64(m)
		}
		if err != nil {
			if m == 0 {
				return nil // end of a file that shrank
			}
			return fmt.Errorf("copy %s: %w", src.Name(), err)
		}
	}
	return nil
}

// copyXattrs copies every extended attribute of src to dst (both paths, not
// followed when they are symlinks). Attributes outside user.* that the
// target refuses (security.*, trusted.* for a daemon without the right)
// are left out; user.* ones, which hold encvol's metadata, must copy.
func copyXattrs(dst, src string) error {
	list, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range list {
		val, err := getXattr(src, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("read xattr %s of %s: %w", name, src, err)
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			if !isUserXattr(name) && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP)) {
				continue
			}
			return fmt.Errorf("set xattr %s of %s: %w", name, dst, err)
		}
	}
	return nil
}

func isUserXattr(name string) bool { return len(name) > 5 && name[:5] == "user." }

func listXattrs(path string) ([]string, error) {
	for {
		n, err := unix.Llistxattr(path, nil)
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
		}
		var out []string
		for start, i := 0, 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					out = append(out, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return out, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	for {
		n, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// applyMeta gives dst the source entry's extended attributes, owner (when
// running as root), mode (not for symlinks) and access and modification
// times. Directories get theirs after their content is complete, since
// adding entries moves a directory's times.
func applyMeta(dst, src string, e *treeEntry) error {
	if err := copyXattrs(dst, src); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := unix.Lchown(dst, int(e.uid), int(e.gid)); err != nil {
			return fmt.Errorf("chown %s: %w", dst, err)
		}
	}
	if e.kind() != unix.S_IFLNK {
		// After chown, which clears set-user-ID and set-group-ID.
		if err := unix.Chmod(dst, uint32(e.mode)&07777); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
	}
	ts := []unix.Timespec{e.atime, e.mtime}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", dst, err)
	}
	return nil
}
