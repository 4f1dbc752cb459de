package kms

import "context"

// ListKeyRotations lists the key's material versions made by rotation,
// oldest first; with initial set, the first version too. EXTERNAL keys
// never rotate and list none.
func (s *Store) ListKeyRotations(ctx context.Context, principal, keyRef string, initial bool) ([]KeyRotation, error) {
	var out []KeyRotation
	err := s.read(ctx, func(st *state) error {
		k, err := s.describable(st, principal, keyRef)
		if err != nil {
			return err
		}
		for i, v := range k.Versions {
			if i == 0 && !initial {
				continue
			}
			r := KeyRotation{KeyID: k.ID, Version: int(v.Version), Date: v.Created, Current: i == len(k.Versions)-1}
			if i > 0 {
				r.Type = k.rotationType(i)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// rotationType tells how version i (> 0) came to be. Stores written before
// it was recorded only count on-demand rotations: a version made at the
// time of the last on-demand rotation was one, and when every unrecorded
// version can be an on-demand one, all are.
func (k *keyRec) rotationType(i int) string {
	v := k.Versions[i]
	if v.Rotation != "" {
		return v.Rotation
	}
	if k.LastOnDemand != nil && v.Created.Equal(*k.LastOnDemand) {
		return RotationOnDemand
	}
	unrecorded, onDemand := 0, k.OnDemand
	for _, w := range k.Versions[1:] {
		switch w.Rotation {
		case "":
			unrecorded++
		case RotationOnDemand:
			onDemand--
		}
	}
	if onDemand >= unrecorded {
		return RotationOnDemand
	}
	return RotationAutomatic
}
