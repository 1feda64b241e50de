// Package session runs charging sessions. For every input — an API call, a
// charger message, a verified notification, a due timer, the result of an
// order query — it loads the session, applies the event through fsm, commits
// the new record with the effects it asks for in ONE store step, and then
// performs the effects from the outbox: MQTT commands, Pay Score calls,
// timers. Workers claim outbox entries with leases, so a crash loses nothing
// and two instances never perform the same entry at once; every effect is
// idempotent (deterministic command ids and req_seq_ids), so an entry
// performed twice after a lease expiry does no harm.
package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

// PayScore is the part of the Huifu client the engine uses (*payscore.Client).
type PayScore interface {
	CreateOrder(ctx context.Context, r payscore.CreateOrderRequest) (*payscore.CreateOrderResponse, error)
	QueryOrder(ctx context.Context, loc payscore.OrderLocator) (*payscore.Order, error)
	CancelOrder(ctx context.Context, r payscore.CancelOrderRequest) error
	CompleteOrder(ctx context.Context, r payscore.CompleteOrderRequest) error
	RegisterDeduction(ctx context.Context, r payscore.RegisterDeductionRequest) (*payscore.Registration, error)
	QueryDeduction(ctx context.Context, loc payscore.OrderLocator) (*payscore.DeductionStatus, error)
	Debit(ctx context.Context, r payscore.DebitRequest) (*payscore.DebitResult, error)
	Refund(ctx context.Context, r payscore.RefundRequest) (*payscore.RefundResult, error)
	QueryRefund(ctx context.Context, q payscore.RefundQuery) (*payscore.RefundStatus, error)
}

// Commander publishes to chargers (a charger.Link).
type Commander interface {
	SendCommand(ctx context.Context, chargerID string, c charger.Command) error
	AckTxn(ctx context.Context, chargerID, eventID string) error
}

// Observer receives what the engine does, for metrics. All methods must be
// cheap and safe for concurrent use. A nil Observer is allowed.
type Observer interface {
	Transition(from, to fsm.State, event fsm.EventType)
	Effect(kind fsm.EffectKind, outcome string) // outcome: done, retried, failed, skipped
	Anomaly()
	ConfirmToStart(d time.Duration)
}

