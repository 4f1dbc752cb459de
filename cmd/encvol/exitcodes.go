package main

import (
	"context"
	"errors"
	"io/fs"
	"strings"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms/server"
	"github.com/encvol/encvol/kmsclient"
	"github.com/encvol/encvol/volume"
)

// Exit codes: one table for every command, part of the command contract
// (README.md, "Exit codes"). A script can tell "fix the command line" (2)
// from "the key was revoked" (3), "the network is down" (4), "nothing to
// unmount" (5) and "already mounted" (6). Commands with a contract of their
// own (fsck) document it in their help.
const (
	exitOK         = 0
	exitFailure    = 1 // any other failure: I/O, damaged or tampered header, verification failed
	exitUsage      = 2 // bad flags or arguments, unknown volume name, missing or invalid --config, a path that does not exist or is not what the command needs
	exitKeyState   = 3 // the CMK is disabled, pending deletion or import, deleted or unknown, or access is denied
	exitKMSDown    = 4 // the KMS cannot be reached
	exitNotMounted = 5 // nothing is mounted at the mountpoint given
	exitMounted    = 6 // the mountpoint is already a mount, or the volume is mounted (or locked) by another process
	exitRefused    = 7 // a safeguard refused: [policy] require_customer_key, the key protects volumes in use (--force overrides), or a volume that cannot be shared (service key, embedded KMS)
)

// fsck has e2fsck's exit codes (volume.FsckClean ... volume.FsckCancelled):
// 0 clean, 1 errors corrected, 4 errors left uncorrected, 8 operational
// error, 16 usage, 32 cancelled; a run that corrected some errors and left
// others exits 5. Its report sets 0, 1 and 4; fsckError maps the failures
// that keep it from checking.

// fsckError gives a failure that kept fsck from checking fsck's own exit
// code: 16 for what the command line must change, 32 for a cancel, 8 for
// the rest.
func fsckError(err error) error {
	switch {
	case errors.Is(err, volume.ErrFsckCancelled), errors.Is(err, context.Canceled):
		return withCode(volume.FsckCancelled, err)
	case exitCode(err) == exitUsage:
		return withCode(volume.FsckUsage, err)
	}
	return withCode(volume.FsckOperational, err)
}

// exitCode maps an error to the table above. An explicit code (withCode)
// wins; otherwise the kind of the error decides.
func exitCode(err error) int {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	if code := kindExitCode(err); code != 0 {
		return code
	}
	if isUsageText(err) {
		return exitUsage
	}
	return exitFailure
}

// kindExitCode gives the exit code for the kinds of failure that volume
// and the KMS clients mark (errors.Is), or 0 when err is none of them. A
// damaged header is checked first: its wrapped key may have failed with a
// key-state kind, but the key is fine and the header is not.
func kindExitCode(err error) int {
	switch {
	case errors.Is(err, keywrap.ErrHeaderCorrupt):
		return exitFailure
	case errors.Is(err, volume.ErrBackingUnusable), errors.Is(err, volume.ErrRekeyTarget), errors.Is(err, volume.ErrForeignHeader),
		errors.Is(err, volume.ErrBackupFile), errors.Is(err, volume.ErrSnapshotName), errors.Is(err, volume.ErrSourceUnusable), errors.Is(err, volume.ErrIncomplete):
		return exitUsage
	case errors.Is(err, volume.ErrPolicy), errors.Is(err, volume.ErrKeyInUse), errors.Is(err, volume.ErrNotShareable):
		return exitRefused
	case errors.Is(err, server.ErrPrincipalsEdit), errors.Is(err, volume.ErrUnknownGrantee):
		return exitUsage
	case errors.As(err, new(*volume.InUseError)), errors.Is(err, volume.ErrMountpointBusy):
		return exitMounted
	case errors.Is(err, volume.ErrMountTarget):
		if errors.Is(err, fs.ErrPermission) {
			return exitFailure
		}
		return exitUsage
	case errors.Is(err, kmsclient.ErrUnreachable):
		return exitKMSDown
	case errors.Is(err, kmsclient.ErrDisabled), errors.Is(err, kmsclient.ErrPendingDeletion),
		errors.Is(err, kmsclient.ErrPendingImport), errors.Is(err, kmsclient.ErrNotFound),
		errors.Is(err, kmsclient.ErrAccessDenied):
		return exitKeyState
	case errors.Is(err, kmsclient.ErrInvalidRequest), errors.Is(err, kmsclient.ErrAlreadyExists):
		// The KMS refused the arguments (alias name, deletion window,
		// an alias that is taken): the command line has to change.
		return exitUsage
	}
	return 0
}

// isUsageText recognises cobra's own flag and argument errors, which carry
// no type.
func isUsageText(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown command", "unknown shorthand", "accepts ", "requires at least", "flag needs an argument", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// targetError classifies a failure to resolve what a command was pointed
// at (a volume name, a backing directory, a mountpoint): a header that is
// damaged or unreadable is a failure of the volume, anything else (no such
// name or directory, not a volume) is an argument that has to change.
func targetError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, keywrap.ErrHeaderCorrupt) || errors.Is(err, keywrap.ErrHeaderVersion) || errors.Is(err, fs.ErrPermission) {
		return withCode(exitFailure, err)
	}
	return withCode(exitUsage, err)
}
