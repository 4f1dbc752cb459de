// Package fusefs serves an encvol backing directory as a FUSE file system.
//
// Every plaintext file is a sector file in the backing directory (package
// sector); every plaintext name is encrypted with the ID of the directory
// that holds it (package keywrap/names). Nodes find their backing path by
// walking their parents and encrypting each name on the way, so a rename of
// a directory never has to touch its descendants. All calls that need a key
// go through a Gate, which refuses or holds them while the volume key is
// revoked.
//
// Locking order: gate (Acquire) before a node's content lock before a
// node's open-file lock. Nothing here holds a lock while it asks the kernel
// to invalidate caches.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// Options configure a file system over one backing directory.
type Options struct {
	Backing        string // backing directory holding encvol.volume and the root dir ID
	SectorSize     int    // plaintext sector size the volume was created with
	PlaintextNames bool   // names are stored as they are (debugging volumes)
	Gate           *Gate  // required: hands out the keys
	Log            zerolog.Logger
	VolumeID       string // for log lines only
	// AuthMeta: the volume (header version 3) authenticates the mode and
	// owner of its entries; the keys' names codec then says so too.
	AuthMeta bool
}

// fullLogPeriod spaces the log lines about a full backing file system.
const fullLogPeriod = 10 * time.Second

// MountOptions are the mount-time choices of a caller. The kernel's
// default_permissions is always on: the daemon runs as root and the kernel
// must check modes and owners for every caller.
type MountOptions struct {
	AllowOther  bool   // let users other than the mounting one in
	Debug       bool   // log every FUSE request
	FsName      string // first column of /proc/mounts; default: the backing directory
	Name        string // fuse.<Name> type; default "encvol"
	DirectMount bool   // mount(2) directly; always tried when running as root
	ReadOnly    bool
	// Mount flags the kernel enforces (every mount is also nosuid and
	// nodev). FUSE inodes never get their access time from the kernel,
	// so NoAtime and NoDirAtime also make the daemon read the backing
	// files and directories with O_NOATIME: the access time a stat(2)
	// shows is the backing file's.
	NoExec, NoAtime, NoDirAtime, Sync, NoSymFollow bool
	// NoXattr refuses extended attributes with ENOSYS, after which the
	// kernel answers every xattr call on the mount with EOPNOTSUPP itself.
	// What it saves: ls -l asks for two or three attributes of every
	// entry (security.selinux, POSIX ACLs), and every write(2) and chown
	// for security.capability, each a round trip to the daemon otherwise.
	// user.* attributes stored by other mounts stay in the backing,
	// unseen until a mount without it.
	NoXattr bool
	// NoWritebackCache turns off the kernel writeback cache, so every
	// write(2) reaches the daemon at once (slower for small writes).
	//
	// With the writeback cache (the default) the kernel coalesces small
	// writes into page-sized ones, owns size and mtime of files open for
	// writing, applies O_APPEND itself and sends truncation as setattr;
	// it may read through a write-only handle to fill partial pages,
	// which is why every handle shares one read-write backing descriptor.
	// Dirty pages reach the daemon at the latest on close or fsync; if the
	// key gate closes first, writing them back fails with EIO.
	NoWritebackCache bool
	// Options are extra -o options passed to the kernel/fusermount3.
	Options []string
	// AdaptiveProcs lets the file system set GOMAXPROCS of the whole
	// process (procs.go). Only a process that does nothing but serve this
	// mount should ask for it.
	AdaptiveProcs bool
	// MemoryTarget lets the file system set the soft memory limit of the
	// whole process (memlimit.go); the same caveat applies.
	MemoryTarget bool
	// MaxRequests bounds the requests served at once (limit.go); 0 means
	// DefaultMaxRequests.
	MaxRequests int
	// CacheTimeout is how long the kernel may keep names, attributes and
	// negative entries without asking (see Mount); 0 means
	// DefaultCacheTimeout, a negative value caches nothing.
	CacheTimeout time.Duration
}

// DefaultCacheTimeout is the kernel's entry, attribute and negative entry
// timeout unless MountOptions.CacheTimeout says otherwise (see Mount).
const DefaultCacheTimeout = time.Minute

