package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// ProblemTypeBase prefixes every problem's type: the type of a problem with
// code c is ProblemTypeBase + c (e.g. https://chargeflow.dev/problems/conflict).
// The code is also its own member, so clients can switch on it directly.
const ProblemTypeBase = "https://chargeflow.dev/problems/"

// Problem is the RFC 9457 problem document every error answers with
// (Content-Type application/problem+json).
type Problem struct {
	Type     string            `json:"type"`
	Title    string            `json:"title"`
	Status   int               `json:"status"`
	Detail   string            `json:"detail"`
	Code     string            `json:"code"`
	Instance string            `json:"instance,omitempty"`
	Errors   map[string]string `json:"errors,omitempty"` // field → message, for code invalid
	// RequestID is the X-Request-Id of the request, to quote to support.
	RequestID string `json:"request_id,omitempty"`
}

// codeStatus is the one map from the service's error codes to HTTP status.
var codeStatus = map[string]int{
	session.CodeInvalid:        http.StatusBadRequest,
	session.CodeNotFound:       http.StatusNotFound,
	session.CodeConflict:       http.StatusConflict,
	session.CodeUnauthorized:   http.StatusUnauthorized,
	session.CodeForbidden:      http.StatusForbidden,
	session.CodeUnavailable:    http.StatusServiceUnavailable,
	session.CodePaymentRefused: http.StatusBadGateway,
	session.CodeInternal:       http.StatusInternalServerError,
}

// codeTitle is the short, fixed summary of each code (RFC 9457 "title").
var codeTitle = map[string]string{
	session.CodeInvalid:        "Invalid request",
	session.CodeNotFound:       "Not found",
	session.CodeConflict:       "Conflict",
	session.CodeUnauthorized:   "Unauthorized",
	session.CodeForbidden:      "Forbidden",
	session.CodeUnavailable:    "Temporarily unavailable",
	session.CodePaymentRefused: "Payment refused",
	session.CodeInternal:       "Internal error",
}

// statusError gives a client error an HTTP status of its own where the
// code's status is not precise enough: 413 and 415 (code invalid) and 405.
type statusError struct {
	status int
	err    *session.Error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func withStatus(status int, code, detail string) error {
	return &statusError{status: status, err: &session.Error{Code: code, Message: detail}}
}

// invalid returns a code-invalid error with one field message.
func invalid(field, msg string) error {
	return session.Invalid(map[string]string{field: msg})
}

// storeArg turns the store's ErrInvalid (a bad cursor or limit the client
// sent) into a client error on field; everything else passes.
func storeArg(err error, field string) error {
	if errors.Is(err, store.ErrInvalid) {
		return invalid(field, "not valid")
	}
	return err
}

// Error writes err as a problem document. The status comes from err's code
// (session.ErrorCode) through codeStatus, except for a statusError. Internal
// errors are logged with the request id and shown as "internal error"; the
// client sees only what an *session.Error says.
func Error(w http.ResponseWriter, r *http.Request, err error) {
	code := session.ErrorCode(err)
	if code == "" {
		code = session.CodeInternal
	}
	detail := session.ErrorMessage(err)
	status, ok := codeStatus[code]
	if !ok {
		code, status, detail = session.CodeInternal, http.StatusInternalServerError, "internal error"
	}
	var se *statusError
	if errors.As(err, &se) {
		status = se.status
	}
	log := loggerFrom(r)
	switch {
	case code == session.CodeInternal && r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The client went away mid-request: nobody reads this answer.
		log.Info("request abandoned by the client", "err", err)
		code, status, detail = session.CodeUnavailable, http.StatusServiceUnavailable, "request cancelled"
	case code == session.CodeInternal:
		log.Error("internal error", "err", err)
		detail = "internal error"
	case status >= 500:
		log.Warn("request failed", "code", code, "err", err)
	}
	p := Problem{Type: ProblemTypeBase + code, Title: codeTitle[code], Status: status, Detail: detail, Code: code,
		Instance: r.URL.Path, RequestID: requestIDFrom(r.Context())}
	var e *session.Error
	if code == session.CodeInvalid && errors.As(err, &e) && len(e.Fields) > 0 {
		p.Errors = e.Fields
	}
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="chargeflow"`)
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(p); err != nil {
		log.Debug("write problem", "err", err)
	}
}

// loggerFrom returns the request's logger (with its request id), or a
// discarding one outside the middleware.
func loggerFrom(r *http.Request) *slog.Logger {
	if info := infoFrom(r.Context()); info != nil && info.log != nil {
		return info.log
	}
	return slog.New(slog.DiscardHandler)
}
