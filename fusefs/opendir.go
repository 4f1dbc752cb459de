package fusefs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// noOpendirFS answers OPENDIR with ENOSYS when the kernel supports
// zero-message opendir (FUSE_NO_OPENDIR_SUPPORT, Linux 5.1): the kernel
// then never sends OPENDIR or RELEASEDIR again on the mount, which saves
// two round trips for every directory listed, and it keeps listings in its
// cache as it would for a handle with FOPEN_CACHE_DIR (readdir.go says
// what drops them). Its READDIR and READDIRPLUS requests then carry handle
// 0: each is served through a handle opened and released here, within the
// request, so the node file system below sees handles as always. A
// listing that takes several requests is listed once (listingCache).
type noOpendirFS struct {
	fuse.RawFileSystem
	fsys *FS
}

func (o *noOpendirFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	// Before the server is known (a request racing the end of the
	// mount), the kernel's support is unknown: open as usual.
	if srv := o.fsys.server.Load(); srv != nil && srv.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0 {
		return fuse.ENOSYS
	}
	return o.RawFileSystem.OpenDir(cancel, in, out)
}

func (o *noOpendirFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return o.withHandle(cancel, in, out, o.RawFileSystem.ReadDir)
}

func (o *noOpendirFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return o.withHandle(cancel, in, out, o.RawFileSystem.ReadDirPlus)
}

func (o *noOpendirFS) withHandle(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList,
	read func(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status) fuse.Status {
	if in.Fh != 0 {
		return read(cancel, in, out)
	}
	var opened fuse.OpenOut
	if st := o.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: in.InHeader, Flags: in.Flags}, &opened); !st.Ok() {
		return st
	}
	defer o.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: opened.Fh, Flags: in.Flags})
	h := *in
	h.Fh = opened.Fh
	return read(cancel, &h, out)
}
