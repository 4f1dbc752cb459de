// Package fusefstest mounts encvol file systems for tests: a backing
// directory with random keys (no KMS), mounted under t.TempDir and
// unmounted in t.Cleanup. Missing FUSE support fails the test.
package fusefstest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// Options choose the volume and mount configuration. The zero value is a
// 4096-byte-sector volume with encrypted names, gate mode "eio" and the
// writeback cache on.
type Options struct {
	SectorSize       int    // 0: sector.DefaultSectorSize
	PlaintextNames   bool   // store names as they are
	GateMode         string // fusefs.ModeEIO (default) or fusefs.ModeHang
	NoWritebackCache bool   // every write(2) goes to the daemon at once
	ReadOnly         bool   // mount read-only
	Debug            bool   // log every FUSE request
	AllowOther       bool   // let other users in (tests that switch credentials)
	// Log receives the file system's log lines; default: the test log
	// (t.Log) at warning level and above.
	Log *zerolog.Logger
	// Volume reuses the backing directory and keys of an earlier mount, for
	// unmount/remount tests. nil: a new volume in t.TempDir.
	Volume *Volume
	// BackingParent is where NewVolume puts the backing directory (a
	// small file system, say); default t.TempDir.
	BackingParent string
	// MaxRequests bounds the requests served at once; 0: the default.
	MaxRequests int
	// CacheTimeout is fusefs.MountOptions.CacheTimeout (0: the default).
	CacheTimeout time.Duration
	// NoXattr is fusefs.MountOptions.NoXattr.
	NoXattr bool
	// LegacyMeta: a volume of header version 2 or older, whose mode and
	// owner records are not authenticated (the default is the current
	// format).
	LegacyMeta bool
	// NoHoleMap: a volume of header version 3, whose holes are not
	// authenticated (the default is the current format, version 5).
	NoHoleMap bool
	// NoBindEntries: a volume of header version 4, whose files and
	// directories are not bound to their name.
	NoBindEntries bool
}

// Volume is a backing directory with its content and names keys, enough to
// mount it again.
type Volume struct {
	Backing        string
	SectorSize     int
	PlaintextNames bool
	AuthMeta       bool // header version 3: authenticated mode and owner
	HoleMap        bool // header version 4: authenticated holes, symlink targets bound to their entry
	BindEntries    bool // header version 5: files and directories bound to their name
	ContentKey     *keywrap.Key
	NamesKey       *keywrap.Key
}

// NewVolume creates a backing directory in opts.BackingParent (default
// t.TempDir) with a root directory ID and fresh random keys (closed at the
// end of the test).
func NewVolume(t testing.TB, opts Options) *Volume {
	t.Helper()
	ss := opts.SectorSize
	if ss == 0 {
		ss = sector.DefaultSectorSize
	}
	parent := opts.BackingParent
	if parent == "" {
		parent = t.TempDir()
	}
	backing := filepath.Join(parent, "backing")
	if err := os.Mkdir(backing, 0700); err != nil {
		t.Fatalf("fusefstest: create backing directory: %v", err)
	}
	fd, err := unix.Open(backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("fusefstest: open backing directory: %v", err)
	}
	rootID, err := names.CreateDirID(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatalf("fusefstest: create root directory ID: %v", err)
	}
	ck, err := keywrap.RandomKey(32)
	if err != nil {
		t.Fatalf("fusefstest: content key: %v", err)
	}
	nk, err := keywrap.RandomKey(32)
	if err != nil {
		ck.Close()
		t.Fatalf("fusefstest: names key: %v", err)
	}
	t.Cleanup(func() {
		ck.Close()
		nk.Close()
	})
	v := &Volume{Backing: backing, SectorSize: ss, PlaintextNames: opts.PlaintextNames, AuthMeta: !opts.LegacyMeta, ContentKey: ck, NamesKey: nk}
	v.HoleMap = v.AuthMeta && !opts.NoHoleMap
	v.BindEntries = v.HoleMap && !opts.NoBindEntries
	if v.AuthMeta {
		// As encvol create does: the root's record too.
		k := v.Keys(t)
		defer k.Names.Close()
		defer k.Content.Close()
		var st unix.Stat_t
		if err := unix.Stat(backing, &st); err != nil {
			t.Fatalf("fusefstest: %v", err)
		}
		val, err := fusefs.EncodeMetaFor(k.Names, rootID, nil, st.Mode&0o7777, st.Uid, st.Gid)
		if err == nil {
			err = unix.Setxattr(backing, fusefs.MetaXattr, val, 0)
		}
		if err != nil {
			t.Fatalf("fusefstest: root mode and owner: %v", err)
		}
	}
	return v
}