// hangAttrTimeout caps the attribute timeout of a hang mode mount (see
// Mount).
const hangAttrTimeout = time.Second

// cacheTimeout resolves MountOptions.CacheTimeout.
func (mo MountOptions) cacheTimeout() time.Duration {
	switch {
	case mo.CacheTimeout == 0:
		return DefaultCacheTimeout
	case mo.CacheTimeout < 0:
		return 0
	}
	return mo.CacheTimeout
}

// Counters are cumulative I/O statistics of one mounted file system, and
// how many backing files it has open now.
type Counters struct {
	Reads, Writes, BytesRead, BytesWritten, Errors, GateRefusals uint64
	OpenFiles                                                    uint64
}

// FS is one encvol file system: the root node, its counters and the
// registry of open files that the key gate invalidates.
type FS struct {
	backing    string
	sectorSize int
	plaintext  bool
	authMeta   bool // Options.AuthMeta
	gate       *Gate
	// releaseCounted ends a request that the governor counted (keys);
	// made once for the same reason as Gate.release.
	releaseCounted func()
	log            zerolog.Logger
	// fullLog reports a full backing file system at most once per
	// fullLogPeriod: every writeback request fails then, and one line says it.
	fullLog    zerolog.Logger
	root       *Node
	rootDev    uint64
	euidRoot   bool
	euid, egid uint32
	server     atomic.Pointer[fuse.Server]
	mountpoint string // set by Mount before any use

	// metaOK: regular files and directories keep their plaintext mode and
	// owner in a backing xattr (meta.go); cleared for good when the backing
	// file system turns out not to support user xattrs.
	metaOK   atomic.Bool
	metaWarn sync.Once
	// metaReads counts reads of metaXattr from the backing (the node
	// cache answers the rest; metacache.go).
	metaReads atomic.Uint64
	// idReads counts reads of entry IDs for stored modes and owners: an
	// entry made through the mount starts with its ID cached.
	idReads atomic.Uint64

	// writeback: mounted with the kernel writeback cache (set by Mount).
	writeback atomic.Bool
	// space tracks free backing space (space.go); nil until mounted
	// read-write.
	space atomic.Pointer[space]
	// pause holds back changes while a snapshot copies the backing
	// (pause.go).
	pause *pauser
	// fileNoAtime, dirNoAtime: O_NOATIME or 0, ORed into the flags of
	// backing file opens and directory listings (set by Mount before it
	// serves).
	fileNoAtime, dirNoAtime int

	reads, writes, bytesRead, bytesWritten, errs atomic.Uint64
	ops                                          opCounts // requests by opcode (opcount.go)

	openMu    sync.Mutex
	open      map[*Node]struct{} // GUARDED_BY(openMu): nodes with an open backing file
	openSince int                // GUARDED_BY(openMu): files opened since the last eviction
	// finished is closed once the mount has stopped serving and every
	// backing file is closed (Finished).
	finished chan struct{}

	// entries remembers the negative entries the kernel caches, for the
	// gate's invalidation (entrycache.go); nil until mounted.
	entries atomic.Pointer[entryFS]

	bufPool sync.Pool
	noXattr bool // MountOptions.NoXattr; set before the mount serves
	dirs    dirCache
	names   nameCache // backing names from Readdir for the lookups that follow
	// listings: large listings continued by READDIRs of their own (opendir.go)
	listings listingCache
}

