// Command nopassthrough mounts a go-fuse loopback of BACKING at MOUNTPOINT whose
// open files never offer kernel FUSE passthrough.
//
// As root on recent kernels the stock go-fuse loopback hands the kernel a
// passthrough fd, so reads and writes bypass the daemon entirely. A file system
// that transforms data (encvol) can never do that, so the stock loopback is no
// yardstick for it. This program keeps every read and write going through the
// daemon, with the same mount settings encvol uses (1 MiB requests, 1 s
// attribute and entry timeouts, default_permissions, direct mount as root): the
// honest upper bound for a FUSE file system that touches every byte.
//
// Usage: nopassthrough [-debug] BACKING MOUNTPOINT
//
// It runs in the foreground until SIGINT or SIGTERM, then unmounts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose Open and Create return handles without
// PassthroughFd. WrapChild makes every node the loopback creates a *node too.
type node struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeOpener        = (*node)(nil)
	_ fs.NodeCreater       = (*node)(nil)
	_ fs.NodeWrapChilder   = (*node)(nil)
	_ fs.InodeEmbedder     = (*node)(nil)
	_ fs.FileReader        = (*handle)(nil)
	_ fs.FileWriter        = (*handle)(nil)
	_ fs.FileWritever      = (*handle)(nil)
	_ fs.FileFlusher       = (*handle)(nil)
	_ fs.FileFsyncer       = (*handle)(nil)
	_ fs.FileReleaser      = (*handle)(nil)
	_ fs.FileGetattrer     = (*handle)(nil)
	_ fs.FileSetattrer     = (*handle)(nil)
	_ fs.FileAllocater     = (*handle)(nil)
	_ fs.FileLseeker       = (*handle)(nil)
	_ fs.FileGetlker       = (*handle)(nil)
	_ fs.FileSetlker       = (*handle)(nil)
	_ fs.FileSetlkwer      = (*handle)(nil)
	_ fs.NodeStatfser      = (*node)(nil)
	_ fs.NodeGetattrer     = (*node)(nil)
	_ fs.NodeLookuper      = (*node)(nil)
	_ fs.NodeReaddirer     = (*node)(nil)
	_ fs.NodeRenamer       = (*node)(nil)
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeLinker        = (*node)(nil)
	_ fs.NodeSymlinker     = (*node)(nil)
	_ fs.NodeMkdirer       = (*node)(nil)
	_ fs.NodeUnlinker      = (*node)(nil)
	_ fs.NodeRmdirer       = (*node)(nil)
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
)

// fullHandle is what the loopback's file handles implement; handle forwards
// the data path but deliberately not FilePassthroughFder (nor ioctl).
type fullHandle interface {
	fs.FileReader
	fs.FileWriter
	fs.FileFlusher
	fs.FileFsyncer
	fs.FileReleaser
	fs.FileGetattrer
	fs.FileSetattrer
	fs.FileAllocater
	fs.FileLseeker
	fs.FileGetlker
	fs.FileSetlker
	fs.FileSetlkwer
}

// handle hides the loopback file's PassthroughFd method: go-fuse only asks for
// passthrough when the handle implements fs.FilePassthroughFder.
type handle struct {
	f fullHandle
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.f.Read(ctx, dest, off)
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return h.f.Write(ctx, data, off)
}

// Writev is forwarded when the loopback offers it so the baseline gets
// go-fuse's fastest write path (one pwritev, no buffer copy).
func (h *handle) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if wv, ok := h.f.(fs.FileWritever); ok {
		return wv.Writev(ctx, data, off)
	}
	var total uint32
	for _, d := range data {
		n, errno := h.f.Write(ctx, d, off)
		total += n
		off += int64(n)
		if errno != 0 {
			return total, errno
		}
	}
	return total, 0
}

func (h *handle) Flush(ctx context.Context) syscall.Errno { return h.f.Flush(ctx) }

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.f.Fsync(ctx, flags)
}

func (h *handle) Release(ctx context.Context) syscall.Errno { return h.f.Release(ctx) }

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.f.Getattr(ctx, out)
}

func (h *handle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return h.f.Setattr(ctx, in, out)
}

func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return h.f.Allocate(ctx, off, size, mode)
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.f.Lseek(ctx, off, whence)
}

func (h *handle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return h.f.Getlk(ctx, owner, lk, flags, out)
}

func (h *handle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.f.Setlk(ctx, owner, lk, flags)
}

func (h *handle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.f.Setlkw(ctx, owner, lk, flags)
}

// wrap returns fh without passthrough. A handle of an unexpected type is
// refused rather than passed on, so passthrough can never sneak back in.
func wrap(fh fs.FileHandle) (fs.FileHandle, syscall.Errno) {
	if fh == nil {
		return nil, 0
	}
	full, ok := fh.(fullHandle)
	if !ok {
		if r, ok := fh.(fs.FileReleaser); ok {
			r.Release(context.Background())
		}
		return nil, syscall.EIO
	}
	return &handle{f: full}, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	w, errno := wrap(fh)
	return w, fuseFlags, errno
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	w, errno := wrap(fh)
	return in, w, fuseFlags, errno
}

func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln}
	}
	return ops
}

func main() {
	debug := flag.Bool("debug", false, "log every FUSE request")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-debug] BACKING MOUNTPOINT\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), *debug); err != nil {
		fmt.Fprintf(os.Stderr, "nopassthrough: %v\n", err)
		os.Exit(1)
	}
}

func run(backing, mountpoint string, debug bool) error {
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return fmt.Errorf("open backing %s: %w", backing, err)
	}
	ln, ok := root.(*fs.LoopbackNode)
	if !ok {
		return fmt.Errorf("open backing %s: unexpected root node type %T", backing, root)
	}
	sec := time.Second
	opts := &fs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName:      backing,
			Name:        "nopassthrough",
			MaxWrite:    fuse.MAX_KERNEL_WRITE,
			DirectMount: os.Geteuid() == 0,
			Debug:       debug,
			Options:     []string{"default_permissions"},
		},
	}
	server, err := fs.Mount(mountpoint, &node{LoopbackNode: ln}, opts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-sig:
	case <-done:
		return nil
	}
	// A busy mount refuses to unmount; retry briefly, then fall back to a lazy
	// detach so the benchmark's cleanup never leaves a dead mount behind.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = server.Unmount()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		if lerr := syscall.Unmount(mountpoint, syscall.MNT_DETACH); lerr != nil {
			return fmt.Errorf("unmount %s: %w (lazy detach: %v)", mountpoint, err, lerr)
		}
	}
	<-done
	return nil
}
