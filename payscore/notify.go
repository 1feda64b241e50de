package payscore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/chargeflow/chargeflow/money"
)

// NotificationKind says what a notification reports.
type NotificationKind string

// Notification kinds (docs/payscore.md §5).
const (
	KindUnknown          NotificationKind = "unknown"
	KindUserConfirmed    NotificationKind = "user_confirmed"    // 用户确认成功通知
	KindPaymentSucceeded NotificationKind = "payment_succeeded" // 支付成功异步通知
)

// Notification is a verified Huifu notification. It is a HINT (docs/payscore.md §5):
// the session moves on verified facts, and applying the same notification
// twice must change nothing.
type Notification struct {
	Kind             NotificationKind
	RespCode         string
	RespDesc         string
	ReqSeqID         string // echoed in the acknowledgement
	ReqDate          string
	OutOrderNo       string
	State            string
	StateDescription string
	OpenID           string
	TransHfSeqID     string // payment: the debit's hf_seq_id, or Huifu's for the user's own payment
	TransReqDate     string // payment: with TransHfSeqID, what a refund needs
	TransAmt         money.Fen
	TransStat        string
	HuifuID          string
	Raw              string // resp_data exactly as received and verified
}

// Ack is the exact body Huifu expects in answer to n.
func (n Notification) Ack() string { return AckPrefix + n.ReqSeqID }

// VerifyNotification verifies sign over respData exactly as received, and
// only then decodes it. Errors: ErrNotSigned (no sign), ErrNoValidSignature,
// ErrMalformedNotification (no resp_data, bad JSON, no req_seq_id, bad
// trans_amt). Nothing is decoded from an unverified body.
func VerifyNotification(v Verifier, respData, sign string) (Notification, error) {
	if sign == "" {
		return Notification{}, ErrNotSigned
	}
	if respData == "" {
		return Notification{}, fmt.Errorf("%w: no resp_data", ErrMalformedNotification)
	}
	if err := v.Verify([]byte(respData), sign); err != nil {
		if errors.Is(err, ErrNotSigned) || errors.Is(err, ErrNoValidSignature) {
			return Notification{}, err
		}
		return Notification{}, fmt.Errorf("%w: %v", ErrNoValidSignature, err)
	}
	var w notificationWire
	if err := json.Unmarshal([]byte(respData), &w); err != nil {
		return Notification{}, fmt.Errorf("%w: %v", ErrMalformedNotification, err)
	}
	if w.ReqSeqID == "" {
		return Notification{}, fmt.Errorf("%w: no req_seq_id", ErrMalformedNotification)
	}
	amt, err := parseTransAmt(w.TransAmt)
	if err != nil {
		return Notification{}, err
	}
	n := Notification{
		RespCode: w.RespCode, RespDesc: w.RespDesc, ReqSeqID: w.ReqSeqID, ReqDate: w.ReqDate,
		OutOrderNo: w.OutOrderNo, State: w.State, StateDescription: w.StateDescription, OpenID: w.OpenID,
		TransHfSeqID: w.TransHfSeqID, TransReqDate: w.TransReqDate, TransAmt: amt, TransStat: w.TransStat,
		HuifuID: w.HuifuID, Raw: respData,
	}
	n.Kind = classify(&n)
	return n, nil
}

// VerifyNotificationForm is VerifyNotification for a parsed form: it reads
// resp_data and sign and ignores every other field.
func VerifyNotificationForm(v Verifier, form url.Values) (Notification, error) {
	return VerifyNotification(v, form.Get("resp_data"), form.Get("sign"))
}

// DefaultMaxNotifyBody caps a notification body.
const DefaultMaxNotifyBody = 64 << 10

// NotifyOptions tunes NotifyHandler. The zero value is usable.
type NotifyOptions struct {
	MaxBodyBytes int64        // default DefaultMaxNotifyBody
	Logger       *slog.Logger // default: discard
}

// NotifyStatus maps a VerifyNotification / body error to the HTTP status the
// notify endpoint answers: 413 too large, 401 unsigned or bad signature, 400
// malformed. Other errors give 500.
func NotifyStatus(err error) int {
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrNotSigned), errors.Is(err, ErrNoValidSignature):
		return http.StatusUnauthorized
	case errors.Is(err, ErrMalformedNotification):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

// ReadNotification reads a notification request: caps the body, parses the
// form, verifies and decodes. Errors as VerifyNotification, plus
// ErrBodyTooLarge and ErrMalformedNotification for an unreadable form.
func ReadNotification(r *http.Request, v Verifier, maxBody int64) (Notification, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxNotifyBody
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return Notification{}, fmt.Errorf("%w: read body: %v", ErrMalformedNotification, err)
	}
	if int64(len(body)) > maxBody {
		return Notification{}, ErrBodyTooLarge
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return Notification{}, fmt.Errorf("%w: form: %v", ErrMalformedNotification, err)
	}
	return VerifyNotificationForm(v, form)
}

// NotifyHandler serves Huifu's notifications (docs/payscore.md §5): POST only; the
// body is capped (413); a missing or bad signature gets 401 and nothing is
// applied; a verified but undecodable body gets 400; then apply runs, and its
// error answers 500 so that Huifu sends again (apply must be idempotent: the
// same notification arrives more than once anyway). Success answers 200
// text/plain RECV_ORD_ID_<req_seq_id>.
//
// apply receives the request's context and runs on the request goroutine;
// Huifu waits at most 5 s for the answer.
func NotifyHandler(v Verifier, apply func(context.Context, Notification) error, opts NotifyOptions) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		n, err := ReadNotification(r, v, opts.MaxBodyBytes)
		if err != nil {
			status := NotifyStatus(err)
			log.Warn("payscore notification refused", "status", status, "error", err)
			http.Error(w, http.StatusText(status), status)
			return
		}
		if err := apply(r.Context(), n); err != nil {
			log.Error("payscore notification not applied", "req_seq_id", n.ReqSeqID, "out_order_no", n.OutOrderNo, "kind", n.Kind, "error", err)
			http.Error(w, "not applied", http.StatusInternalServerError)
			return
		}
		log.Info("payscore notification applied", "req_seq_id", n.ReqSeqID, "out_order_no", n.OutOrderNo, "kind", n.Kind)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, n.Ack())
	})
}

// SignNotification returns the form Huifu would post for resp_data: the JSON
// string itself and the signature over exactly those bytes. For the sandbox
// and for tests (see package payscoretest).
func SignNotification(s Signer, respData string) (url.Values, error) {
	sig, err := s.Sign([]byte(respData))
	if err != nil {
		return nil, fmt.Errorf("sign notification: %w", err)
	}
	return url.Values{"resp_data": {respData}, "sign": {sig}}, nil
}