// Config configures an Engine.
type Config struct {
	Machine fsm.Config
	// InstanceID names this process: the outbox lease owner, the log field.
	InstanceID string
	// Workers perform outbox entries concurrently (default 8: most of an
	// effect's time is waiting on the broker or on Huifu).
	Workers int
	// Lease is how long a claimed entry is ours (default 30 s); a crashed
	// worker's entries come back after it.
	Lease time.Duration
	// IdleWait is how long a worker sleeps when nothing is due (default
	// 200 ms); a commit wakes the workers at once.
	IdleWait time.Duration
	// EffectRetry is the back-off of a failed effect: doubled per try from
	// the first value up to the second (default 1 s … 5 min).
	EffectRetryMin, EffectRetryMax time.Duration
	// ServiceIntroduction is shown to the user in WeChat (≤ 20 chars).
	ServiceIntroduction string
	// GoodsDesc describes the debit.
	GoodsDesc string
	// ClientIP is sent in risk_check_data.
	ClientIP string
	// MaxAmountFen bounds the spending cap a session may ask for.
	MaxAmountFen int64
	// TxnDedupTTL keeps processed charger event ids (default 7 days).
	TxnDedupTTL time.Duration
	// IdempotencyTTL is how long an Idempotency-Key of a creation is
	// remembered (default DefaultIdempotencyTTL).
	IdempotencyTTL time.Duration
	// InFlightTimeout: see DefaultInFlightTimeout.
	InFlightTimeout time.Duration
	// ResendEvery: see DefaultResendEvery.
	ResendEvery time.Duration
	// Webhooks: every transition and refund outcome is also queued as a
	// webhook event with its commit (webhooks.go).
	Webhooks bool
	// ImmediateWindow bounds the commits whose effects this instance
	// performs at once, leased by the commit itself (immediate.go); 0 means
	// DefaultImmediateWindow, a negative value turns the immediate path off
	// (every effect waits for a worker's Claim).
	ImmediateWindow int
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.IdleWait <= 0 {
		c.IdleWait = 200 * time.Millisecond
	}
	if c.EffectRetryMin <= 0 {
		c.EffectRetryMin = time.Second
	}
	if c.EffectRetryMax <= 0 {
		c.EffectRetryMax = 5 * time.Minute
	}
	if c.ServiceIntroduction == "" {
		c.ServiceIntroduction = "电动汽车充电"
	}
	if c.GoodsDesc == "" {
		c.GoodsDesc = "充电费用"
	}
	if c.ClientIP == "" {
		c.ClientIP = "127.0.0.1"
	}
	if c.MaxAmountFen <= 0 {
		c.MaxAmountFen = 100_000 // 1000 yuan
	}
	if c.TxnDedupTTL <= 0 {
		c.TxnDedupTTL = 7 * 24 * time.Hour
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if c.InFlightTimeout <= 0 {
		c.InFlightTimeout = DefaultInFlightTimeout
	}
	if c.ResendEvery <= 0 {
		c.ResendEvery = DefaultResendEvery
	}
	if c.InstanceID == "" {
		c.InstanceID = "chargeflow"
	}
	if c.ImmediateWindow == 0 {
		c.ImmediateWindow = DefaultImmediateWindow
	}
}

// Engine runs sessions. It is safe for concurrent use; Run owns the workers.
type Engine struct {
	cfg     Config
	machine *fsm.Machine
	store   store.Store
	pay     PayScore
	cmd     Commander
	log     *slog.Logger
	obs     Observer
	now     func() time.Time

	kick chan struct{} // wakes the workers after a commit
	imm  immediate     // the immediate path (immediate.go)
	// histories spares changeData a read of the history (historycache.go).
	histories historyCache
	// acks holds txn acknowledgements to publish. They are sent by Run's
	// acker, never from the charger handler: a link's handler must not wait
	// on the same link's publishes. Best effort: a charger re-sends an
	// unacknowledged event and gets its ack then.
	acks chan txnAck

	heardMu sync.Mutex
	heard   map[string]time.Time // charger → last time LastHeardAt was written
}

// New returns an engine. now may be nil (time.Now).
func New(cfg Config, st store.Store, pay PayScore, cmd Commander, log *slog.Logger, obs Observer, now func() time.Time) (*Engine, error) {
	cfg.defaults()
	m, err := fsm.New(cfg.Machine)
	if err != nil {
		return nil, fmt.Errorf("session machine: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	e := &Engine{cfg: cfg, machine: m, store: st, pay: pay, cmd: cmd, log: log, obs: obs, now: now,
		kick: make(chan struct{}, 1), acks: make(chan txnAck, 4096), heard: map[string]time.Time{}}
	if cfg.ImmediateWindow > 0 {
		e.imm.slots = make(chan struct{}, cfg.ImmediateWindow)
	}
	return e, nil
}

// maxConflicts bounds the reload-and-reapply loop on version conflicts.
const maxConflicts = 50

// Apply loads session id, applies ev and commits the result with its
// effects. A version conflict (another process committed first) reloads and
// re-applies. It returns the result; a refused event is a *fsm.RefusedError.
func (e *Engine) Apply(ctx context.Context, id string, ev fsm.Event) (fsm.Result, error) {
	return e.apply(ctx, id, ev, source{})
}

// source is the raw input an event came from, kept with any anomaly the
// machine reports about it; check, when set, vets the loaded session before
// the event is applied (a charger may only speak of its own sessions).
// loaded, when set, is the session as the caller has just read it: the
// first attempt applies the event to it instead of reading it again (a
// stale one is refused by the commit's compare-and-set and reloaded).
type source struct {
	topic   string
	payload []byte
	check   func(fsm.Session) error
	loaded  *fsm.Session
}

func (e *Engine) apply(ctx context.Context, id string, ev fsm.Event, src source) (fsm.Result, error) {
	for range maxConflicts {
		var s fsm.Session
		var err error
		if src.loaded != nil && src.loaded.ID == id {
			s, src.loaded = *src.loaded, nil
		} else if s, err = e.store.GetSession(ctx, id); err != nil {
			return fsm.Result{}, err
		}
		if src.check != nil {
			if err := src.check(s); err != nil {
				return fsm.Result{}, err
			}
		}
		r, err := e.machine.Apply(s, ev)
		if err != nil {
			return fsm.Result{}, err
		}
		if !r.Changed {
			e.anomalies(ctx, s, ev, r.Anomalies, src)
			return r, e.durableEvent(ctx, id, ev) // a repeat of an event whose commit may not be durable yet
		}
		c := store.Commit{ExpectedVersion: s.Version, Session: r.Session, History: r.History, Effects: r.Effects,
			Publish: publishes(s, ev, r)}
		var history []fsm.HistoryEntry // the history once committed, when published
		if c.Publish {
			if history, err = e.historyAfter(ctx, s, r.History); err != nil { // historycache.go
				return fsm.Result{}, err
			}
			if c.ChangeData, err = e.changeData(r.Session, history); err != nil {
				return fsm.Result{}, err
			}
		}
		c.Webhooks = e.webhookEvents(s.ID, s.Version+1, ev, r, c.ChangeData)
		sl := e.reserve(r.Session, r.Effects, e.now()) // immediate.go
		if sl != nil {
			c.Lease = sl.lease
		}
		err = e.store.Commit(ctx, c)
		if err != nil {
			sl.release()
		}
		if errors.Is(err, store.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return fsm.Result{}, fmt.Errorf("commit %s: %w", ev.Type, err)
		}
		r.Session.Version = s.Version + 1
		e.histories.committed(s, r, history, c.Publish) // historycache.go
		e.committed(ctx, s, ev, r, src, sl == nil || len(sl.lease.Granted) == 0)
		sl.perform(r.Session)
		return r, e.durableEvent(ctx, id, ev) // session/durable.go
	}
	return fsm.Result{}, fmt.Errorf("apply %s to %s: %w after %d attempts", ev.Type, id, store.ErrVersionConflict, maxConflicts)
}

// meterPublishEvery is how often, at most, a charging session's live energy
// goes to the feed.
const meterPublishEvery = 15 * time.Second

// publishes says whether a change goes to the feed: every transition and
// every change an operator would want to see live, but not each timer
// re-arm, and a meter sample only when it crosses a meterPublishEvery
// boundary (stateless, so every instance decides the same).
func publishes(before fsm.Session, ev fsm.Event, r fsm.Result) bool {
	switch {
	case r.Transitioned() || len(r.Anomalies) > 0:
		return true
	case ev.Type == fsm.EvTimer:
		return false
	case ev.Type == fsm.EvMeter:
		return before.LastMeterAt.Truncate(meterPublishEvery) != r.Session.LastMeterAt.Truncate(meterPublishEvery)
	}
	return true
}

// changeData is the view published with the commit of s: history is the
// session's whole history once committed (historyAfter).
func (e *Engine) changeData(s fsm.Session, history []fsm.HistoryEntry) ([]byte, error) {
	s.Version++ // the version this commit creates
	return json.Marshal(NewView(s, history))
}

// committed logs, counts and wakes the workers after a commit (wake: the
// immediate path was granted none of its effects).
func (e *Engine) committed(ctx context.Context, before fsm.Session, ev fsm.Event, r fsm.Result, src source, wake bool) {
	for _, h := range r.History {
		e.log.Info("transition", "session", before.ID, "charger", before.ChargerID, "out_order_no", before.OutOrderNo,
			"from", h.From, "to", h.To, "event", h.Event, "by", h.By, "note", h.Note)
		if e.obs != nil {
			e.obs.Transition(h.From, h.To, h.Event)
		}
	}
	e.anomalies(ctx, r.Session, ev, r.Anomalies, src)
	if wake && len(r.Effects) > 0 {
		e.wake()
	}
}

// anomalies stores what the machine found suspicious, with the raw input.
func (e *Engine) anomalies(ctx context.Context, s fsm.Session, ev fsm.Event, reasons []string, src source) {
	for _, why := range reasons {
		e.anomaly(ctx, store.Anomaly{At: ev.At, SessionID: s.ID, ChargerID: s.ChargerID, Topic: src.topic, Payload: src.payload,
			Reason: string(ev.Type) + ": " + why})
	}
}

func (e *Engine) anomaly(ctx context.Context, a store.Anomaly) {
	if a.At.IsZero() {
		a.At = e.now()
	}
	e.log.Warn("anomaly", "session", a.SessionID, "charger", a.ChargerID, "reason", a.Reason)
	if e.obs != nil {
		e.obs.Anomaly()
	}
	if _, err := e.store.AddAnomaly(ctx, a); err != nil {
		e.log.Error("store anomaly", "err", err, "reason", a.Reason)
	}
}

func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run performs outbox entries until ctx is done, with cfg.Workers workers.
// It returns when every worker has stopped. First it takes back what a
// previous life of this instance had claimed: instance ids are unique among
// running processes, so claims under ours belong to a process that is gone
// (a crash), and waiting out their lease would only delay their sessions.
func (e *Engine) Run(ctx context.Context) error {
	if n, err := e.store.ReleaseLeases(ctx, e.cfg.InstanceID+"/", e.now()); err != nil {
		e.log.Warn("release leases of a previous run", "err", err)
	} else if n > 0 {
		e.log.Info("released the claims of a previous run", "tasks", n)
	}
	e.imm.open(ctx)
	defer e.imm.close() // waits for the immediate performs in flight
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.ackLoop(ctx)
	}()
	for i := range e.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.work(ctx, e.cfg.InstanceID+"/"+strconv.Itoa(i))
		}()
	}
	wg.Wait()
	return nil
}

