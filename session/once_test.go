package session_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// TestEachEffectPerformedOnce runs two engines (instances "a" and "b") on
// ONE store — one bbolt store shared in-process, and one Redis — with their
// claim workers running, the embedded broker, simulated chargers and the
// Pay Score sandbox over real HTTP. Charger messages and notifications are
// split between the live instances by id, as a share group would. Many
// sessions go through to paid; a recording wrapper around the broker counts
// every publish per cmd_id, and one around the Pay Score client every call
// per order: each effect is performed exactly once, by one path or the
// other. The re-send of unanswered commands (session/resend.go) is pushed
// out of the run (ResendEvery an hour), so every publish of a cmd_id is a
// performance of its effect and must happen once.
//
// Then instance a dies right after a commit that leased it a start, before
// performing it (the immediate path's test hook stops it there): b's claim
// path performs the start once a's short lease has run out, exactly once,
// and the session is paid.
func TestEachEffectPerformedOnce(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		st := boltStore(t)
		performedOnce(t, func(string) store.Store { return st })
	})
	t.Run("redis", func(t *testing.T) {
		url, ns := testenv.Redis(t), testenv.Namespace(t)
		performedOnce(t, func(string) store.Store {
			rs, err := redisstore.New(bg, url, redisstore.Options{Prefix: ns})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rs.Close() })
			return rs
		})
	})
}

// onceRig is the shared world of the two instances.
type onceRig struct {
	t     *testing.T
	sb    *sandbox.Sandbox
	pay   *payCounter
	cmds  *cmdCounter
	fleet *sim.Fleet

	mu    sync.Mutex
	alive map[string]*session.Engine // instance → engine, while it runs
	names []string
	// prefer, when set and alive, takes every message and notification.
	prefer string
}

// route picks the live instance that handles key (a charger id, an order).
func (r *onceRig) route(key string) *session.Engine {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.alive[r.prefer]; ok {
		return e
	}
	var live []*session.Engine
	for _, n := range r.names {
		if e, ok := r.alive[n]; ok {
			live = append(live, e)
		}
	}
	if len(live) == 0 {
		return nil
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return live[int(h.Sum32())%len(live)]
}

func performedOnce(t *testing.T, openStore func(instance string) store.Store) {
	ctx := context.Background()
	r := &onceRig{t: t, alive: map[string]*session.Engine{}, names: []string{"a", "b"}}

	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { sb.Close(); sbSrv.Close() })
	payCfg, err := sb.ClientConfig(sbSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	notifySrv := httptest.NewServer(payscore.NotifyHandler(payCfg.Verifier, func(ctx context.Context, n payscore.Notification) error {
		e := r.route(n.OutOrderNo)
		if e == nil {
			return fmt.Errorf("no instance running")
		}
		return e.HandleNotification(ctx, n)
	}, payscore.NotifyOptions{}))
	t.Cleanup(notifySrv.Close)
	payCfg.NotifyURL = notifySrv.URL
	client, err := payscore.New(payCfg)
	if err != nil {
		t.Fatal(err)
	}
	r.sb, r.pay, r.cmds = sb, &payCounter{PayScore: client}, &cmdCounter{}

	shared := openStore("setup")
	broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{
		ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Credentials: registry{shared}})
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.Start(ctx, func(ctx context.Context, in charger.Inbound) error {
		e := r.route(in.ChargerID)
		if e == nil {
			return fmt.Errorf("no instance running")
		}
		return e.HandleCharger(ctx, in)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Close() })

	mcfg := fsm.DefaultConfig()
	mcfg.PollInterval = 300 * time.Millisecond
	mcfg.DebitRetry = []time.Duration{200 * time.Millisecond}
	var grants atomic.Int64 // tasks granted to the immediate path
	var victim struct {
		sync.Mutex
		armed bool
		task  store.Task
		stop  func()
	}
	stops := map[string]func(){}
	start := func(name string) {
		st := openStore(name)
		eng, err := session.New(session.Config{Machine: mcfg, InstanceID: name, Workers: 2, IdleWait: 20 * time.Millisecond,
			Lease: 3 * time.Second, ResendEvery: time.Hour}, st, r.pay, r.cmds.as(name, broker), nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		die := func() {
			r.mu.Lock()
			delete(r.alive, name)
			r.mu.Unlock()
			cancel()
		}
		session.SetAfterLeasedCommit(eng, func(granted []store.Task) bool {
			grants.Add(int64(len(granted)))
			if name != "a" {
				return true
			}
			victim.Lock()
			defer victim.Unlock()
			for _, g := range granted {
				if victim.armed && g.Effect.Kind == fsm.EffSendStart {
					victim.armed, victim.task = false, g
					die() // a dies between its commit and the publish
					return false
				}
			}
			return true
		})
		go func() { defer close(done); _ = eng.Run(runCtx) }()
		stops[name] = func() { die(); <-done }
		r.mu.Lock()
		r.alive[name] = eng
		r.mu.Unlock()
	}
	start("a")
	start("b")
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
	})

	const n = 12
	eng := r.route("setup")
	if err := eng.PutTariff(ctx, money.DefaultTariff()); err != nil {
		t.Fatal(err)
	}
	specs := make([]sim.ChargerSpec, n+1)
	for i := range specs {
		specs[i] = sim.ChargerSpec{ID: fmt.Sprintf("ONCE-%d", i), Password: fmt.Sprintf("pw-%d-secret", i), Connectors: []int{1}}
		if _, err := eng.PutCharger(ctx, specs[i].ID, session.ChargerRequest{Connectors: []int{1}, TariffID: "default", Password: specs[i].Password}); err != nil {
			t.Fatal(err)
		}
	}
	// Meter samples at a pace a loaded machine keeps up with: each is a
	// commit of its session, and a stop retried behind a stream of them
	// gives up after the engine's bound on conflicts.
	r.fleet, err = sim.New(sim.Config{BrokerURL: broker.URL(), Chargers: specs, MeterInterval: 500 * time.Millisecond,
		PowerW: 360_000, TxnResend: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.fleet.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.fleet.Close() })
	for _, sp := range specs {
		r.waitFor(sp.ID+" online", func() bool { c, err := shared.GetCharger(ctx, sp.ID); return err == nil && c.Online })
	}

	// Many sessions at once, created and stopped through either instance.
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = r.session(shared, specs[i].ID, []string{"a", "b"}[i%2], []string{"b", "a"}[i%2])
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if grants.Load() == 0 {
		t.Fatal("the immediate path performed nothing: the test shows nothing")
	}
	for _, id := range ids {
		r.once(shared, id)
	}

	// a takes every message and notification until it dies; it dies right
	// after the commit that leased it the start, before publishing it.
	victim.Lock()
	victim.armed = true
	victim.Unlock()
	r.mu.Lock()
	r.prefer = "a"
	r.mu.Unlock()
	id := r.session(shared, specs[n].ID, "a", "b")
	victim.Lock()
	task := victim.task
	victim.Unlock()
	if task.SessionID != id || task.Owner != "a/now" {
		t.Fatalf("a was granted %+v, want the start of %s", task, id)
	}
	if by := r.cmds.by(id + "-start"); len(by) != 1 || by[0] != "b" {
		t.Fatalf("start of %s published by %v, want once by b", id, by)
	}
	r.once(shared, id)
}

