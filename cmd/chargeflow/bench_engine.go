package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// benchObserver keeps the engine's own confirm→start-sent durations.
type benchObserver struct {
	mu             sync.Mutex
	confirmToStart []time.Duration
}

func (o *benchObserver) Transition(fsm.State, fsm.State, fsm.EventType) {}
func (o *benchObserver) Effect(fsm.EffectKind, string)                  {}
func (o *benchObserver) Anomaly()                                       {}
func (o *benchObserver) ConfirmToStart(d time.Duration) {
	o.mu.Lock()
	o.confirmToStart = append(o.confirmToStart, d)
	o.mu.Unlock()
}

// feedWatch follows the store's change feed (what the SSE stream reads) and
// remembers when each session first reached each state, so that waiting for
// a state costs no polling of the store.
type feedWatch struct {
	mu      sync.Mutex
	reached map[string]map[fsm.State]time.Time
	wake    chan struct{} // closed and replaced after every batch
}

func newFeedWatch() *feedWatch {
	return &feedWatch{reached: map[string]map[fsm.State]time.Time{}, wake: make(chan struct{})}
}

func (w *feedWatch) run(ctx context.Context, st store.Store, after string) {
	for ctx.Err() == nil {
		changes, err := st.ReadChanges(ctx, after, 512, 100*time.Millisecond)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if len(changes) == 0 {
			continue
		}
		w.mu.Lock()
		for _, c := range changes {
			after = c.ID
			if c.Kind != store.ChangeSession {
				continue
			}
			var v struct {
				State fsm.State `json:"state"`
			}
			if json.Unmarshal(c.Data, &v) != nil || v.State == "" {
				continue
			}
			at := c.At
			if at.IsZero() {
				at = time.Now()
			}
			m := w.reached[c.SessionID]
			if m == nil {
				m = map[fsm.State]time.Time{}
				w.reached[c.SessionID] = m
			}
			if _, seen := m[v.State]; !seen {
				m[v.State] = at
			}
		}
		close(w.wake)
		w.wake = make(chan struct{})
		w.mu.Unlock()
	}
}

// wait returns the first of states that session id reached, and when.
func (w *feedWatch) wait(ctx context.Context, id string, states ...fsm.State) (fsm.State, time.Time, error) {
	for {
		w.mu.Lock()
		for _, s := range states {
			if at, ok := w.reached[id][s]; ok {
				w.mu.Unlock()
				return s, at, nil
			}
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			var seen []string
			for s := range w.reached[id] {
				seen = append(seen, string(s))
			}
			w.mu.Unlock()
			slices.Sort(seen)
			return "", time.Time{}, fmt.Errorf("session %s: no %v (seen %v): %w", id, states, seen, ctx.Err())
		case <-wake:
		}
	}
}

func (w *feedWatch) forget(id string) {
	w.mu.Lock()
	delete(w.reached, id)
	w.mu.Unlock()
}

// benchServer serves h on a loopback port until the returned stop is called.
func benchServer(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close(); <-done }, nil
}

// sessionTimes are the durations of one benchmarked session.
type sessionTimes struct {
	confirmToCharging time.Duration // the user confirms → the charger's started is stored
	stopToPaid        time.Duration // the user stops → paid is stored
	total             time.Duration // create called → paid stored
}

