package volume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
	"github.com/encvol/encvol/kmsclient"
)

// Sharing a volume means granting another principal of the KMS the use of
// the volume's key for this volume only: a grant for Decrypt and
// DescribeKey whose EncryptionContextEquals constraint is the volume's
// encryption context, so that the sharee can unwrap this volume's data key
// and no other volume's under the same key. The grant's name records the
// volume ID and whether the share is read-only (ShareGrantName); unshare
// revokes it, which closes the sharee's mounts at their next key check.

// ErrNotShareable is matched (errors.Is) by the refusal to share a volume
// that cannot be shared as it is: one under the service key, or one whose
// KMS is the embedded local key store.
var ErrNotShareable = errors.New("volume cannot be shared")

// ErrUnknownGrantee is matched by the refusal of a grantee the KMS does
// not know (a principal or group not in its principals file).
var ErrUnknownGrantee = errors.New("no such principal or group")

// shareGrantPrefix starts the name of every grant made by Share. Grant
// names on AWS are [a-zA-Z0-9:/_-]+, which volume IDs fit.
const (
	shareGrantPrefix    = "encvol-share:"
	shareReadOnlySuffix = ":read-only"
)

// ShareOperations are what a share grants: unwrapping the data key and
// describing the key (for the mount's messages).
var ShareOperations = []string{kms.OpDecrypt, kms.OpDescribeKey}

// ShareGrantName is the name of the grant that shares volumeID.
func ShareGrantName(volumeID string, readOnly bool) string {
	if readOnly {
		return shareGrantPrefix + volumeID + shareReadOnlySuffix
	}
	return shareGrantPrefix + volumeID
}

// parseShareGrantName reads a name made by ShareGrantName.
func parseShareGrantName(name string) (volumeID string, readOnly, ok bool) {
	rest, ok := strings.CutPrefix(name, shareGrantPrefix)
	if !ok || rest == "" {
		return "", false, false
	}
	volumeID, readOnly = strings.CutSuffix(rest, shareReadOnlySuffix)
	return volumeID, readOnly, volumeID != ""
}

// SharedReadOnly reports whether the way the KMS admitted an unwrap of
// volumeID's data key restricts the caller to reading: the caller holds
// the key through grants only, and every one of them is a read-only share
// of this volume. The restriction is the mount's to keep (it mounts
// read-only): the data key itself could also write.
func SharedReadOnly(acc kmsclient.DecryptAccess, volumeID string) bool {
	if !acc.ViaGrants || len(acc.Grants) == 0 {
		return false
	}
	for _, g := range acc.Grants {
		vol, ro, ok := parseShareGrantName(g)
		if !ok || !ro || vol != volumeID {
			return false
		}
	}
	return true
}

// ShareTarget is the VOLUME or SNAPSHOT a share command works on.
type ShareTarget struct {
	Arg       string // as given
	Name      string // [volumes.NAME], "" when given as a path
	Backing   string // the directory holding the header
	Snapshot  string // the snapshot directory, "" for a volume
	Header    *keywrap.Header
	KMS       string
	KMSConfig kmsclient.Config
}

// what names the target in messages.
func (t ShareTarget) what() string {
	if t.Snapshot != "" {
		return fmt.Sprintf("snapshot %s of volume %s", t.Snapshot, t.Header.VolumeID)
	}
	return fmt.Sprintf("volume %s (%s)", t.Header.VolumeID, t.Backing)
}

// ResolveShare resolves VOLUME (a [volumes.NAME] or a backing directory)
// or SNAPSHOT (a snapshot directory) and reads its header. A snapshot
// holds its volume's header, so it shares the volume's ID, encryption
// context and data key: sharing either opens both to the sharee.
func (c *Config) ResolveShare(arg string) (ShareTarget, error) {
	vt, err := c.ResolveVerify(arg)
	if err != nil {
		return ShareTarget{}, err
	}
	return ShareTarget{Arg: arg, Name: vt.Name, Backing: vt.Backing, Snapshot: vt.Snapshot, Header: vt.Header, KMS: vt.KMS, KMSConfig: vt.KMSConfig}, nil
}

// Share is one principal's (or group's) access to a volume through a
// share grant, or through another grant on its key that admits it.
type Share struct {
	Grantee    string    `json:"grantee"`     // "bob" or "group:team"
	GranteeARN string    `json:"grantee_arn"` // as the KMS names it
	ReadOnly   bool      `json:"read_only"`
	GrantID    string    `json:"grant_id"`
	GrantName  string    `json:"grant_name,omitempty"`
	Operations []string  `json:"operations"`
	Created    time.Time `json:"created"`
	// Other is set for a grant not made by `encvol share` (no share
	// name) that admits Decrypt of the volume all the same: unshare leaves
	// it alone; `encvol kms revoke-grant` removes it.
	Other bool `json:"other,omitempty"`
}

