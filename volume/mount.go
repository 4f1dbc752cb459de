package volume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// MountSpec is everything a mount needs, resolved from the configuration,
// the volume's header and the command line.
type MountSpec struct {
	Name string // [volumes.NAME] when mounted by name
	// Snapshot is the snapshot directory when a snapshot is mounted
	// (always read-only); Backing is then its backing copy.
	Snapshot   string
	Backing    string
	Mountpoint string // canonical (absolute, parent symlinks resolved)
	Header     *keywrap.Header
	KMS        string // configured KMS name to ask
	KMSConfig  kmsclient.Config

	ReadOnly         bool
	AllowOther       bool
	Debug            bool
	Foreground       bool
	OnRevoke         string
	KeyCheckInterval time.Duration
	OfflineGrace     time.Duration
	OnKeyEvent       string
	NonEmpty         bool       // mount over a directory that holds files
	AllowSwap        bool       // mount even if the keys cannot be locked in memory
	Flags            MountFlags // noexec, noatime, ... (nosuid and nodev always)
	// CacheTimeout is the kernel's entry and attribute timeout; nil: the
	// file system's default (fusefs.DefaultCacheTimeout).
	CacheTimeout *time.Duration
	// OwnProcess: the caller is a daemon that serves nothing but this
	// mount, so the file system may tune process-wide settings.
	OwnProcess bool
}

// fsCacheTimeout is spec.CacheTimeout as fusefs.MountOptions takes it: 0
// for the default, negative for no caching.
func (s MountSpec) fsCacheTimeout() time.Duration {
	switch {
	case s.CacheTimeout == nil:
		return 0
	case *s.CacheTimeout == 0:
		return -1
	}
	return *s.CacheTimeout
}

// Source names what spec mounts, for messages.
func (s MountSpec) Source() string {
	if s.Snapshot != "" {
		return "snapshot " + s.Snapshot
	}
	return s.Backing
}