// New checks the backing directory and returns a file system ready to mount.
// The gate may be closed; calls then wait or fail as the gate decides.
func New(opts Options) (*FS, error) {
	if opts.Gate == nil {
		return nil, errors.New("fusefs: Options.Gate is required")
	}
	if opts.SectorSize < sector.MinSectorSize || opts.SectorSize > sector.MaxSectorSize || opts.SectorSize&(opts.SectorSize-1) != 0 {
		return nil, fmt.Errorf("fusefs: sector size %d is not a power of two in %d..%d", opts.SectorSize, sector.MinSectorSize, sector.MaxSectorSize)
	}
	abs, err := filepath.Abs(opts.Backing)
	if err != nil {
		return nil, fmt.Errorf("fusefs: backing directory %s: %w", opts.Backing, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, fmt.Errorf("fusefs: stat backing directory %s: %w", abs, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("fusefs: backing %s is not a directory", abs)
	}
	dfd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fusefs: open backing directory %s: %w", abs, err)
	}
	rootID, err := names.ReadDirID(dfd)
	unix.Close(dfd)
	if err != nil {
		return nil, fmt.Errorf("fusefs: read root directory ID in %s: %w", abs, err)
	}
	log := opts.Log
	if opts.VolumeID != "" {
		log = log.With().Str("volume", opts.VolumeID).Logger()
	}
	f := &FS{
		backing:    abs,
		sectorSize: opts.SectorSize,
		plaintext:  opts.PlaintextNames,
		authMeta:   opts.AuthMeta,
		gate:       opts.Gate,
		log:        log,
		fullLog:    log.Sample(&zerolog.BurstSampler{Burst: 1, Period: fullLogPeriod}),
		rootDev:    uint64(st.Dev),
		euidRoot:   os.Geteuid() == 0,
		euid:       uint32(os.Geteuid()),
		egid:       uint32(os.Getegid()),
		open:       make(map[*Node]struct{}),
		finished:   make(chan struct{}),
		pause:      newPauser(),
	}
	f.metaOK.Store(true)
	if _, err := unix.Getxattr(abs, metaXattr, nil); isNotSupported(err) {
		f.metaUnsupported(err)
	}
	// The governor, once set, is never replaced (startGovernor), so the
	// one that counted a request in keys is the one that ends it here.
	f.releaseCounted = func() {
		governor.Load().exit()
		f.gate.release()
	}
	f.root = &Node{fsys: f}
	f.root.dirID.Store(&rootID)
	opts.Gate.setInvalidator(f.InvalidateAll)
	return f, nil
}

// Root returns the root node (for fs.Mount or embedding in a larger tree).
func (f *FS) Root() *Node { return f.root }

// Gate returns the gate the file system acquires keys from.
func (f *FS) Gate() *Gate { return f.gate }

// Mount mounts the file system at mountpoint and starts serving it. The
// returned server is mounted; call Unmount on it to stop.
func (f *FS) Mount(mountpoint string, mo MountOptions) (*fuse.Server, error) {
	// Why the kernel may cache names and attributes for a minute: every
	// change the kernel does not make itself is either invalidated here or
	// invalidated by the kernel, so the timeout is not what keeps the view
	// right; it only bounds how long a change made to the backing
	// directory behind the mount (which encvol refuses while mounted) can
	// stay unseen. Who invalidates what:
	//   - create, mkdir, mknod, symlink, link, unlink, rmdir, rename: the
	//     kernel (fs/fuse/dir.c) drops the cached attributes of the parent
	//     directories (size, nlink, times), takes the new entry's
	//     attributes from the reply, drops the link count and change time
	//     of an unlinked or replaced inode, and turns a negative entry
	//     into the created one;
	//   - setattr (chmod, chown, truncate, utimens) and link: the reply
	//     carries the new attributes; setxattr and removexattr: the kernel
	//     drops the change time (only user.* attributes are stored, so no
	//     ACL changes a mode);
	//   - listings (readdir.go, cached by the kernel): the kernel drops a
	//     directory's listing when it changes it itself or sees another
	//     mtime; Rename drops those of directories moved to another parent
	//     (their ".." changed);
	//   - ACLs (cached by the kernel): none is ever stored;
	//   - reads: the daemon reads the backing to serve READ, READDIR and
	//     READLINK, and the kernel drops the access time after each;
	//     writes through the writeback cache: the kernel keeps size and
	//     times itself and drops st_blocks at close (FLUSH);
	//   - set-ID bits cleared under a WRITE or O_TRUNC open: killpriv.go
	//     invalidates the inode's attributes;
	//   - the side directory of long symlink targets at the root: longlink.go
	//     invalidates the root's attributes when a side file comes or goes;
	//   - nearly full backing, snapshot pause: space.go and pause.go drop
	//     the attributes of regular files and give expiring ones;
	//   - the key gate: InvalidateAll drops pages (listings too),
	//     attributes, names and negative entries, and entrycache.go keeps replies prepared while
	//     the gate closed out of the caches.
	// A hang mode mount keeps the attribute timeout at hangAttrTimeout:
	// after a close, a read(2) of an open file asks for attributes (and so
	// waits at the gate in a request of its own, see Gate.Wait) only once
	// they have expired.
	ttl := mo.cacheTimeout()
	attrTTL := ttl
	if f.gate.Mode() == ModeHang {
		attrTTL = min(ttl, hangAttrTimeout)
	}
	opts := &fs.Options{
		EntryTimeout: &ttl,
		AttrTimeout:  &attrTTL,
		// Mode 0000 is a real mode (chmod 000); without this go-fuse
		// reports it as 0644/0755, and default_permissions would then let
		// others read the file.
		NullPermissions: true,
	}
	opts.MountOptions = fuse.MountOptions{
		AllowOther:  mo.AllowOther,
		Debug:       mo.Debug,
		FsName:      mo.FsName,
		Name:        mo.Name,
		MaxWrite:    fuse.MAX_KERNEL_WRITE,
		DirectMount: mo.DirectMount || os.Geteuid() == 0,
		// Replies are always plaintext in our memory, never a backing
		// descriptor: without this go-fuse prepares a pipe for every READ
		// reply before finding that out.
		DisableSplice: true,
		// The kernel then caches each inode's POSIX ACLs, and so that it
		// has none: without it every ls -l asks for system.posix_acl_access
		// (and _default of a directory) anew. No ACL is ever stored (only
		// user.* attributes are), so reads of them say "no such attribute"
		// and writes "not supported"; the kernel still applies the umask
		// itself (no FUSE_DONT_MASK) and checks permissions by mode.
		EnableAcl: true,
	}
	if opts.FsName == "" {
		opts.FsName = f.backing
	}
	if opts.Name == "" {
		opts.Name = "encvol"
	}
	opts.Options = append([]string{"default_permissions"}, mo.Options...)
	f.setMountFlags(&opts.MountOptions, mo)
	f.noXattr = mo.NoXattr
	if !mo.NoWritebackCache && !mo.ReadOnly {
		opts.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
		f.writeback.Store(true)
	}
	if f.gate.Mode() == ModeHang {
		// See gate.go: readahead then waits at a closed gate in a request
		// that a signal interrupts.
		opts.DisabledCapabilities |= fuse.CAP_ASYNC_READ
	}
	// See killpriv.go: saves a GETXATTR round trip per write(2).
	opts.ExtraCapabilities |= fuse.CAP_HANDLE_KILLPRIV_V2
	// Files created on a nearly full backing use direct I/O (space.go);
	// without this, mmap of them would fail.
	opts.ExtraCapabilities |= fuse.CAP_DIRECT_IO_ALLOW_MMAP
	nodes := &noOpendirFS{RawFileSystem: newNameLockFS(fs.NewNodeFS(f.root, opts)), fsys: f}
	ents := newEntryFS(newPauseFS(newLimitFS(&spaceFS{RawFileSystem: &killPrivFS{RawFileSystem: nodes}, fsys: f}, mo.MaxRequests, &f.ops), f), f.gate, ttl)
	f.entries.Store(ents)
	var raw fuse.RawFileSystem = ents
	srv, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		hint := ""
		if !opts.DirectMount && (mo.NoDirAtime || mo.NoSymFollow) {
			// fusermount3 prints its reason on our standard error, the log
			// of a daemonized mount; the likely one deserves a word here.
			hint = " (fusermount3 3.14 and older refuse nodiratime and nosymfollow)"
		}
		return nil, fmt.Errorf("fusefs: mount %s on %s: %w%s", f.backing, mountpoint, err, hint)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// The serve loop ends by itself once the kernel side is gone.
		return nil, fmt.Errorf("fusefs: mount %s on %s: %w", f.backing, mountpoint, err)
	}
	f.server.Store(srv)
	f.mountpoint = mountpoint
	var mst unix.Stat_t
	if err := unix.Stat(mountpoint, &mst); err != nil {
		// dev 0: no per-device settings; the defaults apply.
		f.log.Debug().Str("op", "mount").Err(err).Msg("cannot stat the new mount")
	} else {
		f.raiseReadAhead(mst.Dev)
	}
	if !mo.ReadOnly {
		if err := f.trackSpace(mst.Dev); err != nil {
			srv.Unmount()
			return nil, err
		}
	}
	if mo.AdaptiveProcs {
		startGovernor()
	}
	served := make(chan struct{})
	if mo.MemoryTarget {
		startMemoryTarget(served)
	}
	go func() {
		srv.Wait()
		close(served)
		f.endPause()
		if sp := f.space.Swap(nil); sp != nil {
			sp.close()
		}
		f.dirs.clear()
		f.names.clear()
		f.listings.clear()
		f.closeAllBacking()
		close(f.finished)
	}()
	return srv, nil
}

