package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
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

// engineRig is the real engine with the bolt store, the embedded broker,
// simulated chargers and the Pay Score sandbox over loopback HTTP.
type engineRig struct {
	b       *bench
	st      store.Store
	sb      *sandbox.Sandbox
	sbURL   string
	eng     *session.Engine
	fleet   *sim.Fleet
	watch   *feedWatch
	obs     *benchObserver
	tr      *http.Transport // every HTTP client of the rig, closed at the end
	closers []func()
}

func (r *engineRig) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *engineRig) onClose(f func()) { r.closers = append(r.closers, f) }

const benchSimPassword = "bench-charger-password"

func newEngineRig(ctx context.Context, b *bench) (_ *engineRig, err error) {
	r := &engineRig{b: b, watch: newFeedWatch(), obs: &benchObserver{}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	r.tr = &http.Transport{MaxIdleConnsPerHost: 4 * b.sessions, IdleConnTimeout: 30 * time.Second}
	r.onClose(r.tr.CloseIdleConnections)

	dir, err := os.MkdirTemp("", "chargeflow-bench-")
	if err != nil {
		return nil, err
	}
	r.onClose(func() { os.RemoveAll(dir) })
	st, err := boltstore.Open(dir, boltstore.Options{Logger: b.log})
	if err != nil {
		return nil, err
	}
	r.st = st
	r.onClose(func() { st.Close() })
	if err := st.PutTariff(ctx, money.DefaultTariff()); err != nil {
		return nil, err
	}

	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 200 * time.Millisecond, NotifyTimeout: 5 * time.Second,
		NotifyClient: &http.Client{Transport: r.tr}, Logger: b.log})
	if err != nil {
		return nil, err
	}
	r.sb = sb
	r.onClose(func() { sb.Close() })
	sbURL, stopSB, err := benchServer(sb.Handler())
	if err != nil {
		return nil, err
	}
	r.sbURL = sbURL
	r.onClose(stopSB)
	r.onClose(func() { sb.Close() }) // before its server: abandon notifications in flight

	payCfg, err := sb.ClientConfig(sbURL)
	if err != nil {
		return nil, err
	}
	// The notify endpoint is the engine's, as api serves it; the engine is
	// created below, and notifications only come after its first session.
	var eng atomic.Pointer[session.Engine]
	notifyURL, stopNotify, err := benchServer(payscore.NotifyHandler(payCfg.Verifier, func(ctx context.Context, n payscore.Notification) error {
		e := eng.Load()
		if e == nil {
			return errors.New("engine not running")
		}
		return e.HandleNotification(ctx, n)
	}, payscore.NotifyOptions{Logger: b.log}))
	if err != nil {
		return nil, err
	}
	r.onClose(stopNotify)
	payCfg.NotifyURL = notifyURL + "/notify/huifu/payscore"
	payCfg.HTTPClient = &http.Client{Transport: r.tr}
	payCfg.Logger = b.log
	pay, err := payscore.New(payCfg)
	if err != nil {
		return nil, err
	}

	broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0",
		Credentials: session.Credentials(st), Logger: b.brokerLog})
	if err != nil {
		return nil, err
	}
	mcfg := fsm.DefaultConfig()
	mcfg.PollInterval = 2 * time.Second // a lost notification costs the run 2 s, not 30
	e, err := session.New(session.Config{Machine: mcfg, InstanceID: b.runID}, st, pay, broker, b.log, r.obs, nil)
	if err != nil {
		return nil, err
	}
	r.eng = e
	eng.Store(e)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := broker.Start(runCtx, e.HandleCharger); err != nil {
		cancel()
		return nil, err
	}
	var wg sync.WaitGroup
	r.onClose(func() { cancel(); wg.Wait() }) // workers and the feed watcher, after the broker
	r.onClose(func() { broker.Close() })
	after, err := st.LatestChangeID(ctx)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { r.watch.run(runCtx, st, after) })
	wg.Go(func() { _ = e.Run(runCtx) })

	specs := make([]sim.ChargerSpec, b.sessions)
	for i := range specs {
		id := fmt.Sprintf("BENCH-%03d", i+1)
		if _, err := e.PutCharger(ctx, id, session.ChargerRequest{Connectors: []int{1}, TariffID: "default", Password: benchSimPassword}); err != nil {
			return nil, fmt.Errorf("register %s: %w", id, err)
		}
		specs[i] = sim.ChargerSpec{ID: id, Password: benchSimPassword, Connectors: []int{1}}
	}
	// A sample every 100 ms at 720 kW: 20 Wh, enough to cost a few fen in
	// every tariff period, so a session can stop after its first sample.
	fleet, err := sim.New(sim.Config{BrokerURL: broker.URL(), Chargers: specs, MeterInterval: 100 * time.Millisecond,
		PowerW: 720_000, TxnResend: 500 * time.Millisecond, Logger: b.log})
	if err != nil {
		return nil, err
	}
	r.fleet = fleet
	if err := fleet.Start(ctx); err != nil {
		fleet.Close()
		return nil, fmt.Errorf("simulated chargers: %w", err)
	}
	r.onClose(func() { fleet.Close() }) // before the broker stops
	deadline := time.Now().Add(20 * time.Second)
	for _, sp := range specs {
		for {
			c, err := st.GetCharger(ctx, sp.ID)
			if err == nil && c.Online {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("charger %s not online after 20s", sp.ID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return r, nil
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
	r, err := newEngineRig(ctx, b)
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
	rawN, rawT, err := concurrently(ctx, b.sessions, b.duration, func(ctx context.Context, w, i int) error {
		return rawSequence(ctx, raw, r.sb, fmt.Sprintf("raw%s%03d%06d", b.runID, w, i))
	})
	if err != nil {
		b.fail(name, fmt.Errorf("baseline: %w", err))
		return
	}

	chargers := r.fleet.Chargers()
	var mu sync.Mutex
	var confirmToCharging, stopToPaid, total []time.Duration
	n, elapsed, err := concurrently(ctx, b.sessions, b.duration, func(ctx context.Context, w, i int) error {
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
			"concurrent": float64(b.sessions)},
		Notes: fmt.Sprintf("%d concurrent; confirm→charging p50 %.0fms p95 %.0fms (engine's confirm→start sent p50 %.1fms p95 %.1fms); stop→paid p50 %.0fms; session p50 %.0fms",
			b.sessions, ms(p50), ms(p95), ms(e50), ms(e95), ms(percentile(stopToPaid, 0.5)), ms(percentile(total, 0.5)))})
}
