package kmsclient

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error returned by a Client or Admin wraps exactly one
// of them (test with errors.Is), so callers can decide what a failure means
// without parsing messages: the key gate closes on the key-state kinds and
// keeps serving through ErrUnreachable.
var (
	// ErrDisabled: the CMK exists but is disabled.
	ErrDisabled = errors.New("key is disabled")
	// ErrPendingDeletion: the CMK is scheduled for deletion.
	ErrPendingDeletion = errors.New("key is pending deletion")
	// ErrPendingImport: the CMK has origin EXTERNAL and no (or expired) key material.
	ErrPendingImport = errors.New("key is waiting for its key material to be imported")
	// ErrNotFound: no such key, alias or grant (or the key was deleted).
	ErrNotFound = errors.New("key not found")
	// ErrAccessDenied: the caller is not allowed to use the key (no grant,
	// grant revoked, bad credentials or signature).
	ErrAccessDenied = errors.New("access denied")
	// ErrInvalidCiphertext: the blob was not made by this key or the
	// encryption context differs from the one it was wrapped with.
	ErrInvalidCiphertext = errors.New("ciphertext does not match the key or encryption context")
	// ErrUnreachable: the KMS could not be reached or answered with a
	// transient server failure; the key state is unknown, not revoked.
	ErrUnreachable = errors.New("KMS unreachable")
	// ErrInvalidRequest: the KMS refused the request as malformed or not
	// allowed in the current state (bad alias name, window out of range, …).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrInvalidState: the key is in a state that does not allow this
	// operation, other than disabled/pending deletion/pending import (for
	// example cancelling a deletion that was never scheduled, or disabling
	// the service key).
	ErrInvalidState = errors.New("operation not allowed in the key's current state")
	// ErrUnsupported: the backend cannot do this operation at all.
	ErrUnsupported = errors.New("operation not supported by this KMS")
	// ErrAlreadyExists: the name (an alias) is already taken.
	ErrAlreadyExists = errors.New("already exists")
)

// Error is the detailed form of every KMS failure. Kind is one of the
// sentinel errors above; Code and Message are what the KMS said (AWS
// exception name and text, empty for transport failures).
type Error struct {
	Kind    error  // one of the Err* sentinels
	Op      string // KMS operation, e.g. "Decrypt"
	KMS     string // name of the configured KMS ([kms.NAME])
	KeyID   string // key reference the call was about, if any
	Code    string // AWS exception name, e.g. "DisabledException"
	Message string // the KMS's own message or the transport error text
	Err     error  // underlying cause, if any
}

// Error renders one sentence: what failed, on which key and KMS, and why.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
	} else {
		b.WriteString("KMS call")
	}
	if e.KeyID != "" {
		fmt.Fprintf(&b, " with key %s", e.KeyID)
	}
	if e.KMS != "" {
		fmt.Fprintf(&b, " on KMS %q", e.KMS)
	}
	b.WriteString(" failed: ")
	if e.Kind != nil {
		b.WriteString(e.Kind.Error())
	} else {
		b.WriteString("unknown error")
	}
	detail := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(e.Message), "."))
	switch {
	case e.Code != "" && detail != "":
		fmt.Fprintf(&b, " (%s: %s)", e.Code, detail)
	case e.Code != "":
		fmt.Fprintf(&b, " (%s)", e.Code)
	case detail != "":
		fmt.Fprintf(&b, " (%s)", detail)
	}
	return b.String()
}

// Is reports whether target is this error's Kind.
func (e *Error) Is(target error) bool { return target != nil && target == e.Kind }

// Unwrap exposes both the kind and the underlying cause to errors.Is/As.
func (e *Error) Unwrap() []error {
	out := []error{e.Kind}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// kindForCode maps an AWS KMS exception name (and, for
// KMSInvalidStateException, its message) to a sentinel. Both backends use
// it, so local and remote report the same kinds for the same situation.
func kindForCode(code, message string) error {
	msg := strings.ToLower(message)
	switch code {
	case "DisabledException":
		return ErrDisabled
	case "KMSInvalidStateException":
		switch {
		// "is not pending deletion" (CancelKeyDeletion on a live key) must not
		// read as a key that is being deleted.
		case strings.Contains(msg, "not pending deletion"), strings.Contains(msg, "not pending import"):
			return ErrInvalidState
		case strings.Contains(msg, "pending deletion"):
			return ErrPendingDeletion
		case strings.Contains(msg, "pending import"):
			return ErrPendingImport
		case strings.Contains(msg, "is disabled"):
			return ErrDisabled
		}
		return ErrInvalidState
	case "NotFoundException", "InvalidGrantIdException":
		return ErrNotFound
	case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
		"IncompleteSignature", "IncompleteSignatureException", "MissingAuthenticationToken",
		"MissingAuthenticationTokenException", "ExpiredTokenException", "InvalidClientTokenId",
		"SignatureDoesNotMatch", "NotAuthorized":
		return ErrAccessDenied
	case "InvalidCiphertextException", "IncorrectKeyException":
		return ErrInvalidCiphertext
	case "KMSInternalException", "KeyUnavailableException", "DependencyTimeoutException",
		"ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalServerError",
		"ThrottlingException", "Throttling", "RequestLimitExceeded":
		return ErrUnreachable
	case "UnsupportedOperationException":
		return ErrUnsupported
	case "AlreadyExistsException":
		return ErrAlreadyExists
	}
	return ErrInvalidRequest
}

// Remedy returns one short sentence telling a person what to do about err,
// or "" when there is nothing specific to say. keyRef and kmsName are used
// to build runnable commands; either may be empty.
func Remedy(err error, keyRef, kmsName string) string {
	key := keyRef
	if key == "" {
		key = "KEY"
	}
	kmsFlag := ""
	if kmsName != "" {
		kmsFlag = " --kms " + kmsName
	}
	switch {
	case errors.Is(err, ErrDisabled):
		return fmt.Sprintf("enable the key with `encvol kms enable-key %s%s` if it was disabled by mistake", key, kmsFlag)
	case errors.Is(err, ErrPendingDeletion):
		return fmt.Sprintf("run `encvol kms cancel-key-deletion %s%s` and then `encvol kms enable-key %s%s` before the deletion date", key, kmsFlag, key, kmsFlag)
	case errors.Is(err, ErrPendingImport):
		return fmt.Sprintf("import the key material with `encvol kms import-key-material %s --material FILE%s`", key, kmsFlag)
	case errors.Is(err, ErrNotFound):
		return "check the key ID or alias with `encvol kms list-keys" + kmsFlag + "` and `encvol kms list-aliases" + kmsFlag + "`"
	case errors.Is(err, ErrAccessDenied):
		return "check the credentials in the configuration, or ask the key owner for a grant (`encvol kms create-grant " + key + " --grantee PRINCIPAL --operations ...`)"
	case errors.Is(err, ErrInvalidCiphertext):
		return "the wrapped key does not belong to this key or volume; restore the volume header from a backup"
	case errors.Is(err, ErrUnreachable):
		return "check that the KMS endpoint is up and reachable (endpoint, ca_file and network), then retry"
	case errors.Is(err, ErrAlreadyExists):
		return "pick another alias (`encvol kms list-aliases" + kmsFlag + "` lists the taken ones)"
	}
	return ""
}
