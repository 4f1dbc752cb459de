package volume

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Updating a reflinked file in place. After a reflink every extent of the
// source is shared with the clone; a write to the source afterwards goes to
// a new extent (copy on write) that is shared with nothing. So the extents
// that FIEMAP reports as not shared are exactly what changed, and only
// those need remapping into the clone (FICLONERANGE); gaps of the source
// become holes in the clone. A file that random writes fragmented into tens
// of thousands of extents is then brought up to date by remapping the few
// written since, instead of all of them: this is what keeps the pause of a
// snapshot on XFS or btrfs short.

// FIEMAP (linux/fiemap.h).
const (
	fsIocFiemap        = 0xc020660b // _IOWR('f', 11, struct fiemap)
	fiemapFlagSync     = 0x1
	fiemapExtentLast   = 0x1
	fiemapExtentShared = 0x2000
	fiemapBatch        = 512
)

type fiemapHeader struct {
	start, length                        uint64
	flags, mappedExtents, extentCount, _ uint32
}

type fiemapExtent struct {
	logical, physical, length uint64
	_                         [2]uint64
	flags                     uint32
	_                         [3]uint32
}

// extent is a mapped range of a file.
type extent struct {
	off, len int64
	shared   bool
}

// fileExtents lists the extents of the open file fd below size, after
// writing out what it holds dirty (so that none is delayed).
func fileExtents(fd int, size int64) ([]extent, error) {
	var out []extent
	buf := make([]byte, int(unsafe.Sizeof(fiemapHeader{}))+fiemapBatch*int(unsafe.Sizeof(fiemapExtent{})))
	hdr := (*fiemapHeader)(unsafe.Pointer(&buf[0]))
	exts := unsafe.Slice((*fiemapExtent)(unsafe.Pointer(&buf[unsafe.Sizeof(fiemapHeader{})])), fiemapBatch)
	for start := uint64(0); start < uint64(size); {
		*hdr = fiemapHeader{start: start, length: uint64(size) - start, flags: fiemapFlagSync, extentCount: fiemapBatch}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
			return nil, e
		}
		n := int(hdr.mappedExtents)
		if n == 0 {
			break
		}
		last := false
		for _, x := range exts[:n] {
			out = append(out, extent{off: int64(x.logical), len: int64(x.length), shared: x.flags&fiemapExtentShared != 0})
			last = last || x.flags&fiemapExtentLast != 0
		}
		end := exts[n-1].logical + exts[n-1].length
		if last || end <= start {
			break
		}
		start = end
	}
	return out, nil
}

// patchReflinked brings dst, a reflink of src when src was last copied, up
// to date with src (size bytes now). It fails, changing nothing worth
// keeping, when the file system cannot say which extents are shared; the
// caller then copies the file whole.
func patchReflinked(dst, src *os.File, size int64) error {
	exts, err := fileExtents(int(src.Fd()), size)
	if err != nil {
		return fmt.Errorf("extents of %s: %w", src.Name(), err)
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("patch %s: %w", dst.Name(), err)
	}
	dfd := int(dst.Fd())
	hole := func(off, n int64) error {
		if n <= 0 {
			return nil
		}
		err := unix.Fallocate(dfd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err != nil {
			return fmt.Errorf("patch %s: punch a hole: %w", dst.Name(), err)
		}
		return nil
	}
	// Adjacent changed extents are remapped in one call.
	var runStart, runEnd int64
	remap := func() error {
		if runEnd == runStart {
			return nil
		}
		r := unix.FileCloneRange{Src_fd: int64(src.Fd()), Src_offset: uint64(runStart), Src_length: uint64(runEnd - runStart), Dest_offset: uint64(runStart)}
		if err := unix.IoctlFileCloneRange(dfd, &r); err != nil {
			return fmt.Errorf("patch %s: reflink a range: %w", dst.Name(), err)
		}
		runStart = runEnd
		return nil
	}
	var pos int64
	for _, e := range exts {
		if e.off >= size {
			break
		}
		n := min(e.len, size-e.off)
		if e.shared || e.off != runEnd {
			if err := remap(); err != nil {
				return err
			}
		}
		if err := hole(pos, e.off-pos); err != nil {
			return err
		}
		if !e.shared {
			if runEnd != e.off {
				runStart = e.off
			}
			runEnd = e.off + n
		}
		pos = e.off + n
	}
	if err := remap(); err != nil {
		return err
	}
	return hole(pos, size-pos)
}
