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
	// Unreadable names the fields present in a form that could not be read
	// (they are left empty): the session then goes by the facts, a query.
	Unreadable []string
}

// Ack is the exact body Huifu expects in answer to n: RECV_ORD_ID_ and the
// req_seq_id found in resp_data. A notification without one is still
// acknowledged, with the first serial it does carry (or none): refusing it
// would only make Huifu send it again, and again.
func (n Notification) Ack() string {
	return AckPrefix + firstNonEmpty(n.ReqSeqID, n.TransHfSeqID, n.OutOrderNo)
}

// VerifyNotification verifies sign over respData exactly as received, and
// only then decodes it — tolerantly (docs/payscore.md §5): fields may be
// missing or extra, values numbers or strings, trans_amt yuan or fen. A
// field that cannot be read is left empty and named in Unreadable; a
// resp_data that is no JSON object at all gives a notification of
// KindUnknown with only Raw set. Errors: ErrNotSigned (no sign),
// ErrNoValidSignature, ErrMalformedNotification (no resp_data). Nothing is
// decoded from an unverified body.
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
	n := Notification{Kind: KindUnknown, Raw: respData}
	var f wireFields
	if err := json.Unmarshal([]byte(respData), &f); err != nil {
		n.Unreadable = []string{"resp_data"}
		return n, nil
	}
	n.RespCode, n.RespDesc, n.HuifuID = f.str("resp_code"), f.str("resp_desc"), f.str("huifu_id")
	n.ReqSeqID, n.ReqDate, n.OutOrderNo = f.str("req_seq_id"), f.str("req_date"), f.str(fieldOutOrderNo)
	n.State, n.StateDescription, n.OpenID = f.str(fieldState), f.str(fieldStateDesc), f.str("openid")
	n.TransHfSeqID, n.TransReqDate, n.TransStat = f.str("trans_hf_seq_id"), f.str("trans_req_date"), f.str(fieldTransStat)
	amt, err := f.amount(fieldTransAmt, inYuan)
	if err != nil {
		n.Unreadable = append(n.Unreadable, fieldTransAmt)
	}
	n.TransAmt = amt
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
// malformed (no resp_data, an unreadable form). Other errors give 500. A
// verified resp_data is never refused, however odd its fields.
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
// applied; a body without resp_data gets 400; a verified resp_data is
// always applied (apply gets what could be read); then apply runs, and its
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
		if n.ReqSeqID == "" || len(n.Unreadable) > 0 {
			log.Warn("payscore notification incomplete, acknowledged", "out_order_no", n.OutOrderNo, "kind", n.Kind,
				"unreadable", n.Unreadable, "resp_data", n.Raw)
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
