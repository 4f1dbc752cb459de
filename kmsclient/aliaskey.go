package kmsclient

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// retireWindowDays is the waiting period of a key retired because its
// alias could not be created: the shortest AWS allows.
const retireWindowDays = 7

// retireTimeout bounds the clean-up calls, which run even when the
// caller's context was cancelled (Ctrl-C between CreateKey and
// CreateAlias must not leave the key behind either).
const retireTimeout = 15 * time.Second

// createKeyWithAlias creates a key and its alias over the AWS API, which
// has no call doing both. AWS users expect a failed `create-key --alias`
// to leave their account as it was: a stray key shows in every listing
// and counts against the key quota, and a retry with the same alias would
// fail again for the same reason. So the alias is checked first (nothing
// is created when it is taken) and, if CreateAlias still fails (a race, a
// name the KMS refuses, a lost connection), the new key is retired the
// only way AWS offers: ScheduleKeyDeletion with the shortest window, 7
// days. The key never wrapped anything, so nothing is lost, and
// cancel-key-deletion still brings it back within the window. Deleting
// silently is not what an administrator expects, so the error names the
// key and the date.
func (b *awsBackend) createKeyWithAlias(ctx context.Context, in CreateKeyInput) (KeyInfo, error) {
	alias := in.Alias
	if err := b.aliasFree(ctx, alias); err != nil {
		return KeyInfo{}, err
	}
	in.Alias = ""
	k, err := b.CreateKey(ctx, in)
	if err != nil {
		return KeyInfo{}, err
	}
	aerr := b.CreateAlias(ctx, alias, k.KeyID)
	if aerr == nil {
		k.Aliases = append(k.Aliases, alias)
		return k, nil
	}
	e := &Error{Kind: ErrInvalidRequest, Op: "CreateAlias", KMS: b.name, KeyID: alias, Err: aerr}
	why := aerr.Error()
	var ae *Error
	if errors.As(aerr, &ae) {
		e.Kind, e.Code, why = ae.Kind, ae.Code, ae.Message
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), retireTimeout)
	defer cancel()
	when, derr := b.ScheduleKeyDeletion(rctx, k.KeyID, retireWindowDays)
	if derr != nil {
		e.Message = fmt.Sprintf("%s; the new key %s could not be retired (%v): schedule its deletion with `encvol kms schedule-key-deletion %s --days %d --kms %s`",
			why, k.KeyID, derr, k.KeyID, retireWindowDays, b.name)
		return KeyInfo{}, e
	}
	e.Message = fmt.Sprintf("%s; the new key %s was scheduled for deletion on %s, so nothing is left behind",
		why, k.KeyID, when.UTC().Format(time.RFC3339))
	return KeyInfo{}, e
}

// aliasFree returns nil when alias names no key, an *AliasTakenError
// naming the key when it does, and any other failure as is (nothing is
// created then either).
func (b *awsBackend) aliasFree(ctx context.Context, alias string) error {
	info, err := b.DescribeKey(ctx, alias)
	var ke *Error
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil && !(errors.As(err, &ke) && ke.Code == "AccessDeniedException"):
		return err
	}
	// Found, or AccessDeniedException: an alias that does not exist is
	// NotFound for everybody, so the alias names a key the caller may not
	// see (bad credentials fail with other codes).
	return &AliasTakenError{Alias: alias, KMS: b.name, TargetKeyID: info.KeyID,
		Err: &Error{Kind: ErrAlreadyExists, Op: "CreateKey", KMS: b.name, KeyID: alias, Code: "AlreadyExistsException",
			Message: fmt.Sprintf("An alias with the name %s already exists", alias)}}
}

// AliasTakenError is CreateKey's refusal of an alias that already names a
// key: no key was created. It unwraps to the *Error (kind
// ErrAlreadyExists) that the KMS's answer became.
type AliasTakenError struct {
	Alias       string
	KMS         string
	TargetKeyID string // the key the alias names; "" when the caller may not see it
	Err         error
}

func (e *AliasTakenError) Error() string {
	if e.TargetKeyID == "" {
		return fmt.Sprintf("alias %s is already taken on KMS %q (by a key you cannot see), so no key was created", e.Alias, e.KMS)
	}
	return fmt.Sprintf("alias %s already names key %s on KMS %q, so no key was created", e.Alias, e.TargetKeyID, e.KMS)
}

func (e *AliasTakenError) Unwrap() error { return e.Err }
