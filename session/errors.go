package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

// Error codes: one vocabulary for the whole service, mapped to HTTP by the
// api package and named in its problem documents (docs/contract.md §3).
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

// ErrorClass is what a failed effect means to the outbox.
type ErrorClass int

// The classes of Classify.
const (
	// ClassFinal: the operation did not happen and will not: record the
	// failure (an anomaly, or the event that says so) and do not try again.
	ClassFinal ErrorClass = iota
	// ClassRetryable: transient, nothing happened: perform the same effect
	// again later (same command id; the same req_seq_id the same day, a new
	// attempt dated the new day after midnight, docs/payscore.md §3).
	ClassRetryable
	// ClassUncertain: it may have happened: settle by a query before
	// anything else, then perform the same effect again.
	ClassUncertain
)

func (c ErrorClass) String() string {
	switch c {
	case ClassRetryable:
		return "retryable"
	case ClassUncertain:
		return "uncertain"
	}
	return "final"
}

// Classify is the engine's one classifier of errors; every outbox worker
// and the creation use it. An error the engine marked retryable is so
// whatever it wraps (a complete that Pay Score refused is still owed: it is
// tried again); Pay Score errors are classified by
// payscore.Classify; an unavailable store and a version conflict (the
// record moved on: reload and re-apply) are retryable; a
// context deadline is uncertain (we stopped waiting, not the operation);
// everything else is final. err must not be nil.
func Classify(err error) ErrorClass {
	var pe *payscore.Error
	switch {
	case errors.As(err, new(errRetry)):
		return ClassRetryable
	case errors.As(err, &pe):
		switch payscore.Classify(pe) {
		case payscore.Uncertain:
			return ClassUncertain
		case payscore.Retryable:
			return ClassRetryable
		}
		return ClassFinal
	case store.IsRetryable(err), errors.Is(err, store.ErrVersionConflict):
		return ClassRetryable
	case errors.Is(err, context.DeadlineExceeded):
		return ClassUncertain
	}
	return ClassFinal
}
