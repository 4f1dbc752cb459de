package server

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
)

// ErrPrincipalsEdit is matched (errors.Is) by refusals of an edit of the
// principals file that the command line must change (an unknown or taken
// name, removing the last principal).
var ErrPrincipalsEdit = errors.New("principals file edit refused")

func editRefusal(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPrincipalsEdit, fmt.Sprintf(format, args...))
}

// principalsHeader opens every file the editors write.
const principalsHeader = `# Principals of encvol kms serve: [[principal]] tables (name, access_key_id,
# secret_access_key) and [[group]] tables (name, members). Written by
# encvol kms principal / encvol kms group; a running server reloads it.
# Keep it mode 0600: it holds every secret access key.

`

// NewAccessKey returns a fresh access key pair for name, shaped like AWS's:
// a 20-character ID starting with AKIA and a 40-character secret.
func NewAccessKey(name string) (Principal, error) {
	var id [10]byte
	var secret [30]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Principal{}, fmt.Errorf("generate access key ID: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Principal{}, fmt.Errorf("generate secret access key: %w", err)
	}
	return Principal{
		Name:            name,
		AccessKeyID:     "AKIA" + base32.StdEncoding.EncodeToString(id[:])[:16],
		SecretAccessKey: base64.StdEncoding.EncodeToString(secret[:]),
	}, nil
}

// EditPrincipals applies edit to the principals file at path (an empty
// set when it does not exist yet) and writes the result back atomically
// with mode 0600: a temporary file beside it, fsync, rename, fsync of the
// directory. Editors serialise on a lock of the directory, so two edits
// never lose one another; a running server sees either version, never a
// half-written file. The result must pass the loader's rules, else nothing
// is written. Comments of a hand-written file are not kept.
func EditPrincipals(path string, edit func(p *Principals) error) error {
	dir := filepath.Dir(path)
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("principals file %s: %w", path, err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s for the principals file: %w", dir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)

	p := &Principals{}
	if _, err := os.Stat(path); err == nil {
		if p, err = LoadPrincipalsFile(path); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("principals file %s: %w", path, err)
	}
	if err := edit(p); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return editRefusal("principals file %s would be invalid: %v", path, err)
	}
	var buf bytes.Buffer
	buf.WriteString(principalsHeader)
	if err := toml.NewEncoder(&buf).Encode(p); err != nil {
		return fmt.Errorf("encode principals file %s: %w", path, err)
	}
	return keywrap.WriteFileAtomic(path, buf.Bytes(), 0o600)
}

// find returns the index of the principal called name, or -1.
func (p *Principals) find(name string) int {
	return slices.IndexFunc(p.Principal, func(x Principal) bool { return x.Name == name })
}

func (p *Principals) findGroup(name string) int {
	return slices.IndexFunc(p.Group, func(g Group) bool { return g.Name == name })
}

// AddPrincipal adds a principal called name with a fresh access key to the
// file at path and returns it: the only time its secret is shown.
func AddPrincipal(path, name string) (Principal, error) {
	np, err := NewAccessKey(name)
	if err != nil {
		return Principal{}, err
	}
	if name == kms.LocalPrincipal {
		return Principal{}, editRefusal("the name %q is reserved: it administers every key of the store, as the local KMS does; pick another name", name)
	}
	err = EditPrincipals(path, func(p *Principals) error {
		if p.find(name) >= 0 {
			return editRefusal("principal %q already exists in %s: give it a new secret with `encvol kms principal rotate-secret %s`", name, path, name)
		}
		p.Principal = append(p.Principal, np)
		return nil
	})
	return np, err
}

// RotateSecret gives the principal called name a new secret access key
// (its access key ID stays) and returns it. Requests signed with the old
// secret are refused once the server has reloaded the file.
func RotateSecret(path, name string) (Principal, error) {
	var out Principal
	err := EditPrincipals(path, func(p *Principals) error {
		i := p.find(name)
		if i < 0 {
			return p.unknown(path, name)
		}
		np, err := NewAccessKey(name)
		if err != nil {
			return err
		}
		p.Principal[i].SecretAccessKey = np.SecretAccessKey
		out = p.Principal[i]
		return nil
	})
	return out, err
}

// RemovePrincipal removes the principal called name, and removes it from
// every group; it returns those groups. The last principal cannot be
// removed: the server would accept nobody.
func RemovePrincipal(path, name string) (groups []string, err error) {
	err = EditPrincipals(path, func(p *Principals) error {
		i := p.find(name)
		if i < 0 {
			return p.unknown(path, name)
		}
		if len(p.Principal) == 1 {
			return editRefusal("%q is the only principal in %s: the server would accept nobody; add another one first", name, path)
		}
		p.Principal = slices.Delete(p.Principal, i, i+1)
		for gi := range p.Group {
			g := &p.Group[gi]
			if j := slices.Index(g.Members, name); j >= 0 {
				g.Members = slices.Delete(g.Members, j, j+1)
				groups = append(groups, g.Name)
			}
		}
		return nil
	})
	return groups, err
}

// SetGroup creates the group called name with members, or replaces the
// members of an existing one. Members must be principals of the file.
func SetGroup(path, name string, members []string) error {
	return EditPrincipals(path, func(p *Principals) error {
		for _, m := range members {
			if p.find(m) < 0 {
				return p.unknown(path, m)
			}
		}
		members = slices.Compact(slices.Sorted(slices.Values(members)))
		if i := p.findGroup(name); i >= 0 {
			p.Group[i].Members = members
			return nil
		}
		p.Group = append(p.Group, Group{Name: name, Members: members})
		return nil
	})
}

// RemoveGroup removes the group called name. Grants to it then admit
// nobody (and admit the members of a group of that name made later).
func RemoveGroup(path, name string) error {
	return EditPrincipals(path, func(p *Principals) error {
		i := p.findGroup(name)
		if i < 0 {
			return editRefusal("no group %q in %s (groups: %s)", name, path, p.groupNames())
		}
		p.Group = slices.Delete(p.Group, i, i+1)
		return nil
	})
}

func (p *Principals) unknown(path, name string) error {
	return editRefusal("no principal %q in %s (principals: %s)", name, path, listOrNone(p.Names()))
}

func (p *Principals) groupNames() string {
	names := make([]string, len(p.Group))
	for i, g := range p.Group {
		names[i] = g.Name
	}
	return listOrNone(names)
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
