package volume

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/keywrap/names"
)

// repairer applies --repair. It never deletes what could be evidence of
// what happened: unreadable entries move into lost+found with their
// ciphertext, and the bytes of what is removed (a malformed attribute, a
// symlink target or directory ID that does not decrypt) go into a repair
// log written there. Only leftovers of interrupted writes (temporary
// files, orphaned long-name side files) are removed outright, after they
// were reported.
type repairer struct {
	fk     *fsck
	keys   *fusefs.Keys
	rootfd int
	now    time.Time
	lf     *lostFoundDir
	moved  int
	kept   strings.Builder // evidence for the repair log
}

// repairOp is one step of a repair and the findings it deals with.
type repairOp struct {
	depth    int // of the backing path: deeper entries are repaired first
	prio     int // order among steps at one depth
	findings []*Finding
	run      func() (FsckAction, error)

	// quarantine steps
	ref        entryRef
	reasons    []string
	damage     string
	nameBroken bool
}

const rootFirst = 1 << 30 // depth that sorts the root's directory ID first

func (fk *fsck) repair(ctx context.Context) error {
	rootfd, err := unix.Open(fk.src.Root(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("repair %s: %w", fk.src.Root(), err)
	}
	defer unix.Close(rootfd)
	r := &repairer{fk: fk, keys: fk.src.Keys(), rootfd: rootfd, now: time.Now().UTC()}
	defer func() {
		if r.lf != nil {
			unix.Close(r.lf.fd)
		}
	}()
	ops := r.plan()
	if len(ops) == 0 {
		return nil
	}
	fk.prog.Start("repair", int64(len(ops)), 0)
	left := map[*Finding]int{}
	for _, op := range ops {
		for _, f := range op.findings {
			left[f]++
		}
	}
	for _, op := range ops {
		if ctx.Err() != nil {
			break
		}
		a, err := op.run()
		if err != nil {
			a.Error = err.Error()
			for _, f := range op.findings {
				left[f] = -1 << 20
			}
		} else {
			for _, f := range op.findings {
				if left[f]--; left[f] == 0 {
					f.Fixed = true
				}
			}
		}
		r.act(a)
		fk.prog.AddFiles(1)
	}
	fk.prog.Done()
	if r.lf != nil || r.kept.Len() > 0 {
		p, err := r.writeLog(r.logText())
		a := FsckAction{Action: "write-repair-log", Path: p, Detail: "what was found and done, and the bytes of what was removed"}
		if err != nil {
			a.Error = err.Error()
		}
		fk.rep.RepairLog = p
		r.act(a)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w during the repair: %w", ErrFsckCancelled, err)
	}
	return nil
}

func (r *repairer) act(a FsckAction) { r.fk.rep.Actions = append(r.fk.rep.Actions, a) }

// keep adds bytes about to be removed to the repair log.
func (r *repairer) keep(backing, what string, b []byte) {
	fmt.Fprintf(&r.kept, "backing %s: %s, %d bytes: %s\n", backing, what, len(b), hex.EncodeToString(b))
}

// plan turns the findings into repair steps, in the order they must run.
func (r *repairer) plan() []*repairOp {
	var ops []*repairOp
	moves := map[string]*repairOp{} // quarantine steps by backing path
	for _, f := range r.fk.rep.Findings {
		if f.Severity != SeverityError && f.Severity != SeverityLeftover {
			continue
		}
		switch f.Kind {
		case FindTemp, FindOrphanLong, FindOrphanLink:
			ops = append(ops, r.removeOp(f))
		case FindMissingDirID, FindBadDirID:
			ops = append(ops, r.dirIDOp(f))
		case FindMeta:
			ops = append(ops, r.attrOp(f, fusefs.MetaXattr, "reset-mode-owner", "the malformed stored mode and owner"))
		case FindXattr:
			if f.attr != "" {
				ops = append(ops, r.attrOp(f, f.attr, "remove-xattr", "extended attribute "+f.attr))
			}
		case FindSymlink, FindLinkTarget:
			ops = append(ops, r.symlinkOp(f))
		case FindChanged:
			ops = append(ops, r.recordOp(f))
		case FindMovedEntry:
			// Quarantined as it is, and bound to its name in lost+found.
			r.addMove(&ops, moves, entryRef{path: f.Path, backing: f.Backing, typ: f.typ}, f)
		case FindName:
			if f.typ == unix.S_IFLNK && r.keys.Names.BindLinks() {
				// Its target is bound to the name that is lost: under
				// another name in lost+found it could never be read.
				ops = append(ops, r.symlinkOp(f))
				continue
			}
			r.addMove(&ops, moves, entryRef{path: f.Path, backing: f.Backing, typ: f.typ}, f)
		case FindBadSectors, FindZeroed, FindBadHeader:
			for _, ref := range r.namesOf(f) {
				r.addMove(&ops, moves, ref, f)
			}
		}
	}
	slices.SortStableFunc(ops, func(a, b *repairOp) int {
		if a.depth != b.depth {
			return b.depth - a.depth
		}
		return a.prio - b.prio
	})
	return ops
}

// namesOf lists every name of the file a content finding is about.
func (r *repairer) namesOf(f *Finding) []entryRef {
	r.fk.mu.Lock()
	defer r.fk.mu.Unlock()
	if li := r.fk.links[f.inode]; li != nil && li.content == f {
		return slices.Clone(li.names)
	}
	return []entryRef{{path: f.Path, backing: f.Backing, typ: f.typ}}
}

func depthOf(backing string) int { return strings.Count(backing, "/") }

// addMove adds f to the quarantine of ref, one step per backing entry.
func (r *repairer) addMove(ops *[]*repairOp, moves map[string]*repairOp, ref entryRef, f *Finding) {
	op := moves[ref.backing]
	if op == nil {
		op = &repairOp{depth: depthOf(ref.backing), prio: 2, ref: ref}
		op.run = func() (FsckAction, error) { return r.move(op) }
		moves[ref.backing] = op
		*ops = append(*ops, op)
	}
	op.findings = append(op.findings, f)
	op.reasons = append(op.reasons, f.Kind)
	if f.Kind == FindName {
		op.nameBroken = true
	} else {
		op.damage = damageOf(f)
	}
}

func (r *repairer) move(op *repairOp) (FsckAction, error) {
	a := FsckAction{Action: "quarantine", Path: op.ref.path, Backing: op.ref.backing}
	from := op.ref.path
	if from == "" {
		from = "backing " + op.ref.backing
	}
	rec := lostFoundRecord{From: from, Reason: strings.Join(op.reasons, ", "), Damage: op.damage, At: r.now}
	base := ""
	if op.ref.path != "" && op.ref.path != "/" {
		base = path.Base(op.ref.path)
	}
	to, err := r.quarantine(op.ref.backing, base, op.ref.typ, op.nameBroken, rec)
	a.To = to
	a.Detail = "moved with its ciphertext; " + rec.Reason
	return a, err
}

// removeOp removes a leftover of an interrupted write.
func (r *repairer) removeOp(f *Finding) *repairOp {
	return &repairOp{depth: depthOf(f.Backing), prio: 3, findings: []*Finding{f}, run: func() (FsckAction, error) {
		a := FsckAction{Action: "remove", Backing: f.Backing, Detail: f.Detail}
		dir, name := path.Split(f.Backing)
		dfd, err := r.openDir(strings.TrimSuffix(dir, "/"))
		if err != nil {
			return a, err
		}
		defer unix.Close(dfd)
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			return a, fmt.Errorf("remove %s: %w", f.Backing, err)
		}
		return a, nil
	}}
}