// Finished is closed once the mount has stopped serving and its backing
// files are closed, which settles their hole maps while the key is still
// there: close the gate after it.
func (f *FS) Finished() <-chan struct{} { return f.finished }

// trackSpace starts the space reservation for the mount on device dev.
func (f *FS) trackSpace(dev uint64) error {
	fd, err := unix.Open(f.backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fusefs: open backing directory %s: %w", f.backing, err)
	}
	var limit int64
	if f.writeback.Load() {
		limit = dirtyLimit(dev)
	}
	f.space.Store(newSpace(fd, f.sectorSize, limit, f.log, f.invalidateFileAttrs, f.flushDirty))
	return nil
}

// flushDirty makes the kernel write back the dirty pages of every regular
// file it knows on the mount and returns when it has: an fsync(2) through
// the mount for each, because syncfs(2) was seen to return with pages of a
// file still dirty. It must not run inside a request handler: the
// write-back comes to this daemon.
func (f *FS) flushDirty() {
	if f.server.Load() == nil {
		return
	}
	f.fsyncInodes(f.regularInodes())
}

// regularInodes lists the regular files the kernel knows on the mount.
func (f *FS) regularInodes() []*fs.Inode {
	var out []*fs.Inode
	f.eachInode(func(in *fs.Inode) {
		if in.StableAttr().Mode == unix.S_IFREG {
			out = append(out, in)
		}
	})
	return out
}

