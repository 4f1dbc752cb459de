package volume

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// KeyUse is one volume that a key protects, and how encvol knows: mounted
// on this host, configured in a [volumes.NAME] table, and/or seen
// unwrapping its data key under the key in the KMS audit log within
// [policy] key_in_use_window.
type KeyUse struct {
	VolumeID   string `json:"volume_id"`
	Name       string `json:"name,omitempty"`
	Backing    string `json:"backing,omitempty"`
	Mountpoint string `json:"mountpoint,omitempty"`
	Mounted    bool   `json:"mounted"`
	Configured bool   `json:"configured"`
	// Audit fields: the most recent data-key operation under the key.
	LastUsed  *time.Time `json:"last_used,omitempty"`
	LastOp    string     `json:"last_operation,omitempty"`
	Principal string     `json:"principal,omitempty"`
	Uses      int        `json:"uses,omitempty"`
	// CurrentKeyID is the key the volume's header names now, when that is
	// known and another key (the volume was rekeyed away from this one).
	CurrentKeyID string `json:"current_key_id,omitempty"`
}

// Sources names how the volume was found, for tables.
func (u KeyUse) Sources() string {
	var s []string
	if u.Mounted {
		s = append(s, "mounted")
	}
	if u.Configured {
		s = append(s, "configured")
	}
	if u.LastUsed != nil {
		s = append(s, "audit log")
	}
	return strings.Join(s, ", ")
}

// Where is the backing directory and mountpoint, as far as known.
func (u KeyUse) Where() string {
	var s []string
	if u.Name != "" {
		s = append(s, "[volumes."+u.Name+"]")
	}
	if u.Mountpoint != "" {
		s = append(s, "mounted on "+u.Mountpoint)
	}
	if u.Backing != "" {
		s = append(s, "backing "+u.Backing)
	}
	if len(s) == 0 {
		return "location unknown (seen in the audit log only)"
	}
	if u.CurrentKeyID != "" {
		s = append(s, "now under "+u.CurrentKeyID)
	}
	return strings.Join(s, ", ")
}

// KeyUsage answers "which volumes does this key protect" before a key is
// disabled or scheduled for deletion.
type KeyUsage struct {
	KMS     string   `json:"kms"`
	KeyID   string   `json:"key_id"`
	Arn     string   `json:"arn"`
	Aliases []string `json:"aliases,omitempty"`
	// CustomerKeys counts the customer keys of the KMS (the caller can
	// see) that are not pending deletion, this one included; 0 when the
	// KMS would not list them.
	CustomerKeys int `json:"customer_keys"`
	// NotAdmin says that the KMS refuses the caller the key's
	// administration (an owner-only call was denied): the KMS, not the
	// guard, refuses the change then.
	NotAdmin bool `json:"not_admin,omitempty"`
	// Window is [policy] key_in_use_window; AuditNote says why the audit
	// log was not read ("" when it was).
	Window    string   `json:"key_in_use_window"`
	AuditNote string   `json:"audit_note,omitempty"`
	Volumes   []KeyUse `json:"volumes"`
}

