// Package webhooks sends the webhook events the store queues with each
// session transition (docs/contract.md §3 "Webhooks") to the mini-program's
// backend: one signed POST per event, in order per session, at least once,
// retried with back-off until the delivery window (24 h) has passed, then
// given up and left in the delivery log for an operator.
//
// The events themselves are made by the session engine and recorded by the
// commit of their transition (store.Commit.Webhooks); this package only
// claims them from the store (store.Webhooks, with leases, so several
// instances share the work and a crashed one's claims come back), sends
// them and records each attempt. The signature is the one client/webhook
// verifies (webhook.Sign).
package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/client/webhook"
	"github.com/chargeflow/chargeflow/store"
)

// Defaults of Config (docs/contract.md §3).
const (
	DefaultTimeout     = 10 * time.Second
	DefaultGiveUpAfter = 24 * time.Hour
	DefaultWorkers     = 4
	// DefaultRetention is how long delivered and given-up deliveries stay
	// in the log.
	DefaultRetention = 7 * 24 * time.Hour
)

// trimEvery is how often the log's retention is applied, and trimBatch how
// many deliveries one store call deletes at most.
const (
	trimEvery = time.Minute
	trimBatch = 500
)

// DefaultRetry is the back-off between attempts of one delivery; the last
// step repeats.
var DefaultRetry = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour}

// Observer receives what the sender does, for metrics. Nil is allowed.
type Observer interface {
	// Delivered: a 2xx answer, lag after the event was made (or retried).
	Delivered(lag time.Duration)
	// Retried: an attempt failed and the delivery will be tried again.
	Retried()
	// GaveUp: the delivery window passed without a 2xx.
	GaveUp()
}

// Config configures a Sender.
type Config struct {
	// URL receives the events; Secret signs them. Both required.
	URL, Secret string
	// InstanceID names this process (the lease owner).
	InstanceID string
	// Workers send concurrently (default DefaultWorkers), each one session's
	// queue at a time.
	Workers int
	// Timeout bounds one attempt (default DefaultTimeout).
	Timeout time.Duration
	// Lease is how long a claimed queue is ours (default Timeout + 20 s).
	Lease time.Duration
	// Retry is the back-off (default DefaultRetry); jittered by ±20 %.
	Retry []time.Duration
	// GiveUpAfter is the delivery window (default DefaultGiveUpAfter).
	GiveUpAfter time.Duration
	// IdleWait is the pause when nothing is due (default 500 ms).
	IdleWait time.Duration
	// Retention is how long the log keeps delivered and given-up
	// deliveries (default DefaultRetention); pending ones stay until done.
	Retention time.Duration
	// Client sends the requests (default: an http.Client that follows no
	// redirect: a 3xx is not a delivery).
	Client *http.Client
}

// Sender delivers queued events. Run owns its workers.
type Sender struct {
	cfg Config
	st  store.Webhooks
	log *slog.Logger
	obs Observer
	now func() time.Time
}

// New checks cfg and returns a sender. now may be nil (time.Now).
func New(cfg Config, st store.Webhooks, log *slog.Logger, obs Observer, now func() time.Time) (*Sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhooks: URL %q is not an http(s) URL", cfg.URL)
	}
	if cfg.Secret == "" {
		return nil, errors.New("webhooks: a secret is required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Lease <= 0 {
		cfg.Lease = cfg.Timeout + 20*time.Second
	}
	if len(cfg.Retry) == 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = DefaultGiveUpAfter
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.IdleWait <= 0 {
		cfg.IdleWait = 500 * time.Millisecond
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = "chargeflow"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Sender{cfg: cfg, st: st, log: log, obs: obs, now: now}, nil
}

// Run sends until ctx is done and returns when every worker has stopped.
// An attempt cut by shutdown is not recorded: its lease brings it back.
// First it takes back what a previous life of this instance had claimed
// (instance ids are unique among running processes, so those claims belong
// to a process that is gone), so that a restart after a crash resends at
// once instead of after the lease.
func (s *Sender) Run(ctx context.Context) error {
	if n, err := s.st.ReleaseDeliveryLeases(ctx, s.cfg.InstanceID+"/", s.now()); err != nil {
		s.log.Warn("release webhook claims of a previous run", "err", err)
	} else if n > 0 {
		s.log.Info("released the webhook claims of a previous run", "queues", n)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.trimLoop(ctx)
	}()
	for i := range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx, s.cfg.InstanceID+"/webhook-"+strconv.Itoa(i))
		}()
	}
	wg.Wait()
	return nil
}

