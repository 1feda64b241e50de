package payscore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Config configures a Client. BaseURL, SysID, ProductID, HuifuID, Signer and
// Verifier are required.
type Config struct {
	BaseURL   string // e.g. https://api.huifu.com (no trailing slash needed)
	SysID     string // envelope sys_id: the caller's huifu_id (channel or merchant)
	ProductID string // envelope product_id, issued by Huifu
	HuifuID   string // the merchant's huifu_id sent in data
	ServiceID string // WeChat Pay Score service_id; sent at create when set
	NotifyURL string // where Huifu posts notifications (create and debit)

	Signer   Signer   // merchant private key
	Verifier Verifier // Huifu public key

	HTTPClient   *http.Client  // default: a client without its own timeout
	Timeout      time.Duration // per HTTP send; default 10s
	MaxSends     int           // HTTP sends per Call, retries included; default 3
	RetryBackoff time.Duration // first back-off, doubled per retry; default 200ms
	Logger       *slog.Logger  // default: discard
	Observer     Observer      // optional metrics hook
	// Now is the clock that says which Beijing day it is (default
	// time.Now): Call does not re-send a request whose req_date is no
	// longer today (docs/payscore.md §3, the midnight rule).
	Now func() time.Time
}

// Observer is told about every HTTP send Call makes, so metrics can be attached
// without touching Call. ObserveCall runs on the calling goroutine and must
// be quick and safe for concurrent use.
type Observer interface {
	ObserveCall(CallInfo)
}

// CallInfo describes one HTTP send of a Call (a transport retry is another
// send of the same request, never another attempt: docs/payscore.md §3).
type CallInfo struct {
	Endpoint string        // request path
	Send     int           // 1-based
	Result   string        // resp_code, or "http_<status>", "network", "timeout", "bad_reply", "bad_signature"
	Duration time.Duration // of this send
	Final    bool          // no further send follows
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(CallInfo)

// ObserveCall implements Observer.
func (f ObserverFunc) ObserveCall(i CallInfo) { f(i) }

// Client talks to Huifu. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	log  *slog.Logger
}

