package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// The problem codes of the API (the document's ProblemCode): switch on
// Error.Code, never on a message.
const (
	CodeInvalid        = "invalid"         // 400 (413 body too large, 415 not JSON): Errors names the fields
	CodeNotFound       = "not_found"       // 404: unknown session, charger or connector
	CodeConflict       = "conflict"        // 409: not allowed in the session's state; connector offline, busy or faulted
	CodeUnauthorized   = "unauthorized"    // 401: no or unknown token
	CodeForbidden      = "forbidden"       // 403: the token's role may not do this
	CodeUnavailable    = "unavailable"     // 503: retried by the client; returned once the attempts are spent
	CodePaymentRefused = "payment_refused" // 502: Pay Score refused the order (final for that Idempotency-Key)
	CodeInternal       = "internal"        // 500: a bug on chargeflow's side; quote RequestID
)

// Error is an answer of the API that is not a success: the RFC 9457 problem
// document chargeflow sends (Content-Type application/problem+json), or, for
// an answer that is not one (a proxy's error page), its status with Code "".
type Error struct {
	Status int `json:"status"`
	// Code is the stable code (Code* constants).
	Code   string `json:"code"`
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	// Errors maps a field, query parameter or header to what is wrong
	// with it (code invalid).
	Errors    map[string]string `json:"errors,omitempty"`
	Instance  string            `json:"instance,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chargeflow: %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if e.RequestID != "" {
		b.WriteString(" (request " + e.RequestID + ")")
	}
	return b.String()
}

// ErrorCode returns the problem code of err when it is (or wraps) an *Error,
// else "".
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// isProblem reports whether h announces a problem document.
func isProblem(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "application/problem+json"
}

// problemOf decodes an answer that is not the expected success.
func problemOf(resp *http.Response, body []byte) *Error {
	e := &Error{}
	if isProblem(resp.Header) && json.Unmarshal(body, e) == nil && e.Code != "" {
		e.Status = resp.StatusCode // the HTTP status is the truth
		return e
	}
	detail := strings.TrimSpace(string(body))
	if len(detail) > 200 {
		detail = detail[:200] + "…"
	}
	return &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), Detail: detail,
		RequestID: resp.Header.Get("X-Request-Id")}
}