// fsyncInodes fsyncs each file of list through the mount, by its name at
// that moment, and returns those it could not open: renamed meanwhile (or
// removed, which leaves nothing of them to wait for).
func (f *FS) fsyncInodes(list []*fs.Inode) (missed []*fs.Inode) {
	for _, in := range list {
		p := in.Path(nil)
		if p == "" {
			continue // no name: nothing of it reaches a copy of the backing
		}
		fd, err := unix.Open(filepath.Join(f.mountpoint, p), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			missed = append(missed, in)
			continue
		}
		if err := unix.Fsync(fd); err != nil {
			f.log.Warn().Str("op", "flush").Err(err).Msg("writing cached data back failed")
		}
		unix.Close(fd)
	}
	return missed
}

// setMountFlags puts the mount flags of mo where the mount takes them:
// mount(2) takes them as flag bits (its data string refuses "noexec" or
// "noatime"), fusermount3 as options. A direct mount never falls back to
// fusermount3, which would get none of them.
func (f *FS) setMountFlags(opts *fuse.MountOptions, mo MountOptions) {
	for _, fl := range []struct {
		on   bool
		bit  uintptr
		name string
	}{
		{true, unix.MS_NOSUID, "nosuid"}, {true, unix.MS_NODEV, "nodev"}, {mo.ReadOnly, unix.MS_RDONLY, "ro"},
		{mo.NoExec, unix.MS_NOEXEC, "noexec"}, {mo.NoAtime, unix.MS_NOATIME, "noatime"},
		{mo.NoDirAtime, unix.MS_NODIRATIME, "nodiratime"}, {mo.Sync, unix.MS_SYNCHRONOUS, "sync"},
		{mo.NoSymFollow, unix.MS_NOSYMFOLLOW, "nosymfollow"},
	} {
		switch {
		case !fl.on:
		case opts.DirectMount:
			opts.DirectMountFlags |= fl.bit
		default:
			opts.Options = append(opts.Options, fl.name)
		}
	}
	opts.DirectMountStrict = opts.DirectMount
	if mo.NoAtime {
		f.fileNoAtime = unix.O_NOATIME
	}
	if mo.NoAtime || mo.NoDirAtime {
		f.dirNoAtime = unix.O_NOATIME
	}
}