// session runs one session on charger cp to paid: created through instance
// create, stopped through instance stop, and returns its id.
func (r *onceRig) session(st store.Store, cp, create, stop string) string {
	t, ctx := r.t, context.Background()
	c := r.fleet.Charger(cp)
	if err := c.Plug(1); err != nil {
		t.Error(err)
		return ""
	}
	eng := r.engine(create)
	s, err := eng.Create(ctx, session.NewID(time.Now()), session.CreateRequest{ChargerID: cp, Connector: 1, OpenID: "o-" + cp, MaxAmountFen: 5000})
	if err != nil {
		t.Error(err)
		return ""
	}
	if err := r.sb.Confirm(s.OutOrderNo); err != nil {
		t.Error(err)
		return s.ID
	}
	state := func(want fsm.State) func() bool {
		return func() bool { got, err := st.GetSession(ctx, s.ID); return err == nil && got.State == want }
	}
	if !r.waitFor(s.ID+" charging", state(fsm.Charging)) {
		return s.ID
	}
	if !r.waitFor(s.ID+" energy", func() bool { si, ok := c.Session(1); return ok && c.Register(1) > si.StartWh+100 }) {
		return s.ID
	}
	if e := r.engine(stop); e == nil {
		t.Errorf("instance %s is not running", stop)
	} else if _, err := e.Stop(ctx, s.ID, fsm.ByApp); err != nil {
		t.Error(err)
	}
	r.waitFor(s.ID+" paid", state(fsm.Paid))
	return s.ID
}

func (r *onceRig) engine(name string) *session.Engine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alive[name]
}

