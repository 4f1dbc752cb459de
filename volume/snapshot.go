package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// A snapshot is a directory holding the manifest (ManifestFile) and
// SnapshotBackingDir, a point-in-time copy of the volume's backing
// directory: ciphertext only, mountable read-only as it is. Snapshots live
// in the volume's snapshot directory (the `snapshots` key, default
// BACKING.snapshots). Names starting with a dot there are work in progress
// (partialPrefix, deletingPrefix) that the next snapshot command removes.

// SnapshotBackingDir is the backing copy's name inside a snapshot.
const SnapshotBackingDir = "backing"

const (
	snapshotsSuffix = ".snapshots"
	partialPrefix   = ".partial-"
	deletingPrefix  = ".deleting-"
)

// ErrNotSnapshot is matched by the refusal of a path that is no snapshot.
var ErrNotSnapshot = errors.New("not an encvol snapshot")

// ErrSnapshotName is matched by the refusal of a snapshot name that is
// invalid or taken: an argument to change.
var ErrSnapshotName = errors.New("snapshot name unusable")

// SnapshotVolume is the volume a snapshot command works on.
type SnapshotVolume struct {
	Name      string // [volumes.NAME], "" when given as a backing directory
	Backing   string // absolute
	Snapshots string // the snapshot directory, absolute
	Header    *keywrap.Header
	KMS       string
	KMSConfig kmsclient.Config
}

// ResolveSnapshotVolume resolves VOLUME of `encvol snapshot ...`: a
// [volumes.NAME] or a backing directory. The header is read (not
// authenticated: that needs the key).
func (c *Config) ResolveSnapshotVolume(arg string) (SnapshotVolume, error) {
	// A restore killed between its renames leaves no backing directory
	// under the volume's name; any snapshot command puts one back first.
	if b := c.backingOf(arg); b != "" {
		if _, err := os.Lstat(b); errors.Is(err, os.ErrNotExist) {
			if err := recoverRestore(b); err != nil {
				return SnapshotVolume{}, err
			}
		}
	}
	t, err := c.ResolveVerify(arg)
	if err != nil {
		return SnapshotVolume{}, err
	}
	if t.Snapshot != "" {
		return SnapshotVolume{}, fmt.Errorf("%s is a snapshot, not a volume: give the volume it was taken of (its volume ID is %s)", t.Snapshot, t.Header.VolumeID)
	}
	v := SnapshotVolume{Name: t.Name, Backing: t.Backing, Header: t.Header, KMS: t.KMS, KMSConfig: t.KMSConfig}
	v.Snapshots = t.volume.Snapshots
	if t.Name == "" {
		// Named by its backing directory: a table of the configuration
		// for that directory still says where its snapshots go.
		for _, name := range sortedKeys(c.Volumes) {
			if vc := c.Volumes[name]; vc.Backing == t.Backing && vc.Snapshots != "" {
				v.Snapshots = vc.Snapshots
				break
			}
		}
	}
	if v.Snapshots == "" {
		v.Snapshots = strings.TrimSuffix(t.Backing, "/") + snapshotsSuffix
	}
	if v.Snapshots == v.Backing || strings.HasPrefix(v.Snapshots, v.Backing+"/") {
		return v, fmt.Errorf("the snapshot directory %s of volume %s is inside its backing directory, so each snapshot would copy the ones before; set snapshots in [volumes.%s] to a directory outside it",
			v.Snapshots, v.Backing, firstString(v.Name, "NAME"))
	}
	return v, nil
}

// backingOf is the backing directory that arg names (a [volumes.NAME] or
// a path), "" when it names nothing.
func (c *Config) backingOf(arg string) string {
	if v, ok := c.Volumes[arg]; ok && !strings.ContainsRune(arg, '/') {
		return v.Backing
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return ""
	}
	return abs
}

// Snapshot is a snapshot directory as found on disk.
type Snapshot struct {
	Path     string // the snapshot directory, absolute
	Backing  string // its backing copy
	Manifest *Manifest
	Header   *keywrap.Header
}

// IsSnapshot reports whether dir holds a snapshot manifest.
func IsSnapshot(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, ManifestFile))
	return err == nil && st.Mode().IsRegular()
}