// ResolveMount turns `encvol mount` arguments (NAME, or BACKING
// MOUNTPOINT) plus parsed -o options into a MountSpec. It reads the
// volume header (not its MAC: that needs the key) to learn which KMS
// wrapped the key. Precedence: -o options, then [volumes.NAME], then
// [defaults].
func (c *Config) ResolveMount(args []string, o MountOptionSet) (MountSpec, error) {
	var spec MountSpec
	var vc VolumeConfig
	switch len(args) {
	case 1:
		v, err := c.Volume(args[0])
		if err != nil {
			if strings.ContainsRune(args[0], '/') {
				return spec, fmt.Errorf("no MOUNTPOINT given: run `encvol mount %s MOUNTPOINT`, or give the NAME of a [volumes.NAME] table", args[0])
			}
			return spec, err
		}
		if v.Mountpoint == "" {
			return spec, fmt.Errorf("[volumes.%s] in %s has no mountpoint: add one or run `encvol mount %s MOUNTPOINT`", args[0], c.describe(), v.Backing)
		}
		vc, spec.Name = v, args[0]
		spec.Backing, spec.Mountpoint = v.Backing, v.Mountpoint
		if v.Options != "" {
			base, err := ParseMountOptions(v.Options)
			if err != nil {
				return spec, fmt.Errorf("[volumes.%s] options: %w", args[0], err)
			}
			o = layerOptions(base, o)
		}
	case 2:
		spec.Backing, spec.Mountpoint = args[0], args[1]
	default:
		return spec, fmt.Errorf("want NAME or BACKING MOUNTPOINT, got %d arguments", len(args))
	}
	var err error
	if spec.Backing, err = filepath.Abs(spec.Backing); err != nil {
		return spec, err
	}
	if spec.Mountpoint, err = CanonicalMountpoint(spec.Mountpoint); err != nil {
		return spec, err
	}
	if snap := snapshotOf(spec.Backing); spec.Name == "" && snap != "" {
		spec.Backing = snap
		if o.ReadOnly != nil && !*o.ReadOnly {
			return spec, fmt.Errorf("%s is a snapshot, which mounts read-only only: leave out -o rw (to change it, make a volume from it with `encvol create --backing DIR --from-snapshot %s`)", spec.Backing, spec.Backing)
		}
		ro := true
		o.ReadOnly = &ro
		// Reading a snapshot changes nothing in it, not even access times.
		o.Flags.put(FlagNoAtime, true)
		o.Flags.put(FlagNoDirAtime, true)
		spec.Snapshot, spec.Backing = spec.Backing, SnapshotBacking(spec.Backing)
	}
	if err := CheckComplete(spec.Backing); err != nil {
		return spec, err
	}
	if _, err := os.Stat(filepath.Join(spec.Backing, keywrap.HeaderFile)); errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Stat(spec.Backing); derr != nil {
			return spec, fmt.Errorf("backing directory %s: %w", spec.Backing, derr)
		}
		if lostHeader(spec.Backing) {
			return spec, withKind(keywrap.ErrHeaderCorrupt, fmt.Errorf("the header of the volume in %s is missing (no %s, but its directory ID is there); %s",
				spec.Backing, keywrap.HeaderFile, restoreHint(spec.Backing)))
		}
		return spec, fmt.Errorf("%s is not an encvol volume (no %s); create one with `encvol create --backing %s`", spec.Backing, keywrap.HeaderFile, spec.Backing)
	}
	h, err := keywrap.ReadHeader(spec.Backing)
	if err != nil {
		return spec, fmt.Errorf("volume %s: %w; %s", spec.Backing, err, restoreHint(spec.Backing))
	}
	if err := c.CheckPin(spec.Name, vc, spec.Backing, h); err != nil {
		return spec, err
	}
	spec.Header = h

	// Which KMS: the -o option, the volume's table, the one recorded in
	// the header (when this configuration knows it), else the default.
	kmsName := o.KMS
	if kmsName == "" {
		kmsName = vc.KMS
	}
	if kmsName == "" && h.KMS != "" {
		if _, ok := c.KMS[h.KMS]; ok {
			kmsName = h.KMS
		}
	}
	spec.KMS, spec.KMSConfig, err = c.KMSFor(kmsName)
	if err != nil {
		return spec, err
	}

	spec.AllowOther = vc.AllowOther
	spec.ReadOnly = vc.ReadOnly
	if o.AllowOther != nil {
		spec.AllowOther = *o.AllowOther
	}
	if o.ReadOnly != nil {
		spec.ReadOnly = *o.ReadOnly
	}
	spec.Debug, spec.Foreground = o.Debug, o.Foreground
	spec.NonEmpty, spec.Flags, spec.AllowSwap = o.NonEmpty, o.Flags, o.AllowSwap
	spec.CacheTimeout = o.CacheTimeout
	spec.OnRevoke = firstString(o.OnRevoke, vc.OnRevoke, c.Defaults.OnRevoke, DefaultOnRevoke)
	spec.KeyCheckInterval = firstDuration(o.KeyCheckInterval, vc.KeyCheckInterval.D(), c.Defaults.KeyCheckInterval.D(), DefaultKeyCheckInterval)
	spec.OfflineGrace = c.Defaults.OfflineGrace.D()
	if vc.OfflineGrace != nil {
		spec.OfflineGrace = vc.OfflineGrace.D()
	}
	if o.OfflineGrace != nil {
		spec.OfflineGrace = *o.OfflineGrace
	}
	spec.OnKeyEvent = firstString(vc.OnKeyEvent, c.Defaults.OnKeyEvent)
	return spec, nil
}

// layerOptions puts top over base.
func layerOptions(base, top MountOptionSet) MountOptionSet {
	out := base
	if top.Config != "" {
		out.Config = top.Config
	}
	if top.KMS != "" {
		out.KMS = top.KMS
	}
	if top.KeyCheckInterval != 0 {
		out.KeyCheckInterval = top.KeyCheckInterval
	}
	if top.OfflineGrace != nil {
		out.OfflineGrace = top.OfflineGrace
	}
	if top.OnRevoke != "" {
		out.OnRevoke = top.OnRevoke
	}
	if top.CacheTimeout != nil {
		out.CacheTimeout = top.CacheTimeout
	}
	if top.ReadOnly != nil {
		out.ReadOnly = top.ReadOnly
	}
	if top.AllowOther != nil {
		out.AllowOther = top.AllowOther
	}
	out.Debug = out.Debug || top.Debug
	out.NonEmpty = out.NonEmpty || top.NonEmpty
	out.Flags = base.Flags.under(top.Flags)
	out.Foreground = out.Foreground || top.Foreground
	return out
}

