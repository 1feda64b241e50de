// Package client is a typed Go client of chargeflow's HTTP API for the
// mini-program's backend (role app): create a session, follow it, stop it,
// cancel it. It is written against the API's OpenAPI document (GET
// /openapi.json, api/openapi.json) and its tests check every exchange against
// that document. docs/integration.md shows where each call fits between the
// user scanning a charger's QR code and the paid notice; the subpackage
// webhook verifies the events chargeflow POSTs to the backend.
//
// Errors: an answer that is not a success is an *Error carrying the API's
// problem code (Code* constants); anything else is a transport error.
//
// Retries (the stripe-go rule: the idempotency key is fixed before the first
// attempt): every call is retried with back-off on 503, on a gateway's
// 502/504 that is not chargeflow's own answer, and on network errors,
// within Options.MaxAttempts. CreateSession sends the same Idempotency-Key
// on every attempt, so a retry after a lost reply gets the first answer
// again, never a second session or Pay Score order; after such an uncertain
// attempt it also retries a 409 (the first attempt may still be being
// served). Stop and cancel are retried too: repeating them is a no-op.
package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxAttempts = 5
	DefaultBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff  = 8 * time.Second
	DefaultTimeout     = 30 * time.Second
)

// maxBody caps an answer's body (a session view is a few KiB).
const maxBody = 4 << 20

// Options tunes a Client; the zero value is the defaults.
type Options struct {
	// HTTPClient sends the requests (default: a client with DefaultTimeout
	// per attempt).
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one call, the first included
	// (default DefaultMaxAttempts; 1 disables retries).
	MaxAttempts int
	// Backoff is the first retry's delay, doubled at each retry up to
	// MaxBackoff, with jitter (defaults DefaultBackoff, DefaultMaxBackoff).
	// A Retry-After header in seconds is honoured when longer.
	Backoff, MaxBackoff time.Duration
}

// Client calls one chargeflow service with one bearer token. It is safe for
// concurrent use.
type Client struct {
	base  string
	token string
	opts  Options
}

// New returns a client of the API at baseURL (e.g. "https://cf.example.cn",
// the service's CHARGEFLOW_PUBLIC_URL) using token, a token of the app role
// (CHARGEFLOW_APP_TOKENS).
func New(baseURL, token string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("chargeflow client: base URL %q: want http(s)://host[:port]", baseURL)
	}
	if token == "" {
		return nil, errors.New("chargeflow client: a token is required")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, opts: opts}, nil
}

// NewIdempotencyKey returns a fresh random key (32 hex characters). Make one
// per intended session — per tap on "start charging" — and keep it with the
// attempt until it has an answer.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateSession starts a session: chargeflow creates the Pay Score order and
// answers the session in state created, whose Package the mini-program
// passes to wx.openBusinessView. idempotencyKey is required (1–255
// printable ASCII characters, see NewIdempotencyKey): the same key with the
// same request returns the same session, whenever it is retried.
//
// Errors (*Error): CodeInvalid (a field), CodeNotFound (unknown charger or
// connector), CodeConflict (the charger is offline, the connector busy or
// faulted, or the key was used for another request), CodePaymentRefused
// (Pay Score refused: final for this key), CodeUnavailable (still failing
// after the retries: try again later with the same key).
func (c *Client) CreateSession(ctx context.Context, idempotencyKey string, req CreateSessionRequest) (*Session, error) {
	if idempotencyKey == "" {
		return nil, errors.New("chargeflow client: CreateSession needs an idempotency key (NewIdempotencyKey)")
	}
	return c.call(ctx, http.MethodPost, "/v1/sessions", idempotencyKey, req, http.StatusCreated)
}

// GetSession returns the session with its history. Errors: CodeNotFound.
func (c *Client) GetSession(ctx context.Context, id string) (*Session, error) {
	return c.call(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), "", nil, http.StatusOK)
}

// StopSession asks the charger to stop; the session is then stopping, and
// the bill and the payment follow by themselves. Stopping a stopping session
// is a no-op. Errors: CodeNotFound; CodeConflict before charging (cancel
// instead) or once it ended.
func (c *Client) StopSession(ctx context.Context, id string) (*Session, error) {
	return c.call(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/stop", "", nil, http.StatusAccepted)
}

// CancelSession cancels a session that has not started charging (the user
// backed out of the confirmation, say); its Pay Score order is cancelled.
// Cancelling again is a no-op. Errors: CodeNotFound; CodeConflict once
// charging started (stop instead).
func (c *Client) CancelSession(ctx context.Context, id string) (*Session, error) {
	return c.call(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/cancel", "", nil, http.StatusOK)
}

// call sends one request, with retries, and decodes a session from the
// answer with status want.
func (c *Client) call(ctx context.Context, method, path, key string, body any, want int) (*Session, error) {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("chargeflow client: encode request: %w", err)
		}
		payload = b
	}
	uncertain := false // an earlier attempt may have been carried out
	for attempt := 1; ; attempt++ {
		resp, respBody, err := c.send(ctx, method, path, key, payload)
		var retryAfter time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			err = fmt.Errorf("chargeflow client: %s %s: %w", method, path, err)
			uncertain = true
		case resp.StatusCode == want:
			var s Session
			if err := json.Unmarshal(respBody, &s); err != nil {
				return nil, fmt.Errorf("chargeflow client: decode %s %s: %w", method, path, err)
			}
			return &s, nil
		default:
			perr := problemOf(resp, respBody)
			if !c.retryable(resp, key != "" && uncertain) {
				return nil, perr
			}
			err = perr
			uncertain = uncertain || resp.StatusCode != http.StatusConflict
			if s, aerr := strconv.Atoi(resp.Header.Get("Retry-After")); aerr == nil && s > 0 {
				retryAfter = time.Duration(s) * time.Second
			}
		}
		if attempt >= c.opts.MaxAttempts {
			return nil, err
		}
		if werr := sleep(ctx, max(c.backoff(attempt), retryAfter)); werr != nil {
			return nil, werr
		}
	}
}

// retryable says whether an answer is worth another attempt. afterUncertain:
// a creation whose earlier attempt may still be being served (a 409 then is
// most likely "still being served").
func (c *Client) retryable(resp *http.Response, afterUncertain bool) bool {
	switch resp.StatusCode {
	case http.StatusServiceUnavailable:
		return true
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return !isProblem(resp.Header) // a gateway's, not chargeflow's payment_refused
	case http.StatusConflict:
		return afterUncertain
	}
	return false
}

func (c *Client) send(ctx context.Context, method, path, key string, payload []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json, application/problem+json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer: %w", err)
	}
	return resp, b, nil
}

// backoff is the delay before attempt+1: Backoff·2^(attempt-1), capped,
// with "equal jitter" (half fixed, half random) so retries of many clients
// spread out.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.Backoff << min(attempt-1, 20)
	if d <= 0 || d > c.opts.MaxBackoff {
		d = c.opts.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