// once checks that every effect of session id was performed exactly once.
func (r *onceRig) once(st store.Store, id string) {
	t := r.t
	t.Helper()
	s, err := st.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != fsm.Paid {
		t.Errorf("session %s is %s", id, s.State)
	}
	starts, stops := r.cmds.sessionSends(id)
	if starts[id+"-start"] != 1 || len(starts) != 1 {
		t.Errorf("session %s: start publishes %v, want one of %s-start", id, starts, id)
	}
	if len(stops) == 0 {
		t.Errorf("session %s: no stop published", id)
	}
	for cmd, k := range stops {
		if k != 1 {
			t.Errorf("session %s: %s published %d times", id, cmd, k)
		}
	}
	calls, debits := r.pay.of(s.OutOrderNo), r.pay.of(s.Payment.OutTradeNo)["debit"]
	if calls["complete"] != 1 || calls["register"] != 1 || debits != 1 || calls["cancel"] != 0 {
		t.Errorf("session %s: Pay Score calls %v and %d debits, want one complete, one registration, one debit", id, calls, debits)
	}
	o, _ := r.sb.Order(s.OutOrderNo)
	if o.Completes != 1 || len(o.Payments) != 1 || len(o.Registrations) != 1 || o.Total != s.AmountFen {
		t.Errorf("session %s: order %+v, amount %d", id, o, s.AmountFen)
	}
}

// waitFor waits, generously, for cond; false (and the test failed) if it
// never held.
func (r *onceRig) waitFor(what string, cond func() bool) bool {
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Errorf("timed out waiting for %s", what)
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// registry gives the embedded broker the registry's password hashes.
type registry struct{ st store.Store }

func (c registry) ChargerPasswordHash(ctx context.Context, id string) (string, bool, error) {
	ch, err := c.st.GetCharger(ctx, id)
	if err != nil {
		return "", false, nil
	}
	return ch.PasswordHash, ch.PasswordHash != "", nil
}

// cmdCounter records every command published through the real broker,
// with the instance that published it.
type cmdCounter struct {
	mu   sync.Mutex
	sent []sentCmd
}

type sentCmd struct {
	by string
	c  charger.Command
}

// as is instance name's Commander: the broker, recorded.
func (k *cmdCounter) as(name string, inner session.Commander) session.Commander {
	return countingCommander{k: k, name: name, inner: inner}
}

// by lists the instances that published cmdID, one entry per publish.
func (k *cmdCounter) by(cmdID string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, s := range k.sent {
		if s.c.CmdID == cmdID {
			out = append(out, s.by)
		}
	}
	return out
}

// sessionSends counts the publishes per cmd_id of session id's starts and stops.
func (k *cmdCounter) sessionSends(id string) (starts, stops map[string]int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	starts, stops = map[string]int{}, map[string]int{}
	for _, s := range k.sent {
		switch {
		case s.c.SessionID != id:
		case s.c.Type == charger.CmdStart:
			starts[s.c.CmdID]++
		case s.c.Type == charger.CmdStop:
			stops[s.c.CmdID]++
		}
	}
	return starts, stops
}

type countingCommander struct {
	k     *cmdCounter
	name  string
	inner session.Commander
}

func (c countingCommander) SendCommand(ctx context.Context, chargerID string, cmd charger.Command) error {
	err := c.inner.SendCommand(ctx, chargerID, cmd)
	if err == nil {
		c.k.mu.Lock()
		c.k.sent = append(c.k.sent, sentCmd{by: c.name, c: cmd})
		c.k.mu.Unlock()
	}
	return err
}

func (c countingCommander) AckTxn(ctx context.Context, chargerID, eventID string) error {
	return c.inner.AckTxn(ctx, chargerID, eventID)
}

// payCounter counts the Pay Score calls that act on an order, per order (a
// debit per deduction's out_trade_no), forwarding every call to the real
// client.
type payCounter struct {
	session.PayScore
	mu    sync.Mutex
	calls map[string]map[string]int // out_order_no → call → count
}

func (p *payCounter) count(order, call string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls == nil {
		p.calls = map[string]map[string]int{}
	}
	if p.calls[order] == nil {
		p.calls[order] = map[string]int{}
	}
	p.calls[order][call]++
}

func (p *payCounter) of(order string) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.calls[order] {
		out[k] = v
	}
	return out
}

func (p *payCounter) CancelOrder(ctx context.Context, r payscore.CancelOrderRequest) error {
	p.count(r.Order.OutOrderNo, "cancel")
	return p.PayScore.CancelOrder(ctx, r)
}

func (p *payCounter) CompleteOrder(ctx context.Context, r payscore.CompleteOrderRequest) error {
	p.count(r.OutOrderNo, "complete")
	return p.PayScore.CompleteOrder(ctx, r)
}

func (p *payCounter) RegisterDeduction(ctx context.Context, r payscore.RegisterDeductionRequest) (*payscore.Registration, error) {
	p.count(r.Order.OutOrderNo, "register")
	return p.PayScore.RegisterDeduction(ctx, r)
}

func (p *payCounter) Debit(ctx context.Context, r payscore.DebitRequest) (*payscore.DebitResult, error) {
	p.count(r.OutTradeNo, "debit")
	return p.PayScore.Debit(ctx, r)
}
