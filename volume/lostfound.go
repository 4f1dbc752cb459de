package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// LostFound is the directory in a volume's root that fsck --repair moves
// what it cannot read into, as e2fsck does.
const LostFound = "lost+found"

// lostFoundRecord is what a quarantined entry carries in its
// fusefs.LostFoundXattr: where it was and why it was moved.
type lostFoundRecord struct {
	From   string    `json:"from"`
	Reason string    `json:"reason"`
	Damage string    `json:"damage,omitempty"` // damageOf the content finding, "" when the content was fine
	At     time.Time `json:"at"`
}

// readRecord returns the quarantine record of the open backing file f, or
// nil when it has none (or one that does not authenticate).
func (fk *fsck) readRecord(f *os.File) *lostFoundRecord {
	buf := make([]byte, 64<<10)
	n, err := unix.Fgetxattr(int(f.Fd()), fusefs.LostFoundXattr, buf)
	if err != nil {
		return nil
	}
	pt, err := fk.src.Keys().Names.OpenXattrValue(fusefs.LostFoundXattr, nil, buf[:n])
	if err != nil {
		return nil
	}
	var rec lostFoundRecord
	if json.Unmarshal(pt, &rec) != nil {
		return nil
	}
	return &rec
}

// lostFoundDir is the open lost+found backing directory.
type lostFoundDir struct {
	fd      int
	id      []byte
	backing string // its backing name in the root
}

// lostFound opens lost+found, creating it (mode 0700, the caller's owner)
// when the volume has none.
func (r *repairer) lostFound() (*lostFoundDir, error) {
	if r.lf != nil {
		return r.lf, nil
	}
	// Names of plaintext-names volumes do not use it, but the record of
	// lost+found names it on a volume that binds entries.
	rootID, err := names.ReadDirID(r.rootfd)
	if err != nil && (!r.keys.Names.Plaintext() || r.keys.Names.BindEntries()) {
		return nil, fmt.Errorf("lost+found: the root directory's ID is unusable: %w", err)
	}
	bname, long, err := r.keys.Names.EncryptName(rootID, LostFound)
	if err != nil || long != "" {
		return nil, fmt.Errorf("lost+found: encrypt its name: %w", err)
	}
	made := false
	if err := unix.Mkdirat(r.rootfd, bname, fusefs.BackingDirMode); err == nil {
		made = true
	} else if !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create %s: %w", LostFound, err)
	}
	fd, err := unix.Openat(r.rootfd, bname, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (rename what is there through the mount and run the repair again)", LostFound, err)
	}
	id, err := names.ReadDirID(fd)
	if errors.Is(err, unix.ENOENT) && made {
		id, err = names.CreateDirID(fd)
	}
	if err == nil && made {
		var val []byte
		if val, err = fusefs.EncodeMetaFor(r.keys.Names, id, &fusefs.Place{DirID: rootID, Name: LostFound}, 0o700, uint32(os.Geteuid()), uint32(os.Getegid())); err == nil {
			err = unix.Fsetxattr(fd, fusefs.MetaXattr, val, 0)
		}
		if err == nil {
			err = unix.Fsync(r.rootfd)
		}
		if err == nil {
			r.act(FsckAction{Action: "create-lost+found", Path: "/" + LostFound, Backing: bname})
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", LostFound, err)
	}
	r.lf = &lostFoundDir{fd: fd, id: id, backing: bname}
	return r.lf, nil
}

// quarantine moves the backing entry rel into lost+found under a new name
// made from base (the plaintext name, or "" when unknown), keeping its
// ciphertext, and marks it with rec. It returns the plaintext path it
// went to.
func (r *repairer) quarantine(rel, base string, typ uint32, nameBroken bool, rec lostFoundRecord) (string, error) {
	lf, err := r.lostFound()
	if err != nil {
		return "", err
	}
	dirRel, name := path.Split(rel)
	dfd, err := r.openDir(strings.TrimSuffix(dirRel, "/"))
	if err != nil {
		return "", err
	}
	defer unix.Close(dfd)
	if base == "" {
		sum := sha256.Sum256([]byte(rel))
		base = "unnamed-" + hex.EncodeToString(sum[:6])
	}
	if len(base) > 240 {
		base = base[:240]
	}
	for n := 0; ; n++ {
		cand := base
		if n > 0 {
			cand += "." + strconv.Itoa(n)
		}
		bname, long, err := r.keys.Names.EncryptName(lf.id, cand)
		if err != nil {
			return "", fmt.Errorf("name %q in lost+found: %w", cand, err)
		}
		if long != "" {
			if err := names.WriteLongName(lf.fd, bname, long); err != nil {
				return "", err
			}
		}
		err = unix.Renameat2(dfd, name, lf.fd, bname, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			if long != "" {
				_ = names.RemoveLongName(lf.fd, bname)
			}
			return "", fmt.Errorf("move %s into %s: %w", rel, LostFound, err)
		}
		if !r.keys.Names.Plaintext() && names.IsLongName(name) {
			r.dropSideFile(dfd, rel, name, nameBroken)
		}
		if typ == unix.S_IFREG || typ == unix.S_IFDIR {
			if err := r.writeRecord(lf.fd, bname, rec); err != nil {
				return "", err
			}
			if err := r.bindInLostFound(lf, bname, cand, typ == unix.S_IFDIR); err != nil {
				return "", fmt.Errorf("moved %s into %s: %w", rel, LostFound, err)
			}
		}
		if err := errors.Join(unix.Fsync(lf.fd), unix.Fsync(dfd)); err != nil {
			return "", fmt.Errorf("sync after moving %s: %w", rel, err)
		}
		r.moved++
		return "/" + LostFound + "/" + cand, nil
	}
}