// session runs one session on connector 1 of c: plug, create, the user
// confirms at once, wait for charging, charge until the first meter sample,
// stop, wait until paid, unplug.
func (r *engineRig) session(ctx context.Context, c *sim.Charger, user string) (sessionTimes, error) {
	var t sessionTimes
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.Plug(1); err != nil {
		return t, err
	}
	defer c.Unplug(1)
	begin := time.Now()
	id := session.NewID(begin)
	defer r.watch.forget(id)
	s, err := r.eng.Create(ctx, id, session.CreateRequest{ChargerID: c.ID(), Connector: 1, OpenID: user, MaxAmountFen: 5000})
	if err != nil {
		return t, fmt.Errorf("create: %w", err)
	}
	confirmed := time.Now()
	if err := r.sb.Confirm(s.OutOrderNo); err != nil {
		return t, fmt.Errorf("confirm: %w", err)
	}
	state, startedAt, err := r.watch.wait(ctx, id, fsm.Charging, fsm.Cancelled)
	if err != nil {
		return t, err
	}
	if state != fsm.Charging {
		return t, fmt.Errorf("session %s %s before charging", id, state)
	}
	for {
		si, ok := c.Session(1)
		if !ok || c.Register(1) > si.StartWh {
			break
		}
		select {
		case <-ctx.Done():
			return t, fmt.Errorf("session %s: no energy: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	stopped := time.Now()
	if _, err := r.eng.Stop(ctx, id, fsm.ByApp); err != nil {
		return t, fmt.Errorf("stop: %w", err)
	}
	state, paidAt, err := r.watch.wait(ctx, id, fsm.Paid, fsm.Cancelled, fsm.Refunded)
	if err != nil {
		return t, err
	}
	if state != fsm.Paid {
		return t, fmt.Errorf("session %s ended %s, not paid", id, state)
	}
	return sessionTimes{confirmToCharging: startedAt.Sub(confirmed), stopToPaid: paidAt.Sub(stopped), total: paidAt.Sub(begin)}, nil
}

// rawSequence is the Pay Score request sequence of one paid session, without
// the engine: create, confirm (the user), complete, register, debit, query.
func rawSequence(ctx context.Context, c *payscore.Client, sb *sandbox.Sandbox, id string) error {
	now := time.Now()
	created, err := c.CreateOrder(ctx, payscore.CreateOrderRequest{ReqSeqID: payscore.ReqSeqID(id, payscore.StepCreate, 1, payscore.FormatDate(now)), ReqDate: now,
		ServiceIntroduction: "电动汽车充电", RiskFund: payscore.RiskFund{Amount: 5000}, TimeRange: payscore.TimeRange{Start: now.Add(-time.Hour)}, OpenID: "bench-raw"})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := sb.Confirm(created.OutOrderNo); err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if err := c.CompleteOrder(ctx, payscore.CompleteOrderRequest{OutOrderNo: created.OutOrderNo, Amount: 3,
		TimeRange: payscore.TimeRange{End: now.Add(-time.Minute)}}); err != nil {
		return fmt.Errorf("complete: %w", err)
	}
	reg, err := c.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{ReqSeqID: payscore.ReqSeqID(id, payscore.StepRegister, 1, payscore.FormatDate(now)),
		ReqDate: now, Order: payscore.OrderLocator{OutOrderNo: created.OutOrderNo}})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if _, err := c.Debit(ctx, payscore.DebitRequest{ReqSeqID: payscore.ReqSeqID(id, payscore.StepDebit, 1, payscore.FormatDate(now)), ReqDate: now,
		DeductReqSeqID: reg.ReqSeqID, OutTradeNo: reg.OutTradeNo, GoodsDesc: "充电费用", ClientIP: "127.0.0.1"}); err != nil {
		return fmt.Errorf("debit: %w", err)
	}
	o, err := c.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: created.OutOrderNo})
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	if !o.Paid() {
		return fmt.Errorf("order %s not paid: %s/%s", created.OutOrderNo, o.State, o.StateDescription)
	}
	return nil
}

