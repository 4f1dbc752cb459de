package kmsclient

import (
	"context"
	"runtime"

	"github.com/encvol/encvol/kms"
)

// SealKeyDropper is a Client that holds key store secrets in this process
// (the local KMS) and can drop them: a mount calls it once its data key is
// unwrapped, so that what it keeps in memory unseals no other key. After
// it the client re-derives the seal key from the store's root key or
// passphrase file for each call that needs key material (a closed gate
// reopening, a snapshot) and drops it again, and answers key checks from
// the key's state (AccessChecker) without it.
type SealKeyDropper interface {
	DropSealKey()
}

// AccessChecker is a Client that can answer a key check (may this caller
// decrypt blob now?) without decrypting it. handled is false when the
// caller must decrypt the blob instead.
type AccessChecker interface {
	CheckAccess(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (handled bool, err error)
}

var (
	_ SealKeyDropper = (*local)(nil)
	_ AccessChecker  = (*local)(nil)
)

func (l *local) DropSealKey() {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	l.sealDropped = true
	l.store.ForgetSealKey()
	// runtime/secret erases the dropped key schedule when a collection
	// finds it unreachable.
	runtime.GC()
}

// withSeal runs f, which needs key material, with the seal key present:
// restored for the call and dropped after it when DropSealKey was called.
func (l *local) withSeal(f func() error) error {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	if !l.sealDropped {
		return f()
	}
	if err := l.store.RestoreSealKey(); err != nil {
		return err
	}
	defer func() {
		l.store.ForgetSealKey()
		runtime.GC()
	}()
	return f()
}

// CheckAccess answers from the key's state once the seal key was dropped
// (kms.Store.CheckKeyAccess): the blob is the volume's own MAC-covered
// key-check blob, and on the local KMS only the key's state can change.
func (l *local) CheckAccess(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (bool, error) {
	l.sealMu.Lock()
	dropped := l.sealDropped
	l.sealMu.Unlock()
	if !dropped {
		return false, nil
	}
	var chk *KeyCheck
	if c, ok := KeyCheckOf(ctx); ok {
		chk = &c
	}
	grants, err := l.store.CheckKeyAccess(ctx, kms.LocalPrincipal, blob, encCtx, keyRef, chk)
	if err != nil {
		return true, l.wrap("Decrypt", keyRef, err)
	}
	ReportDecryptAccess(ctx, grants)
	return true, nil
}