// Counters returns a snapshot of the I/O counters.
func (f *FS) Counters() Counters {
	return Counters{
		Reads:        f.reads.Load(),
		Writes:       f.writes.Load(),
		BytesRead:    f.bytesRead.Load(),
		BytesWritten: f.bytesWritten.Load(),
		Errors:       f.errs.Load(),
		GateRefusals: f.gate.Refusals(),
		OpenFiles:    f.openFiles(),
	}
}

// InvalidateAll drops the kernel's cached pages and attributes of every
// inode the file system knows (including open but unlinked files) and the
// cached directory entries below the root, negative ones included
// (entrycache.go), so nothing decrypted earlier is
// served from kernel memory afterwards. It must not be called from inside a
// FUSE request handler.
func (f *FS) InvalidateAll() {
	f.names.clear()
	f.listings.clear()
	if f.server.Load() == nil {
		return
	}
	var dirs []*fs.Inode
	f.eachInode(func(in *fs.Inode) {
		in.NotifyContent(0, 0)
		if in.IsDir() {
			dirs = append(dirs, in)
		}
	})
	// Entries after contents: dropping a dentry can let the kernel forget
	// an inode, and a forgotten inode can no longer be addressed.
	for _, d := range dirs {
		for name := range d.Children() {
			d.NotifyEntry(name)
		}
	}
	if e := f.entries.Load(); e != nil {
		e.invalidate()
	}
}

// invalidateFileAttrs drops the kernel's cached attributes (not the
// contents) of every regular file it knows, so that its next write(2)
// asks the daemon first (space.go).
func (f *FS) invalidateFileAttrs() {
	if f.server.Load() == nil {
		return
	}
	f.eachInode(func(in *fs.Inode) {
		if in.StableAttr().Mode == unix.S_IFREG {
			in.NotifyContent(-1, 0)
		}
	})
}

// eachInode calls fn once for every inode of the tree below the root and
// every open file, named or not.
func (f *FS) eachInode(fn func(in *fs.Inode)) {
	seen := make(map[*fs.Inode]bool)
	var walk func(in *fs.Inode)
	walk = func(in *fs.Inode) {
		if seen[in] {
			return
		}
		seen[in] = true
		fn(in)
		if in.IsDir() {
			for _, ch := range in.Children() {
				walk(ch)
			}
		}
	}
	walk(f.root.EmbeddedInode())
	f.openMu.Lock()
	open := make([]*Node, 0, len(f.open))
	for n := range f.open {
		open = append(open, n)
	}
	f.openMu.Unlock()
	for _, n := range open {
		walk(n.EmbeddedInode())
	}
}

// keys acquires the volume keys for op, logging and counting refusals.
func (f *FS) keys(ctx context.Context, op string) (*Keys, func(), syscall.Errno) {
	k, rel, err := f.gate.Acquire(ctx)
	if err != nil {
		f.log.Debug().Str("op", op).Err(err).Msg("key gate refused the call")
		var e syscall.Errno
		if errors.As(err, &e) {
			return nil, nil, e
		}
		return nil, nil, syscall.EIO
	}
	if g := governor.Load(); g != nil {
		g.enter()
		return k, f.releaseCounted, 0
	}
	return k, rel, 0
}