func (s *Sender) work(ctx context.Context, owner string) {
	idle := time.NewTimer(0)
	defer idle.Stop()
	for ctx.Err() == nil {
		n, err := s.RunOnce(ctx, owner, 1)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("webhook claim", "err", err)
		}
		if n > 0 {
			continue
		}
		idle.Reset(s.cfg.IdleWait)
		select {
		case <-ctx.Done():
		case <-idle.C:
		}
	}
}

// RunOnce claims up to max due deliveries (each the head of its session's
// queue) as owner and sends them. It returns how many it claimed.
func (s *Sender) RunOnce(ctx context.Context, owner string, max int) (int, error) {
	ds, err := s.st.ClaimDeliveries(ctx, s.now(), owner, s.cfg.Lease, max)
	if err != nil {
		return 0, err
	}
	for _, d := range ds {
		s.deliver(ctx, d)
	}
	return len(ds), nil
}

// maxErrorText bounds the error kept with an attempt.
const maxErrorText = 300

func (s *Sender) deliver(ctx context.Context, d store.Delivery) {
	status, err := s.post(ctx, d)
	if ctx.Err() != nil {
		return // shutting down: the lease brings it back
	}
	now := s.now()
	log := s.log.With("session", d.SessionID, "delivery", d.ID, "type", d.Type, "try", d.Attempts+1)
	o := store.DeliveryOutcome{At: now, HTTPStatus: status}
	switch {
	case err == nil && status >= 200 && status < 300:
		o.Status = store.DeliveryDelivered
		if s.obs != nil {
			s.obs.Delivered(now.Sub(d.Since))
		}
	default:
		if err != nil {
			o.Error = err.Error()
		} else {
			o.Error = "HTTP " + strconv.Itoa(status) + " " + http.StatusText(status)
		}
		if len(o.Error) > maxErrorText {
			o.Error = o.Error[:maxErrorText]
		}
		if now.Sub(d.Since) >= s.cfg.GiveUpAfter {
			o.Status = store.DeliveryFailed
			log.Error("webhook given up", "err", o.Error, "since", d.Since)
			if s.obs != nil {
				s.obs.GaveUp()
			}
			break
		}
		o.Status, o.NextAt = store.DeliveryPending, now.Add(s.backoff(d.Attempts))
		log.Warn("webhook not delivered, will retry", "err", o.Error, "at", o.NextAt)
		if s.obs != nil {
			s.obs.Retried()
		}
	}
	if err := s.st.SettleDelivery(context.WithoutCancel(ctx), d, o); err != nil {
		log.Warn("record webhook attempt", "err", err)
	}
}

// post sends one attempt and returns the receiver's status.
func (s *Sender) post(ctx context.Context, d store.Delivery) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(d.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "chargeflow-webhooks/1")
	req.Header.Set(webhook.SignatureHeader, webhook.Sign(s.cfg.Secret, d.Body, s.now()))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// backoff is the wait after the attempts-th failed attempt (from 0).
func (s *Sender) backoff(attempts int) time.Duration {
	d := s.cfg.Retry[min(attempts, len(s.cfg.Retry)-1)]
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// trimLoop applies the log's retention every trimEvery (every instance
// does; deleting is safe to race).
func (s *Sender) trimLoop(ctx context.Context) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		if n, err := s.Trim(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("webhook log retention", "err", err)
		} else if n > 0 {
			s.log.Info("webhook log retention", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Trim deletes the deliveries done longer than Retention ago and returns
// how many.
func (s *Sender) Trim(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n, err := s.st.TrimDeliveries(ctx, s.now().Add(-s.cfg.Retention), trimBatch)
		total += n
		if err != nil || n < trimBatch {
			return total, err
		}
	}
	return total, nil
}
