package main

import (
	"errors"

	"github.com/encvol/encvol/kmsclient"
)

// kmsExitCode gives the exit code for KMS failures, or 0 when err is not one.
// Key-state failures and an unreachable KMS get their own codes so scripts
// can tell "the key was revoked" from "the network is down".
func kmsExitCode(err error) int {
	switch {
	case errors.Is(err, kmsclient.ErrUnreachable):
		return exitKMSDown
	case errors.Is(err, kmsclient.ErrDisabled), errors.Is(err, kmsclient.ErrPendingDeletion),
		errors.Is(err, kmsclient.ErrPendingImport), errors.Is(err, kmsclient.ErrNotFound),
		errors.Is(err, kmsclient.ErrAccessDenied):
		return exitKeyState
	}
	return 0
}