// errno maps an error from the backing file system, sector or names to what
// the application sees. Authentication failures become EIO with a log line
// naming the path and sector; nothing undecryptable is ever returned as data.
func (f *FS) errno(err error, op, path string) syscall.Errno {
	if err == nil {
		return 0
	}
	path = realPath(path)
	var ae *sector.AuthError
	switch {
	case errors.As(err, &ae):
		f.errs.Add(1)
		f.log.Error().Str("op", op).Str("path", path).Uint64("sector", uint64(ae.Index)).Err(err).Msg("sector failed authentication")
		return syscall.EIO
	case errors.Is(err, sector.ErrAuth), errors.Is(err, sector.ErrHeader):
		f.errs.Add(1)
		f.log.Error().Str("op", op).Str("path", path).Err(err).Msg("file failed authentication")
		return syscall.EIO
	case errors.Is(err, names.ErrNameAuth), errors.Is(err, names.ErrDirIDCorrupt):
		f.errs.Add(1)
		f.log.Error().Str("op", op).Str("path", path).Err(err).Msg("name metadata failed authentication")
		return syscall.EIO
	case errors.Is(err, errMetaAuth):
		f.errs.Add(1)
		f.log.Error().Str("op", op).Str("path", path).Err(err).Msg("stored mode and owner failed authentication")
		return syscall.EIO
	case errors.As(err, new(*names.Error)):
		// Invalid, reserved or too long names, foreign xattrs: the codec
		// knows the errno.
		return names.Errno(err)
	case errors.Is(err, sector.ErrTooLarge):
		return syscall.EFBIG
	case errors.Is(err, sector.ErrClosed), errors.Is(err, names.ErrClosed):
		f.errs.Add(1)
		f.log.Error().Str("op", op).Str("path", path).Err(err).Msg("key closed during the call")
		return syscall.EIO
	case errors.Is(err, sector.ErrTorn):
		// The cause (ENOSPC, EDQUOT, EIO) still goes to the caller below.
		f.errs.Add(1)
		f.log.Error().Str("op", op).Str("path", path).Err(err).Msg("a failed write left a sector that cannot be restored; reading it will fail")
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == syscall.ENOSPC || e == syscall.EDQUOT {
			f.noteFull(op, path, err)
		}
		return e
	}
	f.errs.Add(1)
	f.log.Error().Str("op", op).Str("path", path).Err(err).Msg("unexpected error")
	return syscall.EIO
}

// noteFull counts and logs (at most once per fullLogPeriod) an operation
// that failed for lack of backing space, or that the space reservation
// refused (space.go).
func (f *FS) noteFull(op, path string, err error) {
	f.errs.Add(1)
	f.fullLog.Warn().Str("op", op).Str("path", path).Err(err).Msg("backing file system is full or over quota; the operation failed")
}

// stableAttr derives the node identity from the backing inode, so every
// hard link of a file maps to one node and one content lock. Gen from the
// birth time keeps a recycled backing inode number from reviving a stale
// node.
func (f *FS) stableAttr(st *unix.Statx_t) fs.StableAttr {
	gen := uint64(1)
	if st.Mask&unix.STATX_BTIME != 0 && (st.Btime.Sec != 0 || st.Btime.Nsec != 0) {
		gen = uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)
	}
	ino := f.nodeIno(uint64(unix.Mkdev(st.Dev_major, st.Dev_minor)), st.Ino)
	return fs.StableAttr{Mode: uint32(st.Mode) & unix.S_IFMT, Ino: ino, Gen: gen}
}

// nodeIno is the node's inode number of backing inode ino on device dev.
func (f *FS) nodeIno(dev, ino uint64) uint64 {
	swapped := (dev << 32) | (dev >> 32)
	rootSwapped := (f.rootDev << 32) | (f.rootDev >> 32)
	ino ^= swapped ^ rootSwapped
	if ino == 1 {
		// node id 1 is the FUSE root; a backing inode numbered 1 is
		// remapped out of the way.
		ino = 1<<63 | 1
	}
	return ino
}