// dirIDOp gives a directory a new directory ID; a damaged old one goes
// into the repair log. Names encrypted under the old ID cannot be
// decrypted any more: they are quarantined as unnamed entries (their own
// steps, which run first).
func (r *repairer) dirIDOp(f *Finding) *repairOp {
	dir := strings.TrimSuffix(path.Dir(f.Backing), ".")
	depth := depthOf(f.Backing)
	if dir == "" {
		depth = rootFirst
	}
	return &repairOp{depth: depth, findings: []*Finding{f}, run: func() (FsckAction, error) {
		a := FsckAction{Action: "recreate-dir-id", Path: f.Path, Backing: f.Backing}
		dfd, err := r.openDir(dir)
		if err != nil {
			return a, err
		}
		defer unix.Close(dfd)
		if f.Kind == FindBadDirID {
			if b, err := os.ReadFile(procPath(dfd, names.DirIDFile)); err == nil {
				r.keep(f.Backing, "damaged directory ID", b)
			}
			if err := unix.Unlinkat(dfd, names.DirIDFile, 0); err != nil {
				return a, fmt.Errorf("remove the damaged %s: %w", f.Backing, err)
			}
		}
		if _, err := names.CreateDirID(dfd); err != nil {
			return a, fmt.Errorf("directory %s: %w", f.Where(), err)
		}
		a.Detail = "a new directory ID; names encrypted under the old one are in lost+found"
		if r.keys.Names.AuthMeta() {
			// The stored mode and owner were bound to the lost ID.
			if v, err := fusefs.GetXattr(procPath(dfd, "."), fusefs.MetaXattr); err == nil {
				r.keep(f.Backing, "attribute "+fusefs.MetaXattr, v)
			}
			if err := r.resetMeta(procPath(dfd, "."), dir); err != nil {
				return a, err
			}
			a.Detail += "; its mode and owner, bound to the old ID, are reset to 0700 and this user"
		}
		if r.keys.Names.Plaintext() {
			// Its names still read; their records must name the new ID.
			if err := r.rebindChildren(dfd); err != nil {
				return a, err
			}
		}
		return a, nil
	}}
}