// maxReplyBytes caps a reply body read into memory.
const maxReplyBytes = 1 << 20

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{{"BaseURL", cfg.BaseURL}, {"SysID", cfg.SysID}, {"ProductID", cfg.ProductID}, {"HuifuID", cfg.HuifuID}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if cfg.Signer == nil {
		missing = append(missing, "Signer")
	}
	if cfg.Verifier == nil {
		missing = append(missing, "Verifier")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("payscore config: missing %s", strings.Join(missing, ", "))
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxSends <= 0 {
		cfg.MaxSends = 3
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 200 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient, log: cfg.Logger}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// HuifuID returns the merchant huifu_id the typed methods send.
func (c *Client) HuifuID() string { return c.cfg.HuifuID }

// Call is the one choke point for every request to Huifu. It drops empty
// values from data (chargeflow omits unset fields, docs/payscore.md §2), serialises
// data canonically, signs it, wraps it in the four-member envelope and POSTs
// it. The signed body is fixed before the first send: retries send the
// very same bytes, so the same req_seq_id.
//
// A reply counts only when its signature verifies (over the raw bytes of
// data, falling back to the canonical form). resp_code 00000000 and 00000100
// are success: data is then decoded into out (if non-nil) with encoding/json.
//
// Retries, bounded by Config.MaxSends with doubling back-off: network
// errors, per-send timeouts, HTTP 5xx and 429, resp_code 98888888,
// 99999999, 91111119 and 20000001. Nothing else is retried. A request with
// a req_date is re-sent only while that date is today (Beijing): past
// midnight Huifu refuses it, so Call stops and returns the last failure
// wrapped with ErrReqDateStale — the caller settles the attempt by query
// and, only if it did not execute, sends a new attempt dated today
// (AttemptOn).
//
// Every failure is an *Error. Once any send may have reached Huifu's
// business logic, every later failure is reported Uncertain, because a
// refusal on a retry ("already completed", "duplicate") may be caused by the
// first send having succeeded.
func (c *Client) Call(ctx context.Context, path string, data map[string]string, out any) error {
	clean := make(map[string]string, len(data))
	for k, v := range data {
		if v != "" {
			clean[k] = v
		}
	}
	payload, err := CanonicalJSON(clean)
	if err != nil {
		return &Error{Endpoint: path, Err: err}
	}
	sig, err := c.cfg.Signer.Sign(payload)
	if err != nil {
		return &Error{Endpoint: path, ReqSeqID: clean["req_seq_id"], Err: fmt.Errorf("sign request: %w", err)}
	}
	body, err := envelope(c.cfg.SysID, c.cfg.ProductID, payload, sig)
	if err != nil {
		return &Error{Endpoint: path, Err: err}
	}
	log := c.log.With("endpoint", path, "req_seq_id", clean["req_seq_id"], "out_order_no", clean["out_order_no"])

	var (
		maybeExecuted bool
		last          *sendResult
		backoff       = c.cfg.RetryBackoff
	)
	for send := 1; ; send++ {
		start := time.Now()
		r := c.sendOnce(ctx, path, body, out)
		if r.err != nil {
			r.err.Sends = send
		}
		maybeExecuted = maybeExecuted || r.maybeExecuted
		last = &r
		final := r.ok || !r.err.Retryable || errors.Is(r.err.Err, ErrReqDateStale) || send >= c.cfg.MaxSends || ctx.Err() != nil
		if c.cfg.Observer != nil {
			c.cfg.Observer.ObserveCall(CallInfo{Endpoint: path, Send: send, Result: r.result, Duration: time.Since(start), Final: final})
		}
		if r.ok {
			log.Debug("payscore call ok", "resp_code", r.result, "send", send, "duration", time.Since(start))
			return nil
		}
		if final {
			break
		}
		if d := clean["req_date"]; d != "" && d != FormatDate(c.cfg.Now()) {
			r.err.Err = staleDate(r.err.Err)
			break
		}
		log.Warn("payscore call retrying", "result", r.result, "send", send, "error", r.err.Err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff *= 2
	}
	e := last.err
	e.Endpoint, e.ReqSeqID = path, clean["req_seq_id"]
	if maybeExecuted {
		e.Uncertain = true
	}
	if ctx.Err() != nil {
		e.Retryable = true // the request itself is fine; only the caller gave up
		if e.Err == nil {
			e.Err = ctx.Err()
		}
	}
	log.Warn("payscore call failed", "result", last.result, "sends", e.Sends, "uncertain", e.Uncertain, "retryable", e.Retryable, "resp_desc", e.Desc)
	return e
}

// envelope builds the four-member body with data as the exact signed bytes.
func envelope(sysID, productID string, data []byte, sig string) ([]byte, error) {
	head, err := CanonicalJSON(struct {
		SysID     string `json:"sys_id"`
		ProductID string `json:"product_id"`
	}{sysID, productID})
	if err != nil {
		return nil, err
	}
	signJSON, err := CanonicalJSON(sig)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(head[:len(head)-1]) // drop '}'
	b.WriteString(`,"data":`)
	b.Write(data)
	b.WriteString(`,"sign":`)
	b.Write(signJSON)
	b.WriteByte('}')
	return b.Bytes(), nil
}

type sendResult struct {
	ok            bool
	result        string // for the observer and logs
	maybeExecuted bool   // Huifu may have performed the operation
	err           *Error // when !ok
}

// replyHead is what Call reads of every reply's data.
type replyHead struct {
	RespCode string `json:"resp_code"`
	RespDesc string `json:"resp_desc"`
}

func (c *Client) sendOnce(ctx context.Context, path string, body []byte, out any) sendResult {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, c.cfg.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return sendResult{result: "bad_request", err: &Error{Err: err}}
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		r := sendResult{result: "network", maybeExecuted: !notSent(err), err: &Error{Err: err, Retryable: true}}
		if actx.Err() != nil && ctx.Err() == nil {
			r.result = "timeout"
		}
		return r
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes+1))
	if err != nil {
		return sendResult{result: "network", maybeExecuted: true, err: &Error{HTTPStatus: resp.StatusCode, Err: fmt.Errorf("read reply: %w", err), Retryable: true}}
	}
	status := resp.StatusCode
	switch {
	case status >= 500:
		return sendResult{result: fmt.Sprintf("http_%d", status), maybeExecuted: true, err: &Error{HTTPStatus: status, Retryable: true}}
	case status == http.StatusTooManyRequests:
		return sendResult{result: "http_429", err: &Error{HTTPStatus: status, Retryable: true}}
	case status != http.StatusOK:
		// A gateway refusal (4xx): the request never reached the business logic.
		return sendResult{result: fmt.Sprintf("http_%d", status), err: &Error{HTTPStatus: status}}
	}
	if len(raw) > maxReplyBytes {
		return sendResult{result: "bad_reply", maybeExecuted: true, err: &Error{HTTPStatus: status, Err: errors.New("reply too large")}}
	}
	var env struct {
		Data json.RawMessage `json:"data"`
		Sign string          `json:"sign"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || len(env.Data) == 0 || env.Data[0] != '{' {
		// Garbled 200: the call may have run; the same body may be resent.
		return sendResult{result: "bad_reply", maybeExecuted: true, err: &Error{HTTPStatus: status, Err: errors.New("reply is not a data/sign envelope"), Retryable: true}}
	}
	var head replyHead
	_ = json.Unmarshal(env.Data, &head) // a data object without string codes leaves head empty
	e := &Error{HTTPStatus: status, Code: head.RespCode, Desc: head.RespDesc}
	if env.Sign == "" {
		// An unsigned reply is unverified: never a success, and a failure it
		// reports cannot be trusted either.
		e.Err = ErrNotSigned
		e.Retryable = isRetryableCode(head.RespCode)
		return sendResult{result: "bad_signature", maybeExecuted: true, err: e}
	}
	if err := c.verifyReply(env.Data, env.Sign); err != nil {
		e.Err = err
		return sendResult{result: "bad_signature", maybeExecuted: true, err: e}
	}
	e.Verified = true
	switch code := head.RespCode; {
	case isSuccessCode(code):
		if out != nil {
			if err := json.Unmarshal(env.Data, out); err != nil {
				e.Err = fmt.Errorf("decode reply: %w", err)
				return sendResult{result: code, maybeExecuted: true, err: e}
			}
		}
		return sendResult{ok: true, result: code}
	case isRetryableCode(code):
		e.Retryable = true
		return sendResult{result: code, maybeExecuted: true, err: e}
	case code == CodeTooFrequent:
		e.Retryable = true
		return sendResult{result: code, err: e}
	case code == CodeDuplicate:
		// A request with this id ran before — possibly this very one.
		return sendResult{result: code, maybeExecuted: true, err: e}
	case isStaleDateRefusal(code, head.RespDesc):
		// Our day is not Huifu's (a clock a little off at midnight):
		// nothing ran; a new attempt dated today may be sent.
		e.Retryable, e.Err = true, ErrReqDateStale
		return sendResult{result: code, err: e}
	case !knownCode(code):
		// A code this profile does not know: it may have executed.
		return sendResult{result: code, maybeExecuted: true, err: e}
	default:
		return sendResult{result: code, err: e}
	}
}

// verifyReply checks Huifu's signature over the raw data bytes as sent, then
// over the canonical re-serialisation (docs/payscore.md §3).
func (c *Client) verifyReply(data json.RawMessage, sig string) error {
	err := c.cfg.Verifier.Verify(data, sig)
	if err == nil {
		return nil
	}
	if canon, cerr := Canonicalize(data); cerr == nil && !bytes.Equal(canon, data) {
		if c.cfg.Verifier.Verify(canon, sig) == nil {
			return nil
		}
	}
	return err
}

// notSent reports whether err proves the request never left: only a failure
// to connect does. Everything else may have reached Huifu.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