// fillAttr converts a backing statx into the attributes the kernel sees.
// Regular files report their plaintext size; st_blocks stays the backing
// allocation, so sparse files look sparse.
func (f *FS) fillAttr(st *unix.Statx_t, a *fuse.Attr) {
	sa := f.stableAttr(st)
	a.Ino = sa.Ino
	a.Size = st.Size
	a.Blocks = st.Blocks
	a.Atime = uint64(st.Atime.Sec)
	a.Atimensec = st.Atime.Nsec
	a.Mtime = uint64(st.Mtime.Sec)
	a.Mtimensec = st.Mtime.Nsec
	a.Ctime = uint64(st.Ctime.Sec)
	a.Ctimensec = st.Ctime.Nsec
	a.Mode = uint32(st.Mode)
	a.Nlink = st.Nlink
	a.Owner = fuse.Owner{Uid: st.Uid, Gid: st.Gid}
	a.Rdev = uint32(unix.Mkdev(st.Rdev_major, st.Rdev_minor))
	a.Blksize = uint32(f.sectorSize)
	if uint32(st.Mode)&unix.S_IFMT == unix.S_IFREG {
		a.Size = uint64(sector.PlainSize(int64(st.Size), f.sectorSize))
	}
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

func statxAt(dirfd int, name string, st *unix.Statx_t) error {
	return unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

func statxFd(fd int, st *unix.Statx_t) error {
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

// statxFdOrPath stats the open backing file fd when the call came with a
// handle (fd >= 0), else the backing path: setattr may arrive either way.
func statxFdOrPath(fd int, path string, st *unix.Statx_t) error {
	if fd >= 0 {
		return statxFd(fd, st)
	}
	return statxAt(unix.AT_FDCWD, path, st)
}

// maxIdleBacking bounds the backing files kept open between uses. A file
// stays open from its first read or write until the kernel forgets the
// inode, and the kernel may keep many thousands of inodes; past this many
// open files the idle ones (no handle, not pinned, not in use) are closed
// and simply opened again when next used.
const maxIdleBacking = 2048

// trackOpen records whether n has an open backing file, so InvalidateAll
// reaches it even after its last name is unlinked; a new one may evict idle
// files (evictIdle). The caller holds n.content.
func (f *FS) trackOpen(n *Node, open bool) {
	f.openMu.Lock()
	if !open {
		delete(f.open, n)
		f.openMu.Unlock()
		return
	}
	f.open[n] = struct{}{}
	f.openSince++
	var victims []*Node
	if len(f.open) > maxIdleBacking && f.openSince >= maxIdleBacking/4 {
		// Sweep a quarter of the cap at a time, so the map walk is paid
		// once per maxIdleBacking/4 opens, not on every one.
		f.openSince = 0
		for v := range f.open {
			if len(victims) >= len(f.open)-maxIdleBacking*3/4 {
				break
			}
			if v != n {
				victims = append(victims, v)
			}
		}
	}
	f.openMu.Unlock()
	f.evictIdle(victims)
}

// evictIdle closes the backing files of those candidates that are idle: no
// handle, not pinned, not in use. TryLock, because the caller holds another
// node's content lock, and a node that is in use is not idle anyway.
func (f *FS) evictIdle(candidates []*Node) {
	for _, v := range candidates {
		if !v.content.TryLock() {
			continue
		}
		if of := v.of; of != nil && of.refs == 0 && !of.pinned {
			v.closeBackingLocked()
		}
		v.content.Unlock()
	}
}

func (f *FS) openFiles() uint64 {
	f.openMu.Lock()
	defer f.openMu.Unlock()
	return uint64(len(f.open))
}

// closeAllBacking closes every backing file after the mount is gone.
func (f *FS) closeAllBacking() {
	f.openMu.Lock()
	nodes := make([]*Node, 0, len(f.open))
	for n := range f.open {
		nodes = append(nodes, n)
	}
	f.openMu.Unlock()
	for _, n := range nodes {
		n.content.Lock()
		n.closeBackingLocked()
		n.content.Unlock()
	}
}

// readAheadKB is the kernel readahead we ask for: four full-size requests.
// A window of one request leaves the daemon idle while the kernel copies
// each reply to the reader; with four, several 1 MiB READs are in flight
// and both cores decrypt. Measured on two cores with tmpfs backing (medians
// of three cold 1 GiB reads, in two series): 1 MiB 1.46 and 1.61 GB/s,
// 4 MiB 1.78 and 1.74 GB/s, 16 MiB 1.35 GB/s.
const readAheadKB = 4 * fuse.MAX_KERNEL_WRITE / 1024

// raiseReadAhead lifts the mount's readahead from the kernel's 128 KiB
// default (the most a FUSE INIT can ask for) to readAheadKB, so a
// sequential read arrives as concurrent 1 MiB READs instead of 128 KiB
// ones: fewer round trips and daemon CPU per byte, and decryption on more
// than one core. Only root may write the setting; elsewhere the default
// stays, which is merely slower.
func (f *FS) raiseReadAhead(dev uint64) {
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%d\n", readAheadKB)), 0); err != nil {
		f.log.Debug().Str("op", "mount").Str("path", p).Err(err).Msg("readahead left at the default")
	}
}
