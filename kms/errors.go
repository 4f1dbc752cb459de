package kms

import (
	"errors"
	"fmt"
	"net/http"
)

// AWS KMS exception names used as Error.Code. The HTTP server puts them into
// the "__type" field of its error bodies, so they must match AWS exactly.
const (
	CodeAccessDenied         = "AccessDeniedException"
	CodeAlreadyExists        = "AlreadyExistsException"
	CodeDisabled             = "DisabledException"
	CodeIncorrectKey         = "IncorrectKeyException"
	CodeIncorrectKeyMaterial = "IncorrectKeyMaterialException"
	CodeInternal             = "KMSInternalException"
	CodeInvalidAliasName     = "InvalidAliasNameException"
	CodeInvalidArn           = "InvalidArnException"
	CodeInvalidCiphertext    = "InvalidCiphertextException"
	CodeInvalidGrantID       = "InvalidGrantIdException"
	CodeInvalidImportToken   = "InvalidImportTokenException"
	CodeInvalidKeyUsage      = "InvalidKeyUsageException"
	CodeInvalidState         = "KMSInvalidStateException"
	CodeLimitExceeded        = "LimitExceededException"
	CodeMalformedPolicy      = "MalformedPolicyDocumentException"
	CodeNotFound             = "NotFoundException"
	CodeTag                  = "TagException"
	CodeUnsupportedOperation = "UnsupportedOperationException"
	CodeValidation           = "ValidationException"
	CodeExpiredImportToken   = "ExpiredImportTokenException"
	CodeKeyUnavailable       = "KeyUnavailableException"
	CodeDependencyTimeout    = "DependencyTimeoutException"
)

// Error is an AWS-style KMS error. Code is the AWS exception name; Message is
// a human sentence in the style AWS uses ("<ARN> is disabled."). Every error a
// Store method returns is either an *Error or wraps one, so ErrorCode always
// yields the AWS name for it.
type Error struct {
	Code    string
	Message string
}

// Error returns "Code: Message".
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// HTTPStatus returns the status code AWS KMS uses for Code. Key-state errors
// are never 5xx, because SDK clients retry 5xx and would hammer the server
// about a key that is simply disabled.
func (e *Error) HTTPStatus() int {
	switch e.Code {
	case CodeDisabled, CodeInvalidState, CodeAlreadyExists:
		return http.StatusConflict
	case CodeNotFound:
		return http.StatusNotFound
	case CodeInternal, CodeKeyUnavailable:
		return http.StatusInternalServerError
	case CodeDependencyTimeout:
		return http.StatusServiceUnavailable
	default:
		// AccessDenied, Validation, InvalidCiphertext, IncorrectKey,
		// UnsupportedOperation, InvalidAliasName, LimitExceeded, ...
		return http.StatusBadRequest
	}
}

// ErrorCode returns the AWS exception name of err if err is (or wraps) an
// *Error, and "" otherwise.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func newErr(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// internalErr turns an unexpected local failure (I/O, corrupt state) into a
// KMSInternalException that still carries the underlying cause in its text.
func internalErr(step string, err error) *Error {
	return &Error{Code: CodeInternal, Message: fmt.Sprintf("%s: %v", step, err)}
}

func validationErr(format string, args ...any) *Error {
	return newErr(CodeValidation, format, args...)
}