// ShareReport is what share, unshare and shares report.
type ShareReport struct {
	VolumeID string  `json:"volume_id"`
	Snapshot string  `json:"snapshot,omitempty"`
	KeyID    string  `json:"key_id"`
	KMS      string  `json:"kms"`
	Shares   []Share `json:"shares"`
	// Revoked lists the grants share (when it changed the mode) and
	// unshare revoked.
	Revoked []Share `json:"revoked,omitempty"`
	// Unchanged is set when share found the share already in place.
	Unchanged bool `json:"unchanged,omitempty"`
}

// granteeRef turns what the user names (a principal, group:NAME, or an IAM
// user or group ARN) into the short form shares are listed by.
func granteeRef(s string) string {
	if !strings.HasPrefix(s, "arn:") {
		return s
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) == 6 {
		if name, ok := strings.CutPrefix(parts[5], "user/"); ok {
			return name
		}
		if name, ok := strings.CutPrefix(parts[5], "group/"); ok {
			return kms.GroupPrefix + name
		}
	}
	return s
}

// CheckGrantee refuses what cannot name a principal or a group.
func CheckGrantee(with string) error {
	ref := granteeRef(strings.TrimSpace(with))
	name := strings.TrimPrefix(ref, kms.GroupPrefix)
	if name == "" || strings.ContainsAny(name, "\x00\n\r\t:/ ") {
		return fmt.Errorf("--with %q names no principal: give a principal name of the KMS server (bob), group:NAME for a [[group]] of its principals file, or an IAM user or group ARN", with)
	}
	return nil
}

// CheckShareable refuses a target that cannot be shared as it is, with the
// sentence that says why and what makes a shareable copy, and returns the
// key's description otherwise.
func (c *Config) CheckShareable(ctx context.Context, adm kmsclient.Admin, t ShareTarget) (kmsclient.KeyInfo, error) {
	if err := t.CheckKMS(); err != nil {
		return kmsclient.KeyInfo{}, err
	}
	info, err := adm.DescribeKey(ctx, t.Header.KeyID)
	if err != nil {
		return info, err
	}
	if IsServiceKey(ctx, adm, info) {
		return info, withKind(ErrNotShareable, c.serviceKeyShareRefusal(t))
	}
	return info, nil
}

// CheckKMS refuses a target whose KMS cannot share: the embedded key
// store acts as one principal. Commands check it before they open the KMS.
func (t ShareTarget) CheckKMS() error {
	if t.KMSConfig.Type != kmsclient.TypeLocal {
		return nil
	}
	return withKind(ErrNotShareable, fmt.Errorf(
		"%s is under KMS %q, the embedded key store, which has a single principal, so there is nobody to share it with: serve the key store with `encvol kms serve --store %s --principals FILE`, point a [kms.NAME] of type \"aws\" at the server, and share volumes created under it",
		t.what(), t.KMS, firstString(t.KMSConfig.Path, "DIR")))
}

// serviceKeyShareRefusal is the cloud rule's sentence: a principal's
// service key protects all its keyless volumes alike, so a grant on it
// could not be revoked for one volume without all the others, and it is
// never shared.
func (c *Config) serviceKeyShareRefusal(t ShareTarget) error {
	src := t.Arg
	dst := strings.TrimSuffix(firstString(t.Snapshot, t.Backing), "/") + "-shared"
	kmsFlag := ""
	if t.KMS != "" && t.KMS != c.Defaults.KMS && len(c.KMS) > 1 {
		kmsFlag = " --kms " + t.KMS
	}
	return fmt.Errorf("%s is under the service key %s, which is your own and is never shared: "+
		"copy it under a customer key and share the copy: `encvol kms create-key%s --alias alias/shared`, then `encvol copy %s --backing %s%s --key alias/shared`, then `encvol share %s --with PRINCIPAL`",
		t.what(), kmsclient.DefaultKeyAlias, kmsFlag, src, dst, kmsFlag, dst)
}

// IsServiceKey reports whether info describes the service key: a key the
// KMS manages itself, or the key alias/encvol/default names (on a remote
// KMS that alias may name a key a user created).
func IsServiceKey(ctx context.Context, client kmsclient.Client, info kmsclient.KeyInfo) bool {
	if info.ManagedByKMS() {
		return true
	}
	svc, err := client.DescribeKey(ctx, kmsclient.DefaultKeyAlias)
	return err == nil && svc.Arn == info.Arn
}

