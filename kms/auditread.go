package kms

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Audit reads the audit log back across its rotated files, oldest file
// first and each file in the order it was written, keeping records that
// match filter. A KeyRef alias is resolved to the key it names now; a key
// ID or key ARN also matches records of keys that no longer exist. Lines
// that do not parse (a torn final line after power loss) are skipped.
// Routine key checks appear as summary records (AuditKeyCheck); the
// checks counted in memory since a mount's last summary are written by
// the process that made them, at the latest when it closes the store.
func (s *Store) Audit(ctx context.Context, filter AuditFilter) ([]AuditRecord, error) {
	keyID := ""
	if filter.KeyRef != "" {
		err := s.read(ctx, func(st *state) error {
			id, alias, err := s.parseRef(st, filter.KeyRef)
			if err != nil {
				return err
			}
			if alias != "" {
				k, err := s.auditAlias(st, alias)
				if err != nil {
					return err
				}
				id = k.ID
			}
			keyID = id
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	files, err := openAuditFiles(s.dir)
	if err != nil {
		return nil, internalErr("open audit log", err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var out []AuditRecord
	for _, f := range files {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			if err := ctx.Err(); err != nil {
				return nil, newErr(CodeInternal, "request cancelled: %v", err)
			}
			var r AuditRecord
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			if (keyID != "" && r.KeyID != keyID) ||
				(filter.Principal != "" && r.Principal != filter.Principal) ||
				(filter.Operation != "" && r.Operation != filter.Operation) ||
				(!filter.Since.IsZero() && r.Time.Before(filter.Since)) {
				continue
			}
			out = append(out, r)
		}
		if err := sc.Err(); err != nil {
			return nil, internalErr("read audit log "+f.Name(), err)
		}
	}
	return out, nil
}

// openAuditFiles opens every file of the audit log, oldest first, under
// the readers' lock on audit.lock, so that no rotation renames them
// between the listing and the opens. The open files stay readable after
// the lock is released.
func openAuditFiles(dir string) (_ []*os.File, retErr error) {
	lk, err := lockAuditDir(dir, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer lk.Close()
	rotated, err := rotatedAuditFiles(dir)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	defer func() {
		if retErr != nil {
			for _, f := range files {
				f.Close()
			}
		}
	}()
	current := filepath.Join(dir, auditFile)
	for i := len(rotated) - 1; i >= 0; i-- {
		f, err := os.Open(rotatedName(current, rotated[i]))
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	f, err := os.Open(current)
	if errors.Is(err, fs.ErrNotExist) {
		// Rotated away by a process that has not written since.
		return files, nil
	}
	if err != nil {
		return nil, err
	}
	return append(files, f), nil
}

// auditAlias resolves an alias for the audit reader, who reads the whole
// store's log: the local principal's own alias first, else the one
// principal that has an alias of that name; when several do, the key ID
// must be given.
func (s *Store) auditAlias(st *state, alias string) (*keyRec, error) {
	if k, err := s.resolve(st, LocalPrincipal, alias); err == nil {
		return k, nil
	}
	var owners []string
	for key := range st.Aliases {
		if owner, name, _ := splitAliasKey(key); name == alias {
			owners = append(owners, owner)
		}
	}
	switch len(owners) {
	case 0:
		return nil, newErr(CodeNotFound, "Alias %s is not found.", s.aliasARN(alias))
	case 1:
		return s.resolve(st, owners[0], alias)
	}
	sort.Strings(owners)
	return nil, validationErr("alias %s names keys of several principals (%s); give the key ID or ARN", alias, strings.Join(owners, ", "))
}