// snapshotOf returns the snapshot directory that path is, or whose
// backing copy it is, or "" when it is neither: a snapshot's backing copy
// named directly must not be taken for a volume that can be written.
func snapshotOf(path string) string {
	if IsSnapshot(path) {
		return path
	}
	if filepath.Base(path) == SnapshotBackingDir && IsSnapshot(filepath.Dir(path)) {
		return filepath.Dir(path)
	}
	return ""
}

// SnapshotBacking returns the backing copy of the snapshot at dir, or dir
// itself when it is no snapshot: what commands that take a volume or a
// snapshot work on.
func SnapshotBacking(dir string) string {
	if IsSnapshot(dir) {
		return filepath.Join(dir, SnapshotBackingDir)
	}
	return dir
}

// OpenSnapshot reads the snapshot at dir: its manifest (parsed, not yet
// authenticated) and the header of its backing copy.
func OpenSnapshot(dir string) (*Snapshot, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(abs, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(abs); serr != nil {
			return nil, fmt.Errorf("snapshot %s: %w", abs, serr)
		}
		return nil, fmt.Errorf("%s is %w (no %s)", abs, ErrNotSnapshot, ManifestFile)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", abs, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", abs, err)
	}
	s := &Snapshot{Path: abs, Backing: filepath.Join(abs, SnapshotBackingDir), Manifest: m}
	if s.Header, err = keywrap.ReadHeader(s.Backing); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", abs, err)
	}
	return s, nil
}

// Verify authenticates the manifest under dk (the snapshot's unwrapped
// data key) and checks that it describes this snapshot's header.
func (s *Snapshot) Verify(dk *keywrap.Key) error {
	if err := s.Manifest.Verify(dk); err != nil {
		return fmt.Errorf("snapshot %s: %w", s.Path, err)
	}
	sum, err := headerSum(s.Backing)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", s.Path, err)
	}
	if sum != s.Manifest.HeaderSHA256 {
		return fmt.Errorf("snapshot %s: its volume header is not the one its manifest names (replaced or modified): %w", s.Path, ErrManifestMAC)
	}
	if s.Header.VolumeID != s.Manifest.VolumeID {
		return fmt.Errorf("snapshot %s: its header names volume %s, its manifest %s: %w", s.Path, s.Header.VolumeID, s.Manifest.VolumeID, ErrManifestMAC)
	}
	return nil
}

// headerSum is the SHA-256 of the header file in backing, in hex.
func headerSum(backing string) (string, error) {
	b, err := os.ReadFile(filepath.Join(backing, keywrap.HeaderFile))
	if err != nil {
		return "", fmt.Errorf("read volume header: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// SnapshotInfo is one line of `encvol snapshot list`.
type SnapshotInfo struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	VolumeID string    `json:"volume_id"`
	Created  time.Time `json:"created"`
	Entries  int       `json:"entries"`
	// Mounted is where the snapshot is mounted, "" when it is not.
	Mounted string `json:"mounted,omitempty"`
}

// ListSnapshots lists the snapshots of v, oldest first. It needs no key:
// the manifests are read, not authenticated.
func ListSnapshots(v SnapshotVolume) ([]SnapshotInfo, error) {
	ents, err := os.ReadDir(v.Snapshots)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %s: %w", v.Backing, err)
	}
	var out []SnapshotInfo
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		s, err := OpenSnapshot(filepath.Join(v.Snapshots, e.Name()))
		if err != nil || s.Manifest.VolumeID != v.Header.VolumeID {
			continue
		}
		info := SnapshotInfo{ID: s.Manifest.SnapshotID, Name: s.Manifest.Name, Path: s.Path, VolumeID: s.Manifest.VolumeID,
			Created: s.Manifest.Created, Entries: s.Manifest.Entries}
		// From the mount table: trying the lock could make a mount that
		// starts at the same moment fail.
		if id, err := dirIdentity(s.Backing); err == nil {
			info.Mounted = encvolMountOf(id)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// FindSnapshot resolves SNAPSHOT of `encvol snapshot delete|restore`: a
// path, or the name of a snapshot in v's snapshot directory. It must be a
// snapshot of v.
func FindSnapshot(v SnapshotVolume, arg string) (*Snapshot, error) {
	path := arg
	if !strings.ContainsRune(arg, '/') {
		// A name in the snapshot directory first, then a path.
		path = filepath.Join(v.Snapshots, arg)
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(arg); err != nil {
				return nil, fmt.Errorf("volume %s has no snapshot named %q (in %s); `encvol snapshot list %s` lists them",
					v.Backing, arg, v.Snapshots, v.Backing)
			}
			path = arg
		}
	}
	s, err := OpenSnapshot(path)
	if err != nil {
		return nil, err
	}
	if s.Manifest.VolumeID != v.Header.VolumeID {
		return nil, fmt.Errorf("snapshot %s was taken of volume %s, not of %s (volume %s); give one of its own snapshots (`encvol snapshot list %s`)",
			s.Path, s.Manifest.VolumeID, v.Backing, v.Header.VolumeID, v.Backing)
	}
	return s, nil
}

// DeleteSnapshot removes snapshot s of v. A mounted snapshot is refused.
// The snapshot is first renamed to a dot name, so a delete that is killed
// never leaves something that looks like a complete snapshot; the next
// snapshot command finishes it.
func DeleteSnapshot(v SnapshotVolume, s *Snapshot) error {
	dir, err := lockSnapshotDir(v)
	if err != nil {
		return err
	}
	defer dir.release()
	lock, err := LockVolume(s.Backing)
	if err != nil {
		return snapshotInUse(s, err)
	}
	defer lock.Release()
	gone := filepath.Join(filepath.Dir(s.Path), deletingPrefix+s.Manifest.SnapshotID)
	if err := os.Rename(s.Path, gone); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", s.Path, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", s.Path, err)
	}
	return nil
}