// FindKeyUsage looks for the volumes keyRef protects: mounts on this host
// (through their control sockets, which report the key they check now),
// [volumes.NAME] tables whose header names the key, and volumes whose data
// key was unwrapped under it within key_in_use_window according to the
// KMS audit log (local KMS only: a remote KMS keeps its log on its own
// host, and AuditNote says so). keyRef is resolved to the key's ARN first,
// so an alias matches headers that name the ARN.
func FindKeyUsage(ctx context.Context, c *Config, kmsName string, adm kmsclient.Admin, keyRef string) (*KeyUsage, error) {
	info, err := adm.DescribeKey(ctx, keyRef)
	if err != nil {
		return nil, err
	}
	window := c.KeyInUseWindow()
	u := &KeyUsage{KMS: kmsName, KeyID: info.KeyID, Arn: info.Arn, Aliases: info.Aliases, Window: shortDuration(window)}
	if len(u.Aliases) == 0 {
		if al, err := adm.ListAliases(ctx, info.KeyID); err == nil {
			for _, a := range al {
				u.Aliases = append(u.Aliases, a.Name)
			}
		}
	}
	u.CustomerKeys = countCustomerKeys(ctx, adm)
	byID := map[string]*KeyUse{}
	get := func(id string) *KeyUse {
		if byID[id] == nil {
			byID[id] = &KeyUse{VolumeID: id}
		}
		return byID[id]
	}
	// Where each volume known here is and which key it is under now, to
	// place the volumes the audit log names.
	elsewhere := map[string]KeyUse{}
	for _, st := range mountedStatuses(ctx) {
		if !keyMatches(st.KeyID, info) {
			elsewhere[st.VolumeID] = KeyUse{Name: st.Name, Backing: st.Backing, Mountpoint: st.Mountpoint, Mounted: true, CurrentKeyID: st.KeyID}
			continue
		}
		v := get(st.VolumeID)
		v.Mounted, v.Mountpoint, v.Backing = true, st.Mountpoint, st.Backing
		v.Name = firstString(v.Name, st.Name)
	}
	for _, name := range sortedKeys(c.Volumes) {
		vc := c.Volumes[name]
		h, err := keywrap.ReadHeader(vc.Backing)
		if err != nil {
			continue
		}
		if !keyMatches(h.KeyID, info) {
			if _, ok := elsewhere[h.VolumeID]; !ok {
				elsewhere[h.VolumeID] = KeyUse{Name: name, Backing: vc.Backing, CurrentKeyID: h.KeyID}
			}
			continue
		}
		v := get(h.VolumeID)
		v.Configured, v.Name, v.Backing = true, name, vc.Backing
		v.Mountpoint = firstString(v.Mountpoint, vc.Mountpoint)
	}
	u.AuditNote = auditUses(ctx, adm, kmsName, keyRef, info, window, get)
	for _, v := range byID {
		if e, ok := elsewhere[v.VolumeID]; ok && !v.Mounted && !v.Configured {
			v.Name, v.Backing, v.Mountpoint, v.CurrentKeyID = e.Name, e.Backing, e.Mountpoint, e.CurrentKeyID
		}
		u.Volumes = append(u.Volumes, *v)
	}
	sort.Slice(u.Volumes, func(i, j int) bool {
		a, b := u.Volumes[i], u.Volumes[j]
		if a.Mounted != b.Mounted {
			return a.Mounted
		}
		if a.Configured != b.Configured {
			return a.Configured
		}
		return a.VolumeID < b.VolumeID
	})
	if u.Volumes == nil {
		u.Volumes = []KeyUse{}
	}
	if len(u.Volumes) > 0 {
		// ListGrants is owner-only, like DisableKey: a caller it refuses
		// should hear AccessDenied from the KMS, not be told to --force.
		_, err := adm.ListGrants(ctx, info.Arn)
		u.NotAdmin = errors.Is(err, kmsclient.ErrAccessDenied)
	}
	return u, nil
}

// auditUses adds the volumes the audit log shows using the key within
// window and returns a note when the log could not be read.
func auditUses(ctx context.Context, adm kmsclient.Admin, kmsName, keyRef string, info kmsclient.KeyInfo, window time.Duration, get func(string) *KeyUse) string {
	if window <= 0 {
		return "[policy] key_in_use_window is 0: the audit log was not consulted"
	}
	recs, err := adm.Audit(ctx, kmsclient.AuditFilter{KeyRef: info.Arn})
	if errors.Is(err, kmsclient.ErrUnsupported) {
		return fmt.Sprintf("KMS %q is remote, so its audit log cannot be read from here: only this host's mounts and the configuration were checked; run `encvol kms audit --key %s` on the KMS server host to see which volumes use this key", kmsName, keyRef)
	}
	if err != nil {
		return fmt.Sprintf("the audit log of KMS %q could not be read (%v): only this host's mounts and the configuration were checked", kmsName, err)
	}
	for _, vu := range kmsclient.VolumesUsingKey(recs, time.Now().Add(-window)) {
		v := get(vu.VolumeID)
		t := vu.LastUsed
		v.LastUsed, v.LastOp, v.Principal, v.Uses = &t, vu.LastOp, vu.Principal, vu.Uses
	}
	return ""
}

// shortDuration writes 720h, not 720h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// keyMatches reports whether ref (a header's or mount's key ID, normally
// the ARN) names the described key.
func keyMatches(ref string, info kmsclient.KeyInfo) bool {
	return ref != "" && (ref == info.Arn || ref == info.KeyID || strings.HasSuffix(ref, ":key/"+info.KeyID))
}