// attrOp removes a backing attribute that does not decode, keeping its
// name and value in the repair log.
func (r *repairer) attrOp(f *Finding, attr, action, what string) *repairOp {
	return &repairOp{depth: depthOf(f.Backing), prio: 1, findings: []*Finding{f}, run: func() (FsckAction, error) {
		a := FsckAction{Action: action, Path: f.Path, Backing: f.Backing, Detail: "removed " + what + " (its bytes are in the repair log)"}
		reset := attr == fusefs.MetaXattr && r.keys.Names.AuthMeta()
		if reset {
			a.Detail = "reset " + what + " to 0600/0700 and this user (the old bytes are in the repair log)"
		}
		return a, r.atEntry(f.Backing, func(dfd int, name string) error {
			p := procPath(dfd, name)
			if v, err := fusefs.GetXattr(p, attr); err == nil {
				r.keep(f.Backing, "attribute "+attr, v)
			}
			if reset {
				// Every entry must have one: reset it to 0600/0700 and
				// the caller's owner, bound to the entry.
				return r.resetMeta(p, f.Backing)
			}
			if err := unix.Lremovexattr(p, attr); err != nil {
				return fmt.Errorf("remove attribute %s of %s: %w", attr, f.Backing, err)
			}
			return nil
		})
	}}
}

// symlinkOp removes a symlink whose target does not decrypt, keeping the
// stored target in the repair log.
func (r *repairer) symlinkOp(f *Finding) *repairOp {
	return &repairOp{depth: depthOf(f.Backing), prio: 1, findings: []*Finding{f}, run: func() (FsckAction, error) {
		a := FsckAction{Action: "remove-symlink", Path: f.Path, Backing: f.Backing, Detail: "its stored target is in the repair log"}
		return a, r.atEntry(f.Backing, func(dfd int, name string) error {
			t, err := fusefs.ReadlinkAt(dfd, name)
			if err != nil {
				return fmt.Errorf("read symlink %s: %w", f.Backing, err)
			}
			r.keep(f.Backing, "symlink target", []byte(t))
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				return fmt.Errorf("remove symlink %s: %w", f.Backing, err)
			}
			if err := r.dropLongLink(f.Backing, t); err != nil {
				return err
			}
			if r.keys.Names.Plaintext() || !names.IsLongName(name) {
				return nil
			}
			return names.RemoveLongName(dfd, name)
		})
	}}
}

