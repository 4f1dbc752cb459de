package kmsclient

import (
	"sort"
	"time"
)

// VolumeContextKey is the encryption-context key every volume binds its
// wrapped data key to.
const VolumeContextKey = "encvol:volume-id"

// VolumeUse summarizes how one volume used a key, as the audit log shows it.
type VolumeUse struct {
	VolumeID  string    `json:"volume_id"`
	LastUsed  time.Time `json:"last_used"`
	LastOp    string    `json:"last_operation"`
	Principal string    `json:"principal"` // who made the most recent call
	Uses      int       `json:"uses"`      // calls, counting each key check a summary record stands for
}

// dataKeyOps are the audit operations that show a volume holding or
// fetching its data key (Encrypt: a rekey from another KMS wrapped it).
var dataKeyOps = map[string]bool{
	"GenerateDataKey": true, "GenerateDataKeyWithoutPlaintext": true, "Decrypt": true,
	"ReEncrypt": true, "ReEncryptFrom": true, "ReEncryptTo": true, "Encrypt": true,
}

// VolumesUsingKey answers "which volumes use this key" from audit records
// (already filtered to the key): the distinct volume IDs in the encryption
// context of successful data-key operations at or after since, most
// recently used first. A zero since means the whole log. A summary of key
// checks counts as the checks it stands for; its time is its last check's.
func VolumesUsingKey(recs []AuditRecord, since time.Time) []VolumeUse {
	byID := map[string]*VolumeUse{}
	for _, r := range recs {
		if r.Result != "ok" || !dataKeyOps[r.Operation] || r.Time.Before(since) {
			continue
		}
		id := r.EncryptionContext[VolumeContextKey]
		if id == "" {
			continue
		}
		u := byID[id]
		if u == nil {
			u = &VolumeUse{VolumeID: id}
			byID[id] = u
		}
		u.Uses += r.Count()
		if !r.Time.Before(u.LastUsed) {
			u.LastUsed, u.LastOp, u.Principal = r.Time, r.Operation, r.Principal
		}
	}
	out := make([]VolumeUse, 0, len(byID))
	for _, u := range byID {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsed.Equal(out[j].LastUsed) {
			return out[i].LastUsed.After(out[j].LastUsed)
		}
		return out[i].VolumeID < out[j].VolumeID
	})
	return out
}