// concurrently runs work on n goroutines, each looping until d has passed
// (at least once), and returns how many calls succeeded and the time until
// the last one ended. The first error stops everyone.
func concurrently(ctx context.Context, n int, d time.Duration, work func(ctx context.Context, worker, i int) error) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var once sync.Once
	var first error
	start := time.Now()
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := 0; i == 0 || time.Since(start) < d; i++ {
				if ctx.Err() != nil {
					return
				}
				if err := work(ctx, w, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return done.Load(), time.Since(start), first
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchEngine: whole sessions through the real engine, N at a time, beside
// the raw Pay Score request sequence of a paid session against the same
// sandbox, N at a time.
func benchEngine(ctx context.Context, b *bench) {
	const name = "engine.sessions"
	conc := b.sessionsOr(8)
	r, err := newEngineRig(ctx, b, rigOptions{chargers: conc, connectors: 1, meterInterval: 100 * time.Millisecond})
	if err != nil {
		b.fail(name, fmt.Errorf("set-up: %w", err))
		return
	}
	defer r.close()

	// Baseline first, with its own client and a notify endpoint that only
	// verifies and acknowledges.
	cfg, err := r.sb.ClientConfig(r.sbURL)
	if err != nil {
		b.fail(name, err)
		return
	}
	notifyURL, stopNotify, err := benchServer(payscore.NotifyHandler(cfg.Verifier,
		func(context.Context, payscore.Notification) error { return nil }, payscore.NotifyOptions{}))
	if err != nil {
		b.fail(name, err)
		return
	}
	defer stopNotify()
	cfg.NotifyURL, cfg.HTTPClient, cfg.Logger = notifyURL, &http.Client{Transport: r.tr}, b.log
	raw, err := payscore.New(cfg)
	if err != nil {
		b.fail(name, err)
		return
	}
	rawN, rawT, err := concurrently(ctx, conc, b.duration, func(ctx context.Context, w, i int) error {
		return rawSequence(ctx, raw, r.sb, fmt.Sprintf("raw%s%03d%06d", b.runID, w, i))
	})
	if err != nil {
		b.fail(name, fmt.Errorf("baseline: %w", err))
		return
	}

	chargers := r.fleet.Chargers()
	var mu sync.Mutex
	var confirmToCharging, stopToPaid, total []time.Duration
	n, elapsed, err := concurrently(ctx, conc, b.duration, func(ctx context.Context, w, i int) error {
		t, err := r.session(ctx, chargers[w], fmt.Sprintf("bench-user-%d", w))
		if err == nil {
			mu.Lock()
			confirmToCharging = append(confirmToCharging, t.confirmToCharging)
			stopToPaid = append(stopToPaid, t.stopToPaid)
			total = append(total, t.total)
			mu.Unlock()
		}
		return err
	})
	if err != nil {
		b.fail(name, err)
		return
	}
	r.obs.mu.Lock()
	engineSide := slices.Clone(r.obs.confirmToStart)
	r.obs.mu.Unlock()
	p50, p95 := percentile(confirmToCharging, 0.50), percentile(confirmToCharging, 0.95)
	e50, e95 := percentile(engineSide, 0.50), percentile(engineSide, 0.95)
	b.emit(benchRow{Scenario: name, Figure: float64(n) / elapsed.Seconds(), Unit: "sessions/s create→paid", Ops: n,
		Baseline: float64(rawN) / rawT.Seconds(), BaselineUnit: "raw create→paid sequences/s", BaselineOps: rawN,
		Extra: map[string]float64{"confirm_to_charging_p50_ms": ms(p50), "confirm_to_charging_p95_ms": ms(p95),
			"engine_confirm_to_start_sent_p50_ms": ms(e50), "engine_confirm_to_start_sent_p95_ms": ms(e95),
			"stop_to_paid_p50_ms": ms(percentile(stopToPaid, 0.5)), "session_p50_ms": ms(percentile(total, 0.5)),
			"concurrent": float64(conc)},
		Notes: fmt.Sprintf("%d concurrent; confirm→charging p50 %.0fms p95 %.0fms (engine's confirm→start sent p50 %.1fms p95 %.1fms); stop→paid p50 %.0fms; session p50 %.0fms",
			conc, ms(p50), ms(p95), ms(e50), ms(e95), ms(percentile(stopToPaid, 0.5)), ms(percentile(total, 0.5)))})
}
