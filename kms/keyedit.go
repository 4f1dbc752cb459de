package kms

import (
	"context"
	"sort"
	"strings"
)

// Tag limits (AWS values).
const (
	maxTagsPerKey  = 50
	maxTagKeyLen   = 128
	maxTagValueLen = 256
	maxDescription = 8192
)

// checkTags refuses tags AWS refuses: empty or long keys, long values,
// the reserved aws: prefix and a key given twice.
func checkTags(tags []Tag) error {
	seen := make(map[string]bool, len(tags))
	for _, t := range tags {
		switch {
		case t.Key == "" || len(t.Key) > maxTagKeyLen:
			return newErr(CodeTag, "tag key %q must be 1 to %d characters", t.Key, maxTagKeyLen)
		case len(t.Value) > maxTagValueLen:
			return newErr(CodeTag, "the value of tag %q is %d characters; at most %d are allowed", t.Key, len(t.Value), maxTagValueLen)
		case strings.HasPrefix(strings.ToLower(t.Key), "aws:"):
			return newErr(CodeTag, "tag key %q uses the prefix aws:, which is reserved for AWS", t.Key)
		case seen[t.Key]:
			return newErr(CodeTag, "tag key %q is given twice", t.Key)
		}
		seen[t.Key] = true
	}
	if len(tags) > maxTagsPerKey {
		return newErr(CodeTag, "%d tags given; a key has at most %d", len(tags), maxTagsPerKey)
	}
	return nil
}

// mergeTags returns have with add applied (a key that exists gets the new
// value), sorted by key.
func mergeTags(have, add []Tag) []Tag {
	byKey := make(map[string]string, len(have)+len(add))
	for _, t := range have {
		byKey[t.Key] = t.Value
	}
	for _, t := range add {
		byKey[t.Key] = t.Value
	}
	if len(byKey) == 0 {
		return nil
	}
	out := make([]Tag, 0, len(byKey))
	for k, v := range byKey {
		out = append(out, Tag{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// editable refuses changes to the service key and to keys pending
// deletion, as AWS does for tags and descriptions.
func (s *Store) editable(k *keyRec, what string) error {
	if k.Manager == KeyManagerAWS {
		return s.serviceKeyRefusal(k, what)
	}
	if k.State == StatePendingDeletion {
		return s.stateErr(k)
	}
	return nil
}

// UpdateKeyDescription replaces the key's description.
func (s *Store) UpdateKeyDescription(ctx context.Context, principal, keyRef, description string) error {
	return s.adminWrite(ctx, principal, "UpdateKeyDescription", keyRef, func(_ *state, k *keyRec) error {
		if len(description) > maxDescription {
			return validationErr("Description is %d characters; at most %d allowed", len(description), maxDescription)
		}
		if err := s.editable(k, "have its description changed"); err != nil {
			return err
		}
		if k.Description == description {
			return errNoChange
		}
		k.Description = description
		return nil
	})
}

// TagResource adds tags to the key, replacing the value of a key it has.
func (s *Store) TagResource(ctx context.Context, principal, keyRef string, tags []Tag) error {
	return s.adminWrite(ctx, principal, "TagResource", keyRef, func(_ *state, k *keyRec) error {
		if len(tags) == 0 {
			return validationErr("Tags must list at least one tag")
		}
		if err := checkTags(tags); err != nil {
			return err
		}
		if err := s.editable(k, "be tagged"); err != nil {
			return err
		}
		merged := mergeTags(k.Tags, tags)
		if len(merged) > maxTagsPerKey {
			return newErr(CodeLimitExceeded, "%s would have %d tags; a key has at most %d", s.keyARN(k.ID), len(merged), maxTagsPerKey)
		}
		k.Tags = merged
		return nil
	})
}

// UntagResource removes the tags with the given keys; keys the key does not
// have are ignored, as in AWS.
func (s *Store) UntagResource(ctx context.Context, principal, keyRef string, tagKeys []string) error {
	return s.adminWrite(ctx, principal, "UntagResource", keyRef, func(_ *state, k *keyRec) error {
		if len(tagKeys) == 0 {
			return validationErr("TagKeys must list at least one tag key")
		}
		if err := s.editable(k, "be untagged"); err != nil {
			return err
		}
		drop := make(map[string]bool, len(tagKeys))
		for _, key := range tagKeys {
			drop[key] = true
		}
		kept := k.Tags[:0:0]
		for _, t := range k.Tags {
			if !drop[t.Key] {
				kept = append(kept, t)
			}
		}
		if len(kept) == len(k.Tags) {
			return errNoChange
		}
		k.Tags = kept
		return nil
	})
}

// adminRead runs f on the key keyRef names if principal administers it.
func (s *Store) adminRead(ctx context.Context, principal, op, keyRef string, f func(st *state, k *keyRec) error) error {
	return s.read(ctx, func(st *state) error {
		k, err := s.resolve(st, principal, keyRef)
		if err != nil {
			return err
		}
		if err := s.requireAdmin(k, principal, op); err != nil {
			return err
		}
		return f(st, k)
	})
}

// ListResourceTags returns the key's tags sorted by key; it works in every
// key state.
func (s *Store) ListResourceTags(ctx context.Context, principal, keyRef string) ([]Tag, error) {
	var out []Tag
	err := s.adminRead(ctx, principal, "ListResourceTags", keyRef, func(_ *state, k *keyRec) error {
		out = mergeTags(nil, k.Tags)
		return nil
	})
	return out, err
}