type txnAck struct{ chargerID, eventID string }

func (e *Engine) ackLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-e.acks:
			actx, cancel := context.WithTimeout(ctx, commandTimeout)
			err := e.cmd.AckTxn(actx, a.chargerID, a.eventID)
			cancel()
			if err != nil && ctx.Err() == nil {
				e.log.Warn("txn ack", "charger", a.chargerID, "event_id", a.eventID, "err", err)
			}
		}
	}
}

func (e *Engine) work(ctx context.Context, owner string) {
	idle := time.NewTimer(0)
	defer idle.Stop()
	for ctx.Err() == nil {
		n, err := e.RunOnce(ctx, owner, 8)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("outbox claim", "err", err)
		}
		if n > 0 {
			continue
		}
		idle.Reset(e.cfg.IdleWait)
		select {
		case <-ctx.Done():
		case <-e.kick:
		case <-idle.C:
		}
	}
}

// RunOnce claims up to max due entries as owner and performs them. It
// returns how many it claimed.
func (e *Engine) RunOnce(ctx context.Context, owner string, max int) (int, error) {
	tasks, err := e.store.Claim(ctx, e.now(), owner, e.cfg.Lease, max)
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		e.performTask(ctx, t, nil)
	}
	return len(tasks), nil
}

// errRetry marks an error Classify calls retryable: an effect that could
// not be done now and must be tried again (a broker that did not take a
// command, a refund still processing).
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }
func (e errRetry) Unwrap() error { return e.err }

