package payscore

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Test with errors.Is; they arrive wrapped.
var (
	// ErrNotSigned: a notification or reply carries no signature.
	ErrNotSigned = errors.New("payscore: not signed")
	// ErrNoValidSignature: a signature is present but does not verify with
	// Huifu's public key (or is not base64).
	ErrNoValidSignature = errors.New("payscore: no valid signature")
	// ErrBodyTooLarge: a notification body exceeds the configured cap.
	ErrBodyTooLarge = errors.New("payscore: body too large")
	// ErrMalformedNotification: a verified notification cannot be decoded
	// (bad JSON, missing req_seq_id, unparseable amount), or resp_data is
	// missing altogether.
	ErrMalformedNotification = errors.New("payscore: malformed notification")
	// ErrInvalidRequest: a typed request breaks a rule the client checks
	// before sending (missing field, bad amounts, too-long text). Nothing was
	// sent.
	ErrInvalidRequest = errors.New("payscore: invalid request")
	// ErrReqDateStale: a retry would have re-sent a request whose req_date
	// is no longer today (Beijing), which Huifu refuses; Call stopped. The
	// error stays Retryable (and Uncertain when a send may have executed):
	// settle by query, then send a new attempt dated today
	// (docs/payscore.md §3).
	ErrReqDateStale = errors.New("payscore: req_date is no longer today")
)

func staleDate(err error) error {
	if err == nil {
		return ErrReqDateStale
	}
	return fmt.Errorf("%w: %w", ErrReqDateStale, err)
}

// Error is every failure of Client.Call after the request was built: a
// business reply (Code set), an HTTP failure (HTTPStatus set) or a transport
// failure (Err set).
//
// The two flags are the contract with the caller (the session engine):
//
//   - Uncertain: Huifu may have performed the operation (a timeout, a 5xx,
//     a system error, an unverifiable reply, a duplicate req_seq_id, or a
//     failure on a retry after any of those). Never take it as "failed":
//     settle by a query first (database/sql/driver's ErrBadConn rule).
//   - Retryable: the failure is transient; the same request (same
//     req_seq_id, same req_date) may be sent again later.
//
// An Error that is neither is a definite refusal: the operation did not
// happen and sending it again unchanged will not help.
type Error struct {
	Endpoint   string // request path, e.g. /v2/trade/payscore/serviceorder/create
	ReqSeqID   string // the request's req_seq_id, if it has one
	Code       string // resp_code of the last reply; "" if no reply was read
	Desc       string // resp_desc of the last reply
	HTTPStatus int    // HTTP status of the last reply; 0 if none
	Sends      int    // how many times the request was sent over HTTP
	Verified   bool   // the last reply's signature verified
	Retryable  bool
	Uncertain  bool
	Err        error // underlying cause (transport error, signature error, ...)
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "payscore %s", e.Endpoint)
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, ": resp_code %s", e.Code)
		if e.Desc != "" {
			fmt.Fprintf(&b, " (%s)", e.Desc)
		}
		if !e.Verified {
			b.WriteString(" [unverified reply]")
		}
	case e.HTTPStatus != 0:
		fmt.Fprintf(&b, ": http status %d", e.HTTPStatus)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Sends > 1 {
		fmt.Fprintf(&b, " after %d sends", e.Sends)
	}
	if e.Uncertain {
		b.WriteString(" (outcome uncertain: settle by query)")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// WeChatCode returns the WeChat error name carried in resp_desc
// (ORDER_DONE, INVALID_ORDER_STATE, ...), or "" if none is recognised.
func (e *Error) WeChatCode() string { return wechatCode(e.Desc) }

func asError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Class is what a failed call means for the caller: the one classification
// every retry decision of the engine starts from.
type Class int

// The classes, from the contract of Error's flags.
const (
	// Final: a definite refusal; the operation did not happen and sending
	// it again unchanged will not help. So is every error that is not an
	// *Error (the request was invalid and never sent).
	Final Class = iota
	// Retryable: transient, and the operation did not happen: the same
	// request (same req_seq_id and req_date) may be sent again later.
	Retryable
	// Uncertain: Huifu may have performed it. Settle by a query before
	// deciding anything; never re-issue it under a new req_seq_id first.
	Uncertain
)

func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Uncertain:
		return "uncertain"
	}
	return "final"
}

// Classify says what err, returned by a Client method, means. Too frequent
// requests are Retryable whether or not the client retried them itself.
func Classify(err error) Class {
	e, ok := asError(err)
	switch {
	case !ok:
		return Final
	case e.Uncertain:
		return Uncertain
	case e.Retryable || IsFrequencyLimited(err):
		return Retryable
	}
	return Final
}

// IsRetryable reports whether err is transient: the same request (same
// req_seq_id and req_date, same fields) may be sent again later. Check
// IsUncertain first: an uncertain error may also be retryable.
func IsRetryable(err error) bool {
	e, ok := asError(err)
	return ok && e.Retryable
}

// IsUncertain reports whether Huifu may have performed the operation despite
// the error. The caller must settle the outcome by a query before deciding
// anything, and must never re-issue the step under a new req_seq_id until the
// query shows it did not happen.
func IsUncertain(err error) bool {
	e, ok := asError(err)
	return ok && e.Uncertain
}

// codeIs reports whether err is a verified Huifu reply whose resp_code is one
// of codes or whose resp_desc names one of the WeChat error names.
func codeIs(err error, codes []string, names ...string) bool {
	e, ok := asError(err)
	if !ok || e.Code == "" {
		return false
	}
	for _, c := range codes {
		if e.Code == c {
			return true
		}
	}
	wc := e.WeChatCode()
	for _, n := range names {
		if wc == n {
			return true
		}
	}
	return false
}

// IsOrderDone: the service order is already DONE (paid); e.g. a debit or a
// complete after the user paid by themselves.
func IsOrderDone(err error) bool { return codeIs(err, nil, WeChatOrderDone) }

// IsOrderCanceled: the service order was revoked.
func IsOrderCanceled(err error) bool { return codeIs(err, nil, WeChatOrderCanceled) }

// IsInvalidOrderState: the operation is not allowed in the order's current
// state (e.g. a second complete, cancel with a live registration).
func IsInvalidOrderState(err error) bool { return codeIs(err, nil, WeChatInvalidOrderState) }

// IsOrderNotExist: no such order (or registration / payment).
func IsOrderNotExist(err error) bool {
	return codeIs(err, []string{CodeNotFound}, WeChatOrderNotExist)
}

// IsParamError: a parameter was refused (resp_code 10000000 or PARAM_ERROR
// in resp_desc). Such a request will never succeed unchanged.
func IsParamError(err error) bool {
	return codeIs(err, []string{CodeBadParameter}, WeChatParamError)
}

// IsFrequencyLimited: too many requests; retry later with the same id.
func IsFrequencyLimited(err error) bool {
	return codeIs(err, []string{CodeTooFrequent}, WeChatFrequencyLimited)
}

// IsDuplicate: Huifu already has a request with this req_seq_id (today).
// Always also uncertain: the earlier request may be this one.
func IsDuplicate(err error) bool { return codeIs(err, []string{CodeDuplicate}) }