func firstString(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func firstDuration(v ...time.Duration) time.Duration {
	for _, d := range v {
		if d != 0 {
			return d
		}
	}
	return 0
}

// CheckMountTarget refuses a mountpoint that already holds a mount, that
// overlaps the backing directory (overlap.go), that is missing or not a
// directory, or (unless nonEmpty) that holds files the mount would hide,
// as fusermount did before FUSE 3 and gocryptfs still does. The mount
// table is read before the mountpoint is looked at: a stat of a mount
// whose daemon waits at a closed gate (on_revoke = "hang") would wait too.
// The refusals match ErrMountpointBusy or ErrMountTarget.
func CheckMountTarget(backing, mountpoint string, nonEmpty bool) error {
	mounted, err := IsMounted(mountpoint)
	if err != nil {
		return err
	}
	if mounted {
		return withKind(ErrMountpointBusy, fmt.Errorf("%s is already a mountpoint; unmount it first (`encvol umount %s`)", mountpoint, mountpoint))
	}
	// The overlap before the rest: a mountpoint that is the backing
	// directory is also not empty, but that is not what to hear.
	if err := CheckOverlap(backing, mountpoint); err != nil {
		return withKind(ErrMountTarget, err)
	}
	return withKind(ErrMountTarget, checkMountpointDir(mountpoint, nonEmpty))
}

func checkMountpointDir(mountpoint string, nonEmpty bool) error {
	st, err := os.Stat(mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mountpoint)
	}
	if nonEmpty {
		return nil
	}
	d, err := os.Open(mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read mountpoint %s: %w", mountpoint, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty (it holds %q): the mount would hide its files until unmounted; "+
			"use an empty directory, or add -o nonempty to mount over them anyway", mountpoint, names[0])
	}
	return nil
}

// IsMounted reports whether path is a mount point, from
// /proc/self/mountinfo (no stat of the path itself, which would ask a
// possibly hung FUSE server).
func IsMounted(path string) (bool, error) {
	fstype, err := MountType(path)
	return fstype != "", err
}

// scanMountinfo calls fn with the fields of each line of
// /proc/self/mountinfo until fn returns false.
func scanMountinfo(fn func(fields []string) bool) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	return readMountinfo(f, fn)
}