func retry(err error) error { return errRetry{err} }

// errDefer asks for the effect again at a given time; it is not a failure.
// note, when set, is what the outbox keeps as the task's last error;
// outcome, when set, is counted for the try that asked for the deferral.
type errDefer struct {
	until   time.Time
	note    string
	outcome string
}

func (e errDefer) Error() string {
	if e.note != "" {
		return e.note
	}
	return "deferred until " + e.until.Format(time.RFC3339Nano)
}

func deferUntil(t time.Time) error { return errDefer{until: t} }

// performTask performs a leased task — claimed by a worker, or granted by
// its commit (immediate.go) — and settles it: Complete, or Retry with a
// back-off or the deferral perform asked for. rec, when not nil, is the
// session as just committed (the immediate path), read instead of the store.
func (e *Engine) performTask(ctx context.Context, t store.Task, rec *fsm.Session) {
	// Each effect gets a bounded time, which ends well before its lease
	// (a commit's lease began before its commit); a context cancelled by
	// shutdown leaves the entry leased, and it comes back after the lease.
	budget := min(e.cfg.Lease*2/3, t.LeaseUntil.Sub(e.now())-e.cfg.Lease/3)
	if budget <= 0 {
		return // too little of the lease is left: it comes back after it
	}
	pctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	outcome, err := e.perform(withTask(pctx, t), t.Effect, rec)
	// t.Tries counts the entry's failed tries so far (the outbox's
	// retries, not a deduction or refund number).
	tries := t.Tries
	log := e.log.With("session", t.SessionID, "charger", t.Effect.ChargerID, "out_order_no", t.Effect.OutOrderNo,
		"effect", t.Effect.Kind, "task", t.ID, "try", tries+1)
	var d errDefer
	switch {
	case errors.As(err, &d):
		if d.outcome != "" && e.obs != nil {
			e.obs.Effect(t.Effect.Kind, d.outcome)
		}
		if rerr := e.store.Retry(ctx, t, d.until, d.Error()); rerr != nil {
			log.Warn("defer effect", "err", rerr)
		}
		return
	case err != nil && ctx.Err() != nil:
		return // shutting down: the lease brings it back
	case err != nil && Classify(err) != ClassFinal:
		backoff := e.backoff(t.Effect.Kind, tries)
		log.Warn("effect failed, will retry", "err", err, "class", Classify(err), "in", backoff)
		if e.obs != nil {
			e.obs.Effect(t.Effect.Kind, "retried")
		}
		if rerr := e.store.Retry(ctx, t, e.now().Add(backoff), err.Error()); rerr != nil {
			log.Warn("reschedule effect", "err", rerr)
		}
		return
	case err != nil:
		log.Error("effect failed for good", "err", err)
		e.anomaly(ctx, store.Anomaly{SessionID: t.SessionID, ChargerID: t.Effect.ChargerID,
			Reason: fmt.Sprintf("%s failed: %v", t.Effect.Kind, err)})
		outcome = "failed"
	}
	if e.obs != nil {
		e.obs.Effect(t.Effect.Kind, outcome)
	}
	if cerr := e.store.Complete(ctx, t); cerr != nil && !errors.Is(cerr, store.ErrLeaseLost) {
		log.Warn("complete effect", "err", cerr)
	}
}

// retryBackoff is the wait before the next try of an entry that failed
// `tries` times: doubled per try from EffectRetryMin up to EffectRetryMax.
func (e *Engine) retryBackoff(tries int) time.Duration {
	d := e.cfg.EffectRetryMin
	for i := 0; i < tries && d < e.cfg.EffectRetryMax; i++ {
		d *= 2
	}
	d = min(d, e.cfg.EffectRetryMax)
	// ±20% jitter so a fleet of retries does not arrive in step.
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}