// recordOp brings a quarantine record up to date with the file's damage.
func (r *repairer) recordOp(f *Finding) *repairOp {
	return &repairOp{depth: depthOf(f.Backing), prio: 1, findings: []*Finding{f}, run: func() (FsckAction, error) {
		a := FsckAction{Action: "update-quarantine-record", Path: f.Path, Backing: f.Backing, Detail: "now: " + damageOf(f)}
		return a, r.atEntry(f.Backing, func(dfd int, name string) error {
			rec := lostFoundRecord{From: f.Where(), Reason: FindChanged}
			if file, err := os.Open(procPath(dfd, name)); err == nil {
				if old := r.fk.readRecord(file); old != nil {
					rec = *old
				}
				file.Close()
			}
			rec.Damage, rec.At = damageOf(f), r.now
			return r.writeRecord(dfd, name, rec)
		})
	}}
}

// atEntry runs fn with the backing entry rel's directory open.
func (r *repairer) atEntry(rel string, fn func(dfd int, name string) error) error {
	dir, name := path.Split(rel)
	dfd, err := r.openDir(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return fn(dfd, name)
}

// openDir opens the backing directory rel ("" is the root), one
// component at a time.
func (r *repairer) openDir(rel string) (int, error) {
	fd, err := openDirRel(r.rootfd, rel)
	if err != nil {
		return -1, fmt.Errorf("open backing directory %q: %w", rel, err)
	}
	return fd, nil
}

func procPath(dfd int, name string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name) }

// logText is the repair log: what was found, what was done, and the
// bytes of what was removed.
func (r *repairer) logText() string {
	rep := r.fk.rep
	var b strings.Builder
	fmt.Fprintf(&b, "encvol fsck --repair of volume %s (backing %s), %s\n\nFindings:\n", rep.VolumeID, rep.Backing, r.now.Format(time.RFC3339))
	for _, f := range rep.Findings {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", f.Severity, f.Kind, f.Where(), f.Detail)
	}
	b.WriteString("\nActions:\n")
	for _, a := range rep.Actions {
		fmt.Fprintf(&b, "  %s\n", a.String())
	}
	if r.kept.Len() > 0 {
		b.WriteString("\nRemoved bytes (hex):\n")
		b.WriteString(r.kept.String())
	}
	return b.String()
}

// String is one line for reports and the repair log.
func (a FsckAction) String() string {
	s := a.Action + " "
	switch {
	case a.Path != "":
		s += a.Path
	default:
		s += "backing " + a.Backing
	}
	if a.To != "" {
		s += " -> " + a.To
	}
	if a.Detail != "" {
		s += ": " + a.Detail
	}
	if a.Error != "" {
		s += " FAILED: " + a.Error
	}
	return s
}

// openDirRel opens directory rel below the directory dirfd, never
// following symlinks.
func openDirRel(dirfd int, rel string) (int, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil || rel == "" {
		return fd, err
	}
	for _, p := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// dropLongLink keeps the side file of a removed symlink's long target in
// the repair log, then removes it.
func (r *repairer) dropLongLink(backing, target string) error {
	side := names.LongLinkFile(target)
	if side == "" {
		return nil
	}
	if b, err := os.ReadFile(procPath(r.rootfd, names.LongLinkDir+"/"+side)); err == nil {
		r.keep(backing, "long symlink target side file", b)
	}
	return names.RemoveLink(r.rootfd, target)
}

// resetMeta gives the regular file or directory at p, the backing entry
// rel, a fresh stored mode and owner: 0600 or 0700 and the caller, bound
// to the entry on a volume that binds entries.
func (r *repairer) resetMeta(p, rel string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("reset mode and owner of %s: %w", rel, err)
	}
	// An entry whose name does not decode gets an unbound record here;
	// it is quarantined next and bound to its name in lost+found.
	at, _ := r.placeOfRel(rel)
	if err := r.writeFreshMeta(p, st.Mode&unix.S_IFMT == unix.S_IFDIR, at); err != nil {
		return fmt.Errorf("reset mode and owner of %s: %w", rel, err)
	}
	return nil
}