// readMountinfo is scanMountinfo on any reader of mountinfo lines.
func readMountinfo(r io.Reader, fn func(fields []string) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if !fn(strings.Fields(sc.Text())) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	return nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mount is a mounted, served volume: the FUSE server, its key gate, the
// key monitor and the control socket.
type Mount struct {
	spec    MountSpec
	client  kmsclient.Client
	fs      *fusefs.FS
	gate    *fusefs.Gate
	monitor *Monitor
	server  *fuse.Server
	control *controlServer
	log     zerolog.Logger
	started time.Time
	logFile string
	lock    *VolumeLock // held from mount to cleanup: one mount per volume

	cancel  context.CancelFunc
	monDone chan struct{}

	unmountMu sync.Mutex
	done      chan struct{}
	served    chan struct{} // closed once server is set: the control socket answers before
	cleanOnce sync.Once

	// followMu serialises rekeys the mount follows (rekeyfollow.go);
	// specMu guards spec.KMS and spec.KMSConfig, which a rekey to another
	// KMS changes.
	followMu sync.Mutex
	specMu   sync.Mutex
}

// MountVolume mounts spec with the keys of u (taking ownership of u) and
// starts the key monitor and the control socket. When it returns nil, the
// mount answers. client stays in use until the mount ends (it is closed
// by Wait). logFile is only reported in the status.
func MountVolume(ctx context.Context, spec MountSpec, client kmsclient.Client, u *Unlocked, log zerolog.Logger, logFile string) (*Mount, error) {
	if err := CheckComplete(spec.Backing); err != nil {
		u.Close()
		return nil, err
	}
	return mountVolume(spec, client, u, log, logFile)
}

// mountVolume is MountVolume without the refusal of an unfinished copy:
// the copy itself mounts its result once, before it declares it complete.
func mountVolume(spec MountSpec, client kmsclient.Client, u *Unlocked, log zerolog.Logger, logFile string) (*Mount, error) {
	if err := CheckKeyMemory(u, spec.AllowSwap, log); err != nil {
		u.Close()
		return nil, err
	}
	if err := CheckMountTarget(spec.Backing, spec.Mountpoint, spec.NonEmpty); err != nil {
		u.Close()
		return nil, err
	}
	if spec.Snapshot != "" {
		if err := checkSnapshotMount(spec, u); err != nil {
			u.Close()
			return nil, err
		}
	}
	lock, err := LockVolume(spec.Backing)
	if err != nil {
		u.Close()
		return nil, err
	}
	if err := headerUnchanged(spec.Backing, spec.Header); err != nil {
		u.Close()
		lock.Release()
		return nil, err
	}
	m, err := mountLocked(spec, client, u, log, logFile, lock)
	if err != nil {
		lock.Release()
	}
	return m, err
}

// mountLocked is MountVolume once the volume's lock is held; the mount
// keeps the lock until it is gone.
func mountLocked(spec MountSpec, client kmsclient.Client, u *Unlocked, log zerolog.Logger, logFile string, lock *VolumeLock) (*Mount, error) {
	h := spec.Header
	baseLog := log
	log = log.With().Str("volume", h.VolumeID).Str("key_id", h.KeyID).Logger()
	if u.SharedReadOnly && !spec.ReadOnly {
		log.Info().Msg("the volume is shared with this principal read-only: mounting read-only")
		spec.ReadOnly = true
	}
	gate := fusefs.NewGate(spec.OnRevoke, log)
	fsys, err := fusefs.New(fusefs.Options{
		Backing: spec.Backing, SectorSize: h.SectorSize, PlaintextNames: h.NameMode == NameModePlaintext, AuthMeta: h.AuthMeta(),
		Gate: gate, Log: log, VolumeID: h.VolumeID,
	})
	if err != nil {
		u.Close()
		return nil, err
	}
	noteOldFormat(log, h)
	m := &Mount{spec: spec, client: client, fs: fsys, gate: gate, log: log, started: time.Now(), logFile: logFile, lock: lock, done: make(chan struct{}), served: make(chan struct{})}
	m.monitor, err = NewMonitor(MonitorOptions{
		Backing: spec.Backing, Mountpoint: spec.Mountpoint, KMS: spec.KMS, Header: h, Client: client, Gate: gate,
		Interval: spec.KeyCheckInterval, Grace: spec.OfflineGrace, OnKeyEvent: spec.OnKeyEvent, Log: baseLog,
		ReadOnly: spec.ReadOnly,
	}, u)
	if err != nil {
		return nil, err
	}
	// The socket comes first: it also detects a second daemon for the
	// same mountpoint before we mount over anything.
	ops := controlOps{status: m.Status, unmount: m.Unmount, rekey: m.followRekey}
	if !spec.ReadOnly {
		ops.pause, ops.resume = m.pauseWrites, m.resumeWrites
	}
	m.control, err = listenControl(SocketPath(spec.Mountpoint), ops, log)
	if err != nil {
		m.monitor.Stop("mount failed")
		return nil, err
	}
	m.server, err = fsys.Mount(spec.Mountpoint, fusefs.MountOptions{
		AllowOther: spec.AllowOther, Debug: spec.Debug, FsName: spec.Backing, Name: "encvol",
		DirectMount: os.Geteuid() == 0, ReadOnly: spec.ReadOnly, AdaptiveProcs: spec.OwnProcess, MemoryTarget: spec.OwnProcess,
		NoExec: spec.Flags.Has(FlagNoExec), NoAtime: spec.Flags.Has(FlagNoAtime), NoDirAtime: spec.Flags.Has(FlagNoDirAtime),
		Sync: spec.Flags.Has(FlagSync), NoSymFollow: spec.Flags.Has(FlagNoSymFollow),
		NoXattr:      spec.Flags.Has(FlagNoXattr),
		CacheTimeout: spec.fsCacheTimeout(),
	})
	if err != nil {
		m.control.close()
		m.monitor.Stop("mount failed")
		return nil, err
	}
	close(m.served)
	mctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.monDone = make(chan struct{})
	go func() {
		defer close(m.monDone)
		m.monitor.Run(mctx)
	}()
	go func() {
		m.server.Wait()
		<-fsys.Finished()
		m.cleanup("unmounted")
	}()
	log.Info().Str("op", "mount").Str("path", spec.Mountpoint).Str("backing", spec.Backing).Str("kms", spec.KMS).
		Dur("key_check_interval", spec.KeyCheckInterval).Dur("offline_grace", spec.OfflineGrace).
		Str("on_revoke", spec.OnRevoke).Bool("read_only", spec.ReadOnly).Msg("volume mounted")
	if !keywrap.SecretMemory {
		// Without runtime/secret, freed copies of key material (hash
		// states inside HKDF, cipher objects) stay in the heap until
		// reused; the gate still zeroizes the keys it owns.
		log.Warn().Msg(keywrap.SecretOff + ": AES key schedules and freed heap copies of key material are not erased when the gate closes; rebuild with CGO_ENABLED=0 GOEXPERIMENT=runtimesecret")
	}
	return m, nil
}

// cleanup runs once after the kernel mount is gone: stop the monitor,
// close the gate (zeroizing every key), remove the socket.
func (m *Mount) cleanup(cause string) {
	m.cleanOnce.Do(func() {
		m.cancel()
		<-m.monDone
		m.monitor.Stop(cause)
		m.control.close()
		// The monitor's client: a rekey to another KMS replaced the first.
		if err := m.monitor.Client().Close(); err != nil {
			m.log.Warn().Err(err).Msg("closing the KMS client failed")
		}
		if err := m.lock.Release(); err != nil {
			m.log.Warn().Err(err).Msg("releasing the volume lock failed")
		}
		m.log.Info().Str("op", "unmount").Str("path", m.spec.Mountpoint).Msg("volume unmounted; keys zeroized")
		close(m.done)
	})
}

// Unmount asks the kernel to unmount (the FUSE server flushes first). It
// fails, leaving everything running, when the mount is busy.
func (m *Mount) Unmount() error {
	m.unmountMu.Lock()
	defer m.unmountMu.Unlock()
	select {
	case <-m.done:
		return nil
	default:
	}
	select {
	case <-m.served:
	default:
		return fmt.Errorf("unmount %s: the volume is still being mounted; try again", m.spec.Mountpoint)
	}
	if err := m.server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", m.spec.Mountpoint, err)
	}
	return nil
}