// Keys returns a fresh cipher and codec for the volume, ready for
// Gate.Open. The raw keys stay with the Volume, so the gate can be closed
// and opened again with another Keys.
func (v *Volume) Keys(t testing.TB) *fusefs.Keys {
	t.Helper()
	c, err := sector.NewCipher(v.ContentKey, v.SectorSize)
	if err != nil {
		t.Fatalf("fusefstest: cipher: %v", err)
	}
	nc, err := names.NewCodec(v.NamesKey, v.PlaintextNames)
	if err != nil {
		c.Close()
		t.Fatalf("fusefstest: codec: %v", err)
	}
	if v.AuthMeta {
		c.UseVersion2()
		if v.HoleMap {
			c.UseVersion3()
			nc.SetBindLinks()
		}
		if v.BindEntries {
			nc.SetBindEntries()
		}
		nc.SetAuthMeta()
	}
	return &fusefs.Keys{Content: c, Names: nc}
}

// Mount is one mounted file system.
type Mount struct {
	Dir    string
	FS     *fusefs.FS
	Gate   *fusefs.Gate
	Server *fuse.Server
	Volume *Volume

	once sync.Once
	err  error
}

// Unmount unmounts (retrying while the mount is busy, up to 10 s) and
// waits for the server to stop. It is idempotent; t.Cleanup calls it too.
func (m *Mount) Unmount() error {
	m.once.Do(func() {
		// A closed gate in hang mode would hold requests the unmount
		// needs answered; open it with fresh keys if it was closed.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := m.Server.Unmount()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				m.err = err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		m.Server.Wait()
	})
	return m.err
}

// MountVolume mounts v in a new directory under t.TempDir with an open
// gate. The mount is unmounted in t.Cleanup.
func MountVolume(t testing.TB, v *Volume, opts Options) *Mount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("fusefstest: FUSE is not available (%v): the mount tests need /dev/fuse", err)
	}
	log := testLogger(t)
	if opts.Log != nil {
		log = *opts.Log
	}
	mode := opts.GateMode
	if mode == "" {
		mode = fusefs.ModeEIO
	}
	gate := fusefs.NewGate(mode, log)
	gate.Open(v.Keys(t))
	fsys, err := fusefs.New(fusefs.Options{
		Backing:        v.Backing,
		SectorSize:     v.SectorSize,
		PlaintextNames: v.PlaintextNames,
		AuthMeta:       v.AuthMeta,
		Gate:           gate,
		Log:            log,
		VolumeID:       "vol-test",
	})
	if err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0755); err != nil {
		t.Fatalf("fusefstest: create mountpoint: %v", err)
	}
	srv, err := fsys.Mount(dir, fusefs.MountOptions{Debug: opts.Debug, NoWritebackCache: opts.NoWritebackCache, ReadOnly: opts.ReadOnly, AllowOther: opts.AllowOther, MaxRequests: opts.MaxRequests, CacheTimeout: opts.CacheTimeout, NoXattr: opts.NoXattr})
	if err != nil {
		t.Fatalf("fusefstest: %v", err)
	}
	m := &Mount{Dir: dir, FS: fsys, Gate: gate, Server: srv, Volume: v}
	t.Cleanup(func() {
		if !gate.IsOpen() {
			gate.Open(v.Keys(t))
		}
		if err := m.Unmount(); err != nil {
			t.Errorf("fusefstest: unmount %s: %v", dir, err)
		}
		gate.Close("test end")
	})
	return m
}

// MountTemp creates a volume (or reuses opts.Volume) and mounts it; see
// MountVolume.
func MountTemp(t testing.TB, opts Options) (mnt string, fsys *fusefs.FS, gate *fusefs.Gate) {
	t.Helper()
	v := opts.Volume
	if v == nil {
		v = NewVolume(t, opts)
	}
	m := MountVolume(t, v, opts)
	return m.Dir, m.FS, m.Gate
}

// testLogger writes warnings and errors to the test log until the test
// ends (a late line from a server goroutine must not panic the test).
func testLogger(t testing.TB) zerolog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return zerolog.New(w).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// IsEIO reports whether err is (or wraps) EIO.
func IsEIO(err error) bool { return errors.Is(err, syscall.EIO) }
