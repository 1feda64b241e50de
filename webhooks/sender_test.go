package webhooks_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/client/webhook"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/webhooks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "test-secret-0123456789"

// queue creates session id with one event per type (one commit each).
func queue(t *testing.T, st store.Store, id string, types ...string) {
	t.Helper()
	now := time.Now().UTC()
	s := fsm.Session{ID: id, State: fsm.Created, ChargerID: "CP-" + id, Connector: 1, CreatedAt: now, UpdatedAt: now}
	for v, typ := range types {
		ev := store.WebhookEvent{ID: store.EventID(id, int64(v+1), 0), Type: typ, CreatedAt: now}
		ev.Body = fmt.Appendf(nil, `{"id":%q,"type":%q,"created_at":%q,"data":{"id":%q}}`, ev.ID, typ, now.Format(time.RFC3339Nano), id)
		c := store.Commit{ExpectedVersion: int64(v), Session: s, Webhooks: []store.WebhookEvent{ev}}
		var err error
		if v == 0 {
			err = st.CreateSession(t.Context(), c)
		} else {
			err = st.Commit(t.Context(), c)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func openStore(t *testing.T) store.Store {
	st, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type counts struct{ delivered, retried, gaveUp atomic.Int64 }

func (c *counts) Delivered(time.Duration) { c.delivered.Add(1) }
func (c *counts) Retried()                { c.retried.Add(1) }
func (c *counts) GaveUp()                 { c.gaveUp.Add(1) }

func run(t *testing.T, cfg webhooks.Config, st store.Store, obs webhooks.Observer) {
	t.Helper()
	cfg.Secret, cfg.InstanceID = secret, "test"
	if cfg.Retry == nil {
		cfg.Retry = []time.Duration{10 * time.Millisecond}
	}
	cfg.IdleWait = 10 * time.Millisecond
	snd, err := webhooks.New(cfg, st, nil, obs, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = snd.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRetriedUntilDeliveredInOrder: a receiver that refuses the first
// attempts gets every event, signed, each session's in order, and the
// log records the attempts.
func TestRetriedUntilDeliveredInOrder(t *testing.T) {
	st := openStore(t)
	var mu sync.Mutex
	var got []webhook.Event
	var requests int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := webhook.ConstructEvent(secret, r.Header.Get(webhook.SignatureHeader), body, 0)
		mu.Lock()
		defer mu.Unlock()
		requests++
		switch {
		case err != nil:
			t.Errorf("unverifiable: %v", err)
			w.WriteHeader(http.StatusBadRequest)
		case r.Header.Get("Content-Type") != "application/json":
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		case requests <= 4:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			got = append(got, ev)
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	queue(t, st, "a", "session.created", "session.user_confirmed", "session.charging")
	queue(t, st, "b", "session.created", "session.cancelled")
	var c counts
	run(t, webhooks.Config{URL: srv.URL, Workers: 3}, st, &c)
	waitFor(t, "five events", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 5 })
	order := map[string][]string{}
	mu.Lock()
	for _, ev := range got {
		order[ev.Data.ID] = append(order[ev.Data.ID], ev.Type)
	}
	mu.Unlock()
	if fmt.Sprint(order["a"]) != "[session.created session.user_confirmed session.charging]" || fmt.Sprint(order["b"]) != "[session.created session.cancelled]" {
		t.Fatalf("delivered %v", order)
	}
	waitFor(t, "the log", func() bool {
		p, err := st.ListDeliveries(t.Context(), store.DeliveryFilter{Status: store.DeliveryDelivered})
		return err == nil && len(p.Deliveries) == 5
	})
	if c.retried.Load() != 4 || c.delivered.Load() != 5 || c.gaveUp.Load() != 0 {
		t.Fatalf("retried %d delivered %d gave up %d", c.retried.Load(), c.delivered.Load(), c.gaveUp.Load())
	}
	p, _ := st.ListDeliveries(t.Context(), store.DeliveryFilter{})
	tries := 0
	for _, d := range p.Deliveries {
		tries += d.Attempts
		if d.LastStatus != http.StatusOK || d.DoneAt.IsZero() {
			t.Errorf("delivery %+v", d)
		}
	}
	if tries != 9 {
		t.Errorf("%d attempts recorded, want 9", tries)
	}
}

// TestGivenUpAfterTheWindow: a receiver that never takes an event (a
// redirect, a slow answer, a 4xx) makes the sender give up once the window
// has passed; the session's next event goes, and the failed one stays in
// the log with why.
func TestGivenUpAfterTheWindow(t *testing.T) {
	st := openStore(t)
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := webhook.ConstructEvent(secret, r.Header.Get(webhook.SignatureHeader), body, 0)
		if err != nil {
			t.Errorf("unverifiable: %v", err)
		}
		switch n := calls.Add(1); {
		case ev.Type == "session.cancelled":
			w.WriteHeader(http.StatusNoContent)
		case n == 1:
			http.Redirect(w, r, "/elsewhere", http.StatusFound) // not followed: a 3xx is not a delivery
		case n == 2:
			time.Sleep(300 * time.Millisecond) // longer than the timeout
		default:
			w.WriteHeader(http.StatusGone)
		}
	}))
	defer srv.Close()
	queue(t, st, "g", "session.created", "session.cancelled")
	var c counts
	run(t, webhooks.Config{URL: srv.URL, Timeout: 100 * time.Millisecond, GiveUpAfter: 500 * time.Millisecond}, st, &c)
	waitFor(t, "given up, then the next delivered", func() bool {
		d, err := st.GetDelivery(t.Context(), store.EventID("g", 2, 0))
		return err == nil && d.Status == store.DeliveryDelivered
	})
	d, err := st.GetDelivery(t.Context(), store.EventID("g", 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.DeliveryFailed || d.Attempts < 3 || d.LastStatus != http.StatusGone || d.LastError == "" {
		t.Fatalf("given up %+v", d)
	}
	if c.gaveUp.Load() != 1 || c.delivered.Load() != 1 {
		t.Fatalf("gave up %d delivered %d", c.gaveUp.Load(), c.delivered.Load())
	}

	// The log's retention: a sender whose clock is past it deletes both.
	later, err := webhooks.New(webhooks.Config{URL: srv.URL, Secret: secret}, st, nil, nil,
		func() time.Time { return time.Now().Add(webhooks.DefaultRetention + time.Minute) })
	if err != nil {
		t.Fatal(err)
	}
	if n, err := later.Trim(t.Context()); err != nil || n != 2 {
		t.Fatalf("trimmed %d, %v", n, err)
	}
}

// TestConfigRefused: no sender without an http(s) URL and a secret.
func TestConfigRefused(t *testing.T) {
	st := openStore(t)
	for _, cfg := range []webhooks.Config{{URL: "", Secret: secret}, {URL: "ftp://x/y", Secret: secret}, {URL: "http://x/y"}} {
		if _, err := webhooks.New(cfg, st, nil, nil, nil); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

// TestTwoInstancesShareTheQueues: two senders (two instances) on one Redis
// deliver every event of every session once acknowledged, each session's
// in order, through refusals.
func TestTwoInstancesShareTheQueues(t *testing.T) {
	st, err := redisstore.New(t.Context(), testenv.Redis(t), redisstore.Options{Prefix: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var mu sync.Mutex
	acked := map[string][]string{} // session → event types, as first acknowledged
	seen := map[string]bool{}
	var n int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := webhook.ConstructEvent(secret, r.Header.Get(webhook.SignatureHeader), body, 0)
		if err != nil {
			t.Errorf("unverifiable: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if n++; n%3 == 0 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if !seen[ev.ID] {
			seen[ev.ID] = true
			acked[ev.Data.ID] = append(acked[ev.Data.ID], ev.Type)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	types := []string{"session.created", "session.user_confirmed", "session.charging", "session.stopping", "session.completed"}
	const sessions = 6
	for i := range sessions {
		queue(t, st, fmt.Sprintf("s%d", i), types...)
	}
	for _, inst := range []string{"inst-a", "inst-b"} {
		s, err := webhooks.New(webhooks.Config{URL: srv.URL, Secret: secret, InstanceID: inst, Workers: 2,
			Retry: []time.Duration{5 * time.Millisecond}, IdleWait: 5 * time.Millisecond}, st, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		defer func() { cancel(); <-done }()
	}
	waitFor(t, "every event", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == sessions*len(types) })
	mu.Lock()
	defer mu.Unlock()
	for i := range sessions {
		if got := acked[fmt.Sprintf("s%d", i)]; fmt.Sprint(got) != fmt.Sprint(types) {
			t.Errorf("session s%d delivered %v", i, got)
		}
	}
}
