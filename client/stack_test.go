package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/api"
	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/openapitest"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const appToken = "app-token-client-test"

// stack is the real API in process, as the client meets it: a bbolt store,
// the Pay Score sandbox over HTTP, the embedded broker, the engine, and the
// API on an httptest server whose every exchange is checked against the
// OpenAPI document it serves.
type stack struct {
	t     *testing.T
	store *boltstore.Store
	sb    *sandbox.Sandbox
	eng   *session.Engine
	url   string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	ctx := context.Background()
	st := &stack{t: t}
	bs, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	st.store = bs

	var handler atomic.Pointer[http.Handler]
	srv := httptest.NewServer(openapitest.Handler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handler.Load()).ServeHTTP(w, r)
	})))
	t.Cleanup(srv.Close)
	st.url = srv.URL

	ntr := &http.Transport{}
	t.Cleanup(ntr.CloseIdleConnections)
	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 50 * time.Millisecond, NotifyClient: &http.Client{Transport: ntr}})
	if err != nil {
		t.Fatal(err)
	}
	st.sb = sb
	huifu := httptest.NewServer(sb.Handler())
	t.Cleanup(huifu.Close)
	t.Cleanup(func() { sb.Close() })
	cfg, err := sb.ClientConfig(huifu.URL)
	if err != nil {
		t.Fatal(err)
	}
	ptr := &http.Transport{}
	t.Cleanup(ptr.CloseIdleConnections)
	cfg.NotifyURL, cfg.HTTPClient, cfg.MaxSends, cfg.Timeout = srv.URL+"/notify/huifu/payscore", &http.Client{Transport: ptr}, 1, 5*time.Second
	pay, err := payscore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}

	broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{
		ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Credentials: session.Credentials(bs)})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := session.New(session.Config{Machine: fsm.DefaultConfig(), InstanceID: "client-test"}, bs, pay, broker, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.eng = eng
	if err := broker.Start(ctx, eng.HandleCharger); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Close() })

	var h http.Handler = api.NewServer(api.Deps{Engine: eng, Store: bs, Verifier: cfg.Verifier,
		AppTokens: map[string]string{appToken: "miniprogram"}})
	handler.Store(&h)

	if err := bs.PutTariff(ctx, money.DefaultTariff()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"CP1", "CP2"} {
		if err := bs.PutCharger(ctx, store.Charger{ID: id, Connectors: []int{1, 2}, TariffID: "default", Online: true}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// charging drives a created session to charging, as Pay Score and the
// charger would.
func (st *stack) charging(id string) {
	st.t.Helper()
	for _, ev := range []fsm.Event{
		{Type: fsm.EvConfirm, By: fsm.ByPayScore, At: time.Now()},
		{Type: fsm.EvStarted, By: fsm.ByCharger, At: time.Now(), ChargerTime: time.Now(), MeterWh: 1000},
	} {
		if _, err := st.eng.Apply(context.Background(), id, ev); err != nil {
			st.t.Fatalf("apply %s: %v", ev.Type, err)
		}
	}
}

// counting counts the requests a client sends, and can make the first n
// answers of a path vanish after the service has carried them out (a reply
// lost on the way back).
type counting struct {
	base     http.RoundTripper
	requests atomic.Int64
	lose     atomic.Int64
}

var errLost = errors.New("connection reset (the test lost the reply)")

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	resp, err := c.base.RoundTrip(r)
	if err == nil && c.lose.Add(-1) >= 0 {
		resp.Body.Close()
		return nil, errLost
	}
	return resp, err
}

func newCounting(t *testing.T) *counting {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &counting{base: tr}
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