// snapshotInUse rewords the lock failure of a snapshot that is mounted.
func snapshotInUse(s *Snapshot, err error) error {
	var ie *InUseError
	if !errors.As(err, &ie) {
		return err
	}
	if ie.Mountpoint != "" {
		return &reworded{msg: fmt.Sprintf("snapshot %s is mounted on %s; unmount it first (`encvol umount %s`)", s.Path, ie.Mountpoint, ie.Mountpoint), err: err}
	}
	return err
}

// reworded is err with another text; errors.Is/As see err.
type reworded struct {
	msg string
	err error
}

func (r *reworded) Error() string { return r.msg }
func (r *reworded) Unwrap() error { return r.err }

// snapshotDirLock serializes the snapshot commands of one volume: a flock on
// its snapshot directory.
type snapshotDirLock struct{ f *os.File }

// lockSnapshotDir creates v's snapshot directory (0700) when missing, locks
// it, and removes what killed commands left in it.
func lockSnapshotDir(v SnapshotVolume) (*snapshotDirLock, error) {
	if err := os.MkdirAll(v.Snapshots, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot directory of %s: %w", v.Backing, err)
	}
	f, err := os.Open(v.Snapshots)
	if err != nil {
		return nil, fmt.Errorf("snapshot directory of %s: %w", v.Backing, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "another encvol process"
			var st unix.Stat_t
			if unix.Fstat(int(f.Fd()), &st) == nil {
				if pid := flockHolder(identityOf(&st)); pid != 0 {
					who = fmt.Sprintf("process %d (%s)", pid, processName(pid))
				}
			}
			return nil, fmt.Errorf("the snapshots of volume %s are in use by %s (a snapshot being taken, deleted or restored); wait for it to finish", v.Backing, who)
		}
		return nil, fmt.Errorf("lock snapshot directory %s: %w", v.Snapshots, err)
	}
	l := &snapshotDirLock{f: f}
	ents, err := os.ReadDir(v.Snapshots)
	if err != nil {
		l.release()
		return nil, fmt.Errorf("snapshot directory %s: %w", v.Snapshots, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), partialPrefix) || strings.HasPrefix(e.Name(), deletingPrefix) {
			if err := os.RemoveAll(filepath.Join(v.Snapshots, e.Name())); err != nil {
				l.release()
				return nil, fmt.Errorf("remove the unfinished %s: %w", filepath.Join(v.Snapshots, e.Name()), err)
			}
		}
	}
	return l, nil
}

func (l *snapshotDirLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// checkSnapshotMount authenticates the manifest of the snapshot spec
// mounts, with the keys of u, before anything is served from it.
func checkSnapshotMount(spec MountSpec, u *Unlocked) error {
	s, err := OpenSnapshot(spec.Snapshot)
	if err != nil {
		return err
	}
	if err := s.Verify(u.DK); err != nil {
		return fmt.Errorf("mount of snapshot refused: %w", err)
	}
	return nil
}
