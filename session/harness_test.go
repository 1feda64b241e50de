package session_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

var bg = context.Background()

// merchantKey is generated once per test binary: RSA-2048 generation is
// slow under -race, and every harness's sandbox trusts it.
var merchantKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// harness is one engine on real components: a store (bolt in a temp dir or
// a private Redis), the Pay Score sandbox over real HTTP with its
// notifications delivered to the engine, and a recording Commander for the
// charger side. Workers do not run by themselves: drain performs what is due.
type harness struct {
	t   testing.TB
	st  store.Store
	sb  *sandbox.Sandbox
	pay *payscore.Client
	eng *session.Engine
	cmd *recorder
	obs *observer
	// ahead moves the engine's clock (nanoseconds ahead of the wall clock).
	ahead atomic.Int64
}

func boltStore(t testing.TB) store.Store {
	t.Helper()
	bs, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	return bs
}

func redisStore(t testing.TB) store.Store {
	t.Helper()
	rs, err := redisstore.New(bg, testenv.Redis(t), redisstore.Options{Prefix: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

// stores runs fn on bolt and on Redis.
func stores(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("bolt", func(t *testing.T) { fn(t, boltStore(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, redisStore(t)) })
}

func newHarness(t testing.TB, st store.Store, tune ...func(*session.Config)) *harness {
	t.Helper()
	keys := payscoretest.HuifuKeys(t)
	mk, err := merchantKey()
	if err != nil {
		t.Fatal(err)
	}
	mpub, err := payscore.EncodePublicKey(&mk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st, cmd: &recorder{}, obs: &observer{}}
	// The engine and the sandbox share one clock, which a test may move on.
	now := func() time.Time { return time.Now().Add(time.Duration(h.ahead.Load())) }
	ntr := &http.Transport{}
	t.Cleanup(ntr.CloseIdleConnections)
	sb, err := sandbox.New(sandbox.Options{HuifuPrivateKey: keys.PrivateKey, MerchantPublicKey: mpub, Now: now,
		NotifyClient: &http.Client{Transport: ntr}, NotifyBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	huifu := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { sb.Close(); huifu.Close() })

	h.sb = sb
	var engMu sync.Mutex
	notify := httptest.NewServer(payscore.NotifyHandler(keys.Verifier, func(ctx context.Context, n payscore.Notification) error {
		engMu.Lock()
		eng := h.eng
		engMu.Unlock()
		return eng.HandleNotification(ctx, n)
	}, payscore.NotifyOptions{}))
	t.Cleanup(notify.Close)

	ptr := &http.Transport{}
	t.Cleanup(ptr.CloseIdleConnections)
	pay, err := payscore.New(payscore.Config{BaseURL: huifu.URL, SysID: "6666000100000000", ProductID: "PAYUN",
		HuifuID: "6666000100000001", ServiceID: "sandbox-service", NotifyURL: notify.URL,
		Signer: payscore.NewRSASigner(mk), Verifier: keys.Verifier, HTTPClient: &http.Client{Transport: ptr},
		MaxSends: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A failed effect is tried again at once, so drain sees it settle.
	cfg := session.Config{Machine: fsm.DefaultConfig(), InstanceID: "test", Workers: 1,
		EffectRetryMin: time.Millisecond, EffectRetryMax: time.Millisecond}
	for _, f := range tune {
		f(&cfg)
	}
	eng, err := session.New(cfg, st, pay, h.cmd, nil, h.obs, now)
	if err != nil {
		t.Fatal(err)
	}
	engMu.Lock()
	h.eng, h.pay = eng, pay
	engMu.Unlock()

	if err := eng.PutTariff(bg, money.Tariff{ID: "default", Periods: []money.Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 100, ServiceFenPerKWh: 50}}}); err != nil {
		t.Fatal(err)
	}
	return h
}

// charger registers charger id (connector 1 and 2) and marks it online.
func (h *harness) charger(id string) {
	h.t.Helper()
	if _, err := h.eng.PutCharger(bg, id, session.ChargerRequest{Connectors: []int{1, 2}, TariffID: "default"}); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.st.UpdateCharger(bg, id, func(c *store.Charger) ([]byte, error) {
		c.Online = true
		return nil, nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

// drain performs every outbox entry that is due, until none is left.
func (h *harness) drain() {
	h.t.Helper()
	idle := 0
	for range 200 {
		n, err := h.eng.RunOnce(bg, "test/0", 16)
		if err != nil {
			h.t.Fatal(err)
		}
		if n > 0 {
			idle = 0
			continue
		}
		// A retried entry is due again a millisecond later: look twice.
		if idle++; idle == 3 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatal("the outbox does not drain")
}

func (h *harness) get(id string) fsm.Session {
	h.t.Helper()
	s, _, err := h.eng.Get(bg, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) apply(id string, ev fsm.Event) fsm.Result {
	h.t.Helper()
	if ev.At.IsZero() {
		ev.At = h.now()
	}
	r, err := h.eng.Apply(bg, id, ev)
	if err != nil {
		h.t.Fatalf("apply %s: %v", ev.Type, err)
	}
	return r
}

// until waits, without performing anything, for session id to be in want
// (a notification arrives on its own goroutine).
func (h *harness) until(id string, want fsm.State) fsm.Session {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := h.get(id)
		if s.State == want {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("session %s is %s, want %s", id, s.State, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState drains until session id is in want (notifications arrive on
// their own goroutine).
func (h *harness) waitState(id string, want fsm.State) fsm.Session {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.drain()
		s := h.get(id)
		if s.State == want {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("session %s is %s, want %s", id, s.State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// created opens a session on a new charger cp.
func (h *harness) created(cp string) fsm.Session {
	h.t.Helper()
	h.charger(cp)
	s, err := h.eng.Create(bg, session.NewID(h.now()), session.CreateRequest{ChargerID: cp, Connector: 1, OpenID: "o-" + cp, MaxAmountFen: 5000})
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// confirmed: the user confirmed in WeChat (the sandbox notifies the engine).
func (h *harness) confirmed(cp string) fsm.Session {
	h.t.Helper()
	s := h.created(cp)
	if err := h.sb.Confirm(s.OutOrderNo); err != nil {
		h.t.Fatal(err)
	}
	return h.waitState(s.ID, fsm.UserConfirmed)
}

// charging: the charger started at register 1000 Wh ten seconds ago.
func (h *harness) charging(cp string) fsm.Session {
	h.t.Helper()
	s := h.confirmed(cp)
	h.drain()
	h.apply(s.ID, fsm.Event{Type: fsm.EvStarted, By: fsm.ByCharger, ChargerTime: h.now(), MeterWh: 1000})
	return h.get(s.ID)
}

// ended: the charger ended at 3000 Wh (2 kWh, 3.00 yuan); the clock then
// moves on a few seconds, so the end_time (at least a second after the
// start) is in the past for complete.
func (h *harness) ended(cp string) fsm.Session {
	h.t.Helper()
	s := h.charging(cp)
	h.apply(s.ID, fsm.Event{Type: fsm.EvEnded, By: fsm.ByCharger, ChargerTime: h.now().Add(-2 * time.Second), MeterWh: 3000, Reason: "local"})
	h.ahead.Add(int64(5 * time.Second))
	return h.get(s.ID)
}

func (h *harness) now() time.Time { return time.Now().Add(time.Duration(h.ahead.Load())) }

// paid runs a session all the way to paid through the sandbox.
func (h *harness) paid(cp string) fsm.Session {
	h.t.Helper()
	s := h.ended(cp)
	return h.waitState(s.ID, fsm.Paid)
}

// recorder is the charger side: it records every command and can be made
// to fail the next publishes.
type recorder struct {
	mu   sync.Mutex
	cmds []charger.Command
	fail int
}

var errBrokerDown = errors.New("broker not connected")

func (r *recorder) SendCommand(_ context.Context, chargerID string, c charger.Command) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return fmt.Errorf("publish to %s: %w", chargerID, errBrokerDown)
	}
	r.cmds = append(r.cmds, c)
	return nil
}

func (r *recorder) AckTxn(context.Context, string, string) error { return nil }

func (r *recorder) failNext(n int) { r.mu.Lock(); r.fail = n; r.mu.Unlock() }

// sent returns the commands of type typ sent for session id.
func (r *recorder) sent(id, typ string) []charger.Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []charger.Command
	for _, c := range r.cmds {
		if c.SessionID == id && c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

// observer records what the engine reports of each effect.
type observer struct {
	mu       sync.Mutex
	outcomes map[fsm.EffectKind][]string
}

func (o *observer) Transition(fsm.State, fsm.State, fsm.EventType) {}
func (o *observer) Anomaly()                                       {}
func (o *observer) ConfirmToStart(time.Duration)                   {}
func (o *observer) Effect(k fsm.EffectKind, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.outcomes == nil {
		o.outcomes = map[fsm.EffectKind][]string{}
	}
	o.outcomes[k] = append(o.outcomes[k], outcome)
}

// of returns the outcomes of effect kind k so far, and forgets them.
func (o *observer) of(k fsm.EffectKind) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.outcomes[k]
	delete(o.outcomes, k)
	return out
}