// ShareVolume gives with (a principal or group:NAME) the use of t's key for
// t's volume, read-only or not. It is idempotent: a share already in place
// is reported unchanged; a share of the other mode is replaced (the new
// grant is made before the old one is revoked, so access never lapses).
func (c *Config) ShareVolume(ctx context.Context, adm kmsclient.Admin, t ShareTarget, with string, readOnly bool) (ShareReport, error) {
	info, rep, current, err := c.shareState(ctx, adm, t, with)
	if err != nil {
		return rep, err
	}
	who := granteeRef(with)
	var stale []Share
	for _, s := range current {
		if s.Other || s.Grantee != who {
			continue
		}
		if s.ReadOnly == readOnly {
			rep.Shares, rep.Unchanged = []Share{s}, true
			continue
		}
		stale = append(stale, s)
	}
	if !rep.Unchanged {
		name := ShareGrantName(t.Header.VolumeID, readOnly)
		id, err := adm.CreateGrant(ctx, kmsclient.GrantInput{KeyRef: info.Arn, Grantee: with, Operations: ShareOperations, Name: name,
			Constraints: &kmsclient.GrantConstraints{EncryptionContextEquals: maps.Clone(t.Header.EncryptionContext)}})
		if errors.Is(err, kmsclient.ErrNotFound) {
			// The key was just described: the KMS does not know the grantee.
			return rep, withKind(ErrUnknownGrantee, fmt.Errorf("share %s with %s: %w", t.what(), who, err))
		}
		if err != nil {
			return rep, fmt.Errorf("share %s with %s: %w", t.what(), who, err)
		}
		rep.Shares = []Share{{Grantee: who, ReadOnly: readOnly, GrantID: id, GrantName: name, Operations: ShareOperations}}
	}
	for _, s := range stale {
		if err := adm.RevokeGrant(ctx, info.Arn, s.GrantID); err != nil && !errors.Is(err, kmsclient.ErrNotFound) {
			return rep, fmt.Errorf("share %s with %s: revoke the former share (grant %s): %w", t.what(), who, s.GrantID, err)
		}
		rep.Revoked = append(rep.Revoked, s)
	}
	return rep, nil
}

// UnshareVolume revokes every share grant of t's volume to with. The
// sharee's mounts close their gate at their next key check. Grants made
// otherwise (`encvol kms create-grant`) stay; ListShares shows them.
// Nothing to revoke is no error (the report lists nothing revoked): a
// rerun after an interruption finishes the job.
func (c *Config) UnshareVolume(ctx context.Context, adm kmsclient.Admin, t ShareTarget, with string) (ShareReport, error) {
	info, rep, current, err := c.shareState(ctx, adm, t, with)
	if err != nil {
		return rep, err
	}
	who := granteeRef(with)
	for _, s := range current {
		if s.Grantee != who || s.Other {
			rep.Shares = append(rep.Shares, s)
			continue
		}
		if err := adm.RevokeGrant(ctx, info.Arn, s.GrantID); err != nil && !errors.Is(err, kmsclient.ErrNotFound) {
			return rep, fmt.Errorf("unshare %s with %s: revoke grant %s: %w", t.what(), who, s.GrantID, err)
		}
		rep.Revoked = append(rep.Revoked, s)
	}
	return rep, nil
}

// shareState is where share and unshare start: the grantee checked, the
// target shareable, its key's description and the shares of its volume.
func (c *Config) shareState(ctx context.Context, adm kmsclient.Admin, t ShareTarget, with string) (kmsclient.KeyInfo, ShareReport, []Share, error) {
	if err := CheckGrantee(with); err != nil {
		return kmsclient.KeyInfo{}, ShareReport{}, nil, err
	}
	info, err := c.CheckShareable(ctx, adm, t)
	if err != nil {
		return info, ShareReport{}, nil, err
	}
	rep := t.report(info)
	current, err := listShares(ctx, adm, t, info)
	return info, rep, current, err
}

// ListShares lists who may unwrap t's data key through grants: the share
// grants of its volume, and other grants on the key that admit a Decrypt
// with its encryption context. The key's owner and the administrators its
// key policy names have access besides.
func (c *Config) ListShares(ctx context.Context, adm kmsclient.Admin, t ShareTarget) (ShareReport, error) {
	info, err := c.CheckShareable(ctx, adm, t)
	if err != nil {
		return ShareReport{}, err
	}
	rep := t.report(info)
	rep.Shares, err = listShares(ctx, adm, t, info)
	return rep, err
}

func (t ShareTarget) report(info kmsclient.KeyInfo) ShareReport {
	return ShareReport{VolumeID: t.Header.VolumeID, Snapshot: t.Snapshot, KeyID: info.Arn, KMS: t.KMS, Shares: []Share{}}
}

func listShares(ctx context.Context, adm kmsclient.Admin, t ShareTarget, info kmsclient.KeyInfo) ([]Share, error) {
	grants, err := adm.ListGrants(ctx, info.Arn)
	if err != nil {
		if errors.Is(err, kmsclient.ErrAccessDenied) {
			return nil, fmt.Errorf("only the owner of key %s (or an administrator its key policy names) may share %s or list its shares: %w", info.Arn, t.what(), err)
		}
		return nil, err
	}
	out := []Share{}
	for _, g := range grants {
		s := Share{Grantee: granteeRef(g.Grantee), GranteeARN: g.Grantee, GrantID: g.GrantID, GrantName: g.Name,
			Operations: g.Operations, Created: g.Created}
		vol, ro, isShare := parseShareGrantName(g.Name)
		switch {
		case isShare && vol == t.Header.VolumeID:
			s.ReadOnly = ro
		case isShare:
			continue // another volume's share
		case slices.Contains(g.Operations, kms.OpDecrypt) && g.Constraints.Allows(t.Header.EncryptionContext):
			s.Other = true
		default:
			continue
		}
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(a, b Share) int { return strings.Compare(a.Grantee, b.Grantee) })
	return out, nil
}