// mountedStatuses asks every control socket of this user for its status;
// sockets that do not answer are skipped (status reports them).
func mountedStatuses(ctx context.Context) []*Status {
	socks, err := ListSockets()
	if err != nil {
		return nil
	}
	var out []*Status
	for _, s := range socks {
		if st, err := QueryStatus(ctx, s); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// countCustomerKeys counts the customer keys that are not pending
// deletion; 0 when the KMS does not list them.
func countCustomerKeys(ctx context.Context, adm kmsclient.Admin) int {
	keys, err := adm.ListKeys(ctx)
	if err != nil {
		return 0
	}
	n := 0
	for _, k := range keys {
		if !k.ManagedByKMS() && k.State != "PendingDeletion" {
			n++
		}
	}
	return n
}

// ErrKeyInUse is matched (errors.Is) by the refusal to disable or delete a
// key that protects volumes in use.
var ErrKeyInUse = errors.New("key protects volumes in use")

// Key-changing operations the usage guard knows.
const (
	GuardDisable  = "disable-key"
	GuardDeletion = "schedule-key-deletion"
)

// Guard decides whether op may change the key without --force. It refuses
// (ErrKeyInUse) when the key protects volumes, with one exception: a
// disable of the only customer key of the KMS. Disabling a key is
// encvol's kill switch and undone by enable-key; what the guard protects
// against is disabling the wrong key (the old and the new key after a
// rekey, one team's key for another's), and with a single customer key
// there is no other key the disable could have been meant for. Deletion
// destroys the volumes for good and is guarded always. note says why an
// unrefused op proceeds although volumes use the key.
func (u *KeyUsage) Guard(op string, force bool) (note string, err error) {
	if len(u.Volumes) == 0 {
		return "", nil
	}
	if force {
		return "--force given", nil
	}
	if u.NotAdmin {
		return "the KMS decides: you may not administer this key", nil
	}
	if op == GuardDisable && u.CustomerKeys == 1 {
		return fmt.Sprintf("%s is the only customer key of KMS %q, so it is the one meant: disabling it is the kill switch (undo with enable-key)", u.name(), u.KMS), nil
	}
	effect := "disabling it would close their mounts under it and keep them from being mounted until the key is enabled again"
	if op == GuardDeletion {
		effect = "deleting it would make them unreadable from now on and lose them for good on the deletion date"
	}
	return "", withKind(ErrKeyInUse, fmt.Errorf("key %s protects %s (%s); %s: rerun with --force if that is what you want, or rekey them first (`encvol rekey VOLUME --key OTHER`)",
		u.name(), u.describeVolumes(), strings.Join(u.sources(), ", "), effect))
}

// name is the key as a user knows it: its first alias, else its ID.
func (u *KeyUsage) name() string {
	if len(u.Aliases) > 0 {
		return fmt.Sprintf("%s (%s)", u.Aliases[0], u.KeyID)
	}
	return u.KeyID
}

func (u *KeyUsage) describeVolumes() string {
	var parts []string
	for i, v := range u.Volumes {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(u.Volumes)-3))
			break
		}
		where := v.Backing
		if v.Mounted {
			where = "mounted on " + v.Mountpoint
		}
		if where == "" {
			parts = append(parts, v.VolumeID)
		} else {
			parts = append(parts, v.VolumeID+" "+where)
		}
	}
	noun := "volumes"
	if len(u.Volumes) == 1 {
		noun = "volume"
	}
	return fmt.Sprintf("%d %s: %s", len(u.Volumes), noun, strings.Join(parts, "; "))
}

// sources says which of the three ways found volumes.
func (u *KeyUsage) sources() []string {
	var mounted, configured, audit int
	for _, v := range u.Volumes {
		if v.Mounted {
			mounted++
		}
		if v.Configured {
			configured++
		}
		if v.LastUsed != nil {
			audit++
		}
	}
	var s []string
	if mounted > 0 {
		s = append(s, fmt.Sprintf("%d mounted on this host", mounted))
	}
	if configured > 0 {
		s = append(s, fmt.Sprintf("%d configured", configured))
	}
	if audit > 0 {
		s = append(s, fmt.Sprintf("%d unwrapped under it within %s", audit, u.Window))
	}
	return s
}
