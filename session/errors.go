package session

import (
	"errors"
	"fmt"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// Error codes: one vocabulary for the whole service, mapped to HTTP by the
// api package and named in its problem documents (docs/service.md §3).
const (
	CodeInvalid        = "invalid"
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeUnauthorized   = "unauthorized"
	CodeForbidden      = "forbidden"
	CodeUnavailable    = "unavailable"
	CodePaymentRefused = "payment_refused"
	CodeInternal       = "internal"
)

// Error is an error a client may see: a stable Code and a human Message.
// Anything that is not an *Error is internal and is never shown.
type Error struct {
	Code    string
	Message string
	// Fields holds field-level messages for CodeInvalid (field → message).
	Fields map[string]string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns a CodeInvalid error with field-level messages.
func Invalid(fields map[string]string) *Error {
	return &Error{Code: CodeInvalid, Message: "the request is not valid", Fields: fields}
}

// ErrorCode returns the code of err: an *Error's own, a refused event's
// conflict, a store's not-found or unavailability, or internal.
func ErrorCode(err error) string {
	var e *Error
	var refused *fsm.RefusedError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &refused):
		return CodeConflict
	case errors.Is(err, store.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, store.ErrConflict): // busy connector, existing id, stale version
		return CodeConflict
	case errors.Is(err, store.ErrInvalid):
		return CodeInvalid
	case store.IsRetryable(err):
		return CodeUnavailable
	}
	return CodeInternal
}

// ErrorMessage returns the message a client may see for err; internal
// errors are "internal error", whatever they say.
func ErrorMessage(err error) string {
	var e *Error
	var refused *fsm.RefusedError
	switch {
	case errors.As(err, &e):
		return e.Message
	case errors.As(err, &refused):
		return refused.Reason
	}
	switch ErrorCode(err) {
	case CodeNotFound:
		return "not found"
	case CodeUnavailable:
		return "temporarily unavailable, try again"
	case CodeConflict:
		return "conflict"
	case CodeInvalid:
		return "the request is not valid"
	}
	return "internal error"
}
