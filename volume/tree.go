package volume

import (
	"context"
	"io"
	"time"
)

// The tree walker shared by copy, import and fsck: a Source yields the
// entries of a plaintext tree, wherever the tree lives (a plaintext
// directory for import, a volume's or snapshot's backing directory,
// decrypted on the fly, for copy and fsck). The operations differ only in
// what they do with each entry.

// Entry is one entry of a plaintext tree.
type Entry struct {
	// Path is the plaintext path relative to the tree's root, with "/"
	// separators; "" is the root itself.
	Path string
	// Backing is where the entry lives in the source, relative to the
	// source's root: what reports name when Path is unknown (a name that
	// does not decrypt). For a plaintext source it equals Path.
	Backing string
	// Err is set when the entry could not be decoded (its name, metadata
	// or symlink target failed authentication). Path may then be empty;
	// Backing is always set. Copy stops on it, fsck reports it.
	Err error
	// PathUnknown is set on entries below a directory whose name did not
	// decode: their own names did, but Path is "" (Backing locates them).
	PathUnknown bool

	Type     uint32 // file type bits (unix.S_IFREG, S_IFDIR, S_IFLNK, ...)
	Mode     uint32 // permission bits with set-user-ID, set-group-ID and sticky
	UID, GID uint32
	Rdev     uint64
	Size     int64 // plaintext size of a regular file
	Atime    time.Time
	Mtime    time.Time
	Nlink    uint32
	// Inode identifies the entry within its source: entries other than
	// directories with Nlink > 1 and the same Inode are one file (or
	// symlink, FIFO, ...) under several names.
	Inode  uint64
	Target string  // plaintext symlink target
	Xattrs []Xattr // user.* attributes, plaintext, sorted by name
}

// Xattr is one extended attribute, plaintext name (with its "user."
// prefix) and value.
type Xattr struct {
	Name  string
	Value []byte
}

// Source is a plaintext tree that copy, import and fsck read. It never
// changes what it reads.
type Source interface {
	// Walk calls fn for every entry, the root first and every directory
	// before its children, the entries of a directory in name order. An
	// error from fn stops the walk and is returned.
	Walk(ctx context.Context, fn func(*Entry) error) error
	// Open opens the plaintext content of a regular file.
	Open(e *Entry) (Content, error)
	Close() error
}

// Content is the plaintext content of a regular file. Its methods may be
// called from several goroutines at once.
type Content interface {
	io.ReaderAt
	// NextData returns the first extent of data [start, end) that ends
	// after off, so copies keep holes as holes; io.EOF when only a hole
	// (or nothing) follows off. A source that cannot tell returns the
	// rest of the file as one extent.
	NextData(off int64) (start, end int64, err error)
	Close() error
}
