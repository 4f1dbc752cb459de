package volume

import (
	"errors"
	"fmt"
	"strings"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
)

// StrayKind says what a stray in a backing directory is.
type StrayKind string

// Kinds of strays. Each is something a mount never shows; none is an
// entry of the plaintext tree.
const (
	// StrayTemp is a temporary file (keywrap.TempPrefix) left by an
	// atomic write that was interrupted before its rename.
	StrayTemp StrayKind = "temp-file"
	// StrayOrphanLongLink is the side file of a long symlink target that no
	// symlink refers to any more: a removal was interrupted.
	StrayOrphanLongLink StrayKind = "orphan-long-link"
	// StrayOrphanLongName is a long-name side file whose entry is gone:
	// a removal interrupted between the entry and its side file.
	StrayOrphanLongName StrayKind = "orphan-long-name"
	// StrayMissingDirID is a directory without its directory ID file:
	// the names in it cannot be decrypted and the mount cannot list it.
	StrayMissingDirID StrayKind = "missing-dir-id"
	// StrayBadDirID is a directory ID file of the wrong size or all zero.
	StrayBadDirID StrayKind = "damaged-dir-id"
	// StrayUnknown is a file under a name encvol reserves ("encvol."...)
	// that this build does not know: another version's, or misplaced. It
	// is reported and left alone.
	StrayUnknown StrayKind = "unknown-encvol-file"
)

// Stray is something in a backing directory beside the tree's entries:
// leftovers of interrupted operations and damage to a directory's own
// files. Copy ignores strays; fsck reports and repairs them.
type Stray struct {
	Kind StrayKind
	// Backing is the stray file's path relative to the backing root (for
	// the directory-ID kinds, where the ID file is or should be).
	Backing string
	// Dir is the backing path of the directory holding it, DirPath that
	// directory's plaintext path when PathKnown.
	Dir       string
	DirPath   string
	PathKnown bool
	Size      int64
	// Name is the plaintext name an orphaned long-name side file holds,
	// when it decrypts.
	Name string
	Err  error
}

// Where names the directory of a stray in messages.
func (s *Stray) Where() string {
	if s.PathKnown {
		return "/" + s.DirPath
	}
	return "backing directory " + s.Dir
}

// leftoverPrefixes are name prefixes of files that interrupted operations
// leave in any backing directory. An operation that adds a marker of its
// own (an interrupted copy, import or snapshot) adds its prefix here, so
// that fsck reports it.
var leftoverPrefixes = []struct {
	prefix string
	kind   StrayKind
}{
	{keywrap.TempPrefix, StrayTemp},
}

// rootFiles are the files encvol keeps in the root of a backing directory
// beside the entries. Operations that keep more (a snapshot's manifest)
// add their names here.
var rootFiles = map[string]bool{
	keywrap.HeaderFile: true,
	names.DirIDFile:    true,
	names.LongLinkDir:  true, // checked after the walk (longlinks.go)
}

const dirIDName = names.DirIDFile

// encvolPrefix starts every name encvol reserves in encrypted-names
// volumes (encrypted names never contain a dot).
const encvolPrefix = "encvol."

// Parts of an entry that can fail to decode, for EntryError.Part.
const (
	PartStat   = "stat"          // the backing entry could not be stat'ed
	PartName   = "name"          // the name (or its long-name side file)
	PartMeta   = "mode-owner"    // the stored mode and owner (user.encvol.meta)
	PartTarget = "symlink"       // the symlink target
	PartXattr  = "xattr"         // a user extended attribute's name or value
	PartOther  = "backing-entry" // anything else about the backing entry
)

// EntryError says which part of a backing entry failed to decode. An
// Entry's Err is one EntryError or several joined (errors.Join); use
// EntryErrors to list them.
type EntryError struct {
	Part string
	// Attr is the backing attribute name for PartXattr.
	Attr string
	Err  error
}

func (e *EntryError) Error() string {
	if e.Attr != "" {
		return fmt.Sprintf("%s %s: %v", e.Part, e.Attr, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Part, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// EntryErrors lists the EntryErrors in err (an Entry's Err).
func EntryErrors(err error) []*EntryError {
	var out []*EntryError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if ee, ok := err.(*EntryError); ok {
			out = append(out, ee)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		out = append(out, &EntryError{Part: PartOther, Err: err})
	}
	walk(err)
	return out
}

// addErr adds a failed part to e.Err.
func (e *Entry) addErr(part, attr string, err error) {
	ee := &EntryError{Part: part, Attr: attr, Err: err}
	if e.Err == nil {
		e.Err = ee
		return
	}
	e.Err = errors.Join(e.Err, ee)
}

// strayKind classifies a backing name of directory d that is not an entry
// of the tree; ok is false for entries. present reports whether another
// name exists in d (for long-name side files).
func (s *BackingSource) strayKind(d *backingDir, name string, present func(string) bool) (kind StrayKind, skip, ok bool) {
	if d.rel == "" && rootFiles[name] || name == names.DirIDFile {
		return "", true, true
	}
	for _, l := range leftoverPrefixes {
		if strings.HasPrefix(name, l.prefix) {
			return l.kind, false, true
		}
	}
	if name == keywrap.HeaderFile {
		return StrayUnknown, false, true
	}
	if s.plaintext {
		return "", false, false
	}
	if entry, isSide := strings.CutSuffix(name, names.LongNameSuffix); isSide && names.IsLongName(entry) {
		if present(entry) {
			return "", true, true
		}
		return StrayOrphanLongName, false, true
	}
	if strings.HasPrefix(name, encvolPrefix) && !names.IsLongName(name) {
		return StrayUnknown, false, true
	}
	return "", false, false
}