// Wait blocks until the volume is unmounted (by Unmount, `encvol umount`,
// umount(8) or fusermount3 -u) and its keys are zeroized.
func (m *Mount) Wait() { <-m.done }

// Done is closed when Wait would return.
func (m *Mount) Done() <-chan struct{} { return m.done }

// Monitor returns the key monitor (tests, status).
func (m *Mount) Monitor() *Monitor { return m.monitor }

// Status reports the mount's state for `encvol status`.
func (m *Mount) Status() Status {
	ms := m.monitor.Status()
	h, _, kmsName := m.monitor.watched() // a rekey the mount followed changes both
	return Status{
		VolumeID: h.VolumeID, Name: m.spec.Name, Backing: m.spec.Backing, Mountpoint: m.spec.Mountpoint,
		KMS: kmsName, KeyID: h.KeyID, KeyState: ms.KeyState, Gate: gateName(m.gate.IsOpen()), GateCause: ms.GateCause,
		LastCheck: ms.LastCheck, LastSuccess: ms.LastSuccess, LastResult: ms.LastResult, LastLatencyMS: ms.LastLatency,
		Checks: ms.Checks, Transitions: ms.Transitions,
		KeyCheckInterval: m.spec.KeyCheckInterval.String(), OfflineGrace: m.spec.OfflineGrace.String(),
		OnRevoke: m.spec.OnRevoke, ReadOnly: m.spec.ReadOnly, IO: m.fs.Counters(), Ops: m.fs.Ops(), Snapshot: m.spec.Snapshot,
		PID: os.Getpid(), Started: m.started, Socket: SocketPath(m.spec.Mountpoint), LogFile: m.logFile,
	}
}