// dropSideFile removes the long-name side file an entry left behind when
// it moved; a side file that did not decode is kept in the repair log.
func (r *repairer) dropSideFile(dfd int, rel, name string, broken bool) {
	side := name + names.LongNameSuffix
	if broken {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d/%s", dfd, side)); err == nil {
			r.keep(rel+names.LongNameSuffix, "long-name side file", b)
		}
	}
	_ = names.RemoveLongName(dfd, name)
}

// writeRecord seals rec into the quarantine attribute of entry bname of
// dirfd.
func (r *repairer) writeRecord(dirfd int, bname string, rec lostFoundRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sealed, err := r.keys.Names.SealXattrValue(fusefs.LostFoundXattr, nil, b)
	if err != nil {
		return err
	}
	if err := unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, bname), fusefs.LostFoundXattr, sealed, 0); err != nil {
		return fmt.Errorf("mark the quarantined entry: %w", err)
	}
	return nil
}

// writeLog writes the repair log, text, as a new file of lost+found and
// returns its plaintext path.
func (r *repairer) writeLog(text string) (string, error) {
	lf, err := r.lostFound()
	if err != nil {
		return "", err
	}
	base := "fsck-" + r.now.UTC().Format("20060102T150405Z")
	for n := 0; ; n++ {
		cand := base + ".log"
		if n > 0 {
			cand = fmt.Sprintf("%s.%d.log", base, n)
		}
		bname, _, err := r.keys.Names.EncryptName(lf.id, cand)
		if err != nil {
			return "", err
		}
		fd, err := unix.Openat(lf.fd, bname, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fusefs.BackingFileMode)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create the repair log: %w", err)
		}
		f := os.NewFile(uintptr(fd), cand)
		err = r.writeSectorFile(f, []byte(text), &fusefs.Place{DirID: lf.id, Name: cand})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = unix.Unlinkat(lf.fd, bname, 0)
			return "", fmt.Errorf("write the repair log: %w", err)
		}
		if err := unix.Fsync(lf.fd); err != nil {
			return "", fmt.Errorf("write the repair log: %w", err)
		}
		return "/" + LostFound + "/" + cand, nil
	}
}

// writeSectorFile encrypts data into the new, empty backing file f as the
// mount would, with mode 0600 and the caller's owner.
func (r *repairer) writeSectorFile(f *os.File, data []byte, at *fusefs.Place) error {
	sf, err := sector.NewFile(f, r.keys.Content.SectorSize())
	if err != nil {
		return err
	}
	if r.keys.Names.AuthMeta() {
		if err := fusefs.WriteFileHeader(int(f.Fd()), r.keys.Content); err != nil {
			return err
		}
	}
	if _, err := sf.WriteAt(r.keys.Content, data, 0); err != nil {
		return err
	}
	val, _, err := fusefs.EncodeMetaAt(r.keys.Names, int(f.Fd()), "", false, at, 0o600, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		return err
	}
	if err := unix.Fsetxattr(int(f.Fd()), fusefs.MetaXattr, val, 0); err != nil {
		return err
	}
	return f.Sync()
}

// bindInLostFound binds the record of the entry just moved into lost+found
// as bname (plaintext name) to that name, unless it is a hard-linked file.
func (r *repairer) bindInLostFound(lf *lostFoundDir, bname, name string, dir bool) error {
	if !r.keys.Names.BindEntries() {
		return nil
	}
	var at *fusefs.Place
	var st unix.Stat_t
	if err := unix.Fstatat(lf.fd, bname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if dir || st.Nlink == 1 {
		at = &fusefs.Place{DirID: lf.id, Name: name}
	}
	return r.rebind(lf.fd, bname, dir, at)
}
