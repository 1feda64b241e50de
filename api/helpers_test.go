package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/openapitest"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	appToken      = "app-token-0123456789"
	operatorToken = "operator-token-0123456789"
	sandboxHuifu  = "6666000100000001"
)

var bg = context.Background()

// merchantKey is generated once per test binary: RSA-2048 generation is
// slow under -race, and every stack's sandbox trusts it.
var merchantKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// stack is the real thing, in process: a bbolt store in a temp dir, the Pay
// Score sandbox over HTTP, a Pay Score client, the embedded MQTT broker as
// the engine's commander, the engine, and the API on an httptest server
// that is also the sandbox's notify_url.
type stack struct {
	t       testing.TB
	store   *boltstore.Store
	sb      *sandbox.Sandbox
	huifu   *httptest.Server
	pay     *payscore.Client
	broker  *charger.EmbeddedBroker
	eng     *session.Engine
	api     *server
	srv     *httptest.Server
	http    *http.Client
	keys    payscoretest.Keys
	cfg     payscore.Config
	logs    *bytes.Buffer
	handler atomic.Pointer[http.Handler]
}

type stackOpt func(*Deps)

func newStack(t testing.TB, opts ...stackOpt) *stack {
	t.Helper()
	st := &stack{t: t, keys: payscoretest.HuifuKeys(t), logs: &bytes.Buffer{}}
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: st.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))

	bs, err := boltstore.Open(t.TempDir(), boltstore.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	st.store = bs

	// The API server first (its URL is the notify_url); its handler is set
	// once everything exists.
	// Every exchange with it is checked against the document it serves.
	st.srv = httptest.NewServer(openapitest.Handler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*st.handler.Load()).ServeHTTP(w, r)
	})))
	t.Cleanup(st.srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	st.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}

	mk, err := merchantKey()
	if err != nil {
		t.Fatal(err)
	}
	mpub, err := payscore.EncodePublicKey(&mk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ntr := &http.Transport{}
	t.Cleanup(ntr.CloseIdleConnections)
	sb, err := sandbox.New(sandbox.Options{HuifuPrivateKey: st.keys.PrivateKey, MerchantPublicKey: mpub, HuifuID: sandboxHuifu,
		NotifyClient: &http.Client{Transport: ntr}, NotifyBackoff: 50 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	st.sb = sb
	st.huifu = httptest.NewServer(sb.Handler())
	t.Cleanup(st.huifu.Close)
	t.Cleanup(func() { sb.Close() })

	ptr := &http.Transport{}
	t.Cleanup(ptr.CloseIdleConnections)
	st.cfg = payscore.Config{BaseURL: st.huifu.URL, SysID: "6666000100000000", ProductID: "PAYUN", HuifuID: sandboxHuifu,
		ServiceID: "sandbox-service", NotifyURL: st.srv.URL + "/notify/huifu/payscore",
		Signer: payscore.NewRSASigner(mk), Verifier: st.keys.Verifier,
		HTTPClient: &http.Client{Transport: ptr}, MaxSends: 1, Timeout: 5 * time.Second, Logger: log}
	st.pay, err = payscore.New(st.cfg)
	if err != nil {
		t.Fatal(err)
	}

	st.broker, err = charger.NewEmbeddedBroker(charger.EmbeddedConfig{
		ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Credentials: storeCredentials{bs}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	st.eng = st.newEngine(st.pay)
	if err := st.broker.Start(bg, st.eng.HandleCharger); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.broker.Close() })

	d := st.deps(st.eng)
	for _, o := range opts {
		o(&d)
	}
	st.api = newServer(d)
	var h http.Handler = st.api
	st.handler.Store(&h)
	return st
}

func (st *stack) newEngine(pay session.PayScore, tune ...func(*session.Config)) *session.Engine {
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: st.logs}, nil))
	cfg := session.Config{Machine: fsm.DefaultConfig(), InstanceID: "test"}
	for _, f := range tune {
		f(&cfg)
	}
	eng, err := session.New(cfg, st.store, pay, st.broker, log, nil, nil)
	if err != nil {
		st.t.Fatal(err)
	}
	return eng
}

func (st *stack) deps(eng *session.Engine) Deps {
	return Deps{Engine: eng, Store: st.store, Verifier: st.keys.Verifier,
		AppTokens:      map[string]string{appToken: "miniprogram"},
		OperatorTokens: map[string]string{operatorToken: "alice"},
		Logger:         slog.New(slog.NewTextHandler(&lockedWriter{w: st.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Heartbeat:      100 * time.Millisecond,
	}
}

// serve puts another API (other deps) on its own httptest server.
func (st *stack) serve(d Deps) string { return st.serveHandler(newServer(d)) }

// serveHandler puts h on its own test server, every exchange checked
// against the document h serves.
func (st *stack) serveHandler(h http.Handler) string {
	srv := httptest.NewServer(openapitest.Handler(st.t, h))
	st.t.Cleanup(srv.Close)
	return srv.URL
}

// storeCredentials gives the embedded broker the registry's password hashes.
type storeCredentials struct{ st store.Store }

func (c storeCredentials) ChargerPasswordHash(ctx context.Context, id string) (string, bool, error) {
	ch, err := c.st.GetCharger(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return ch.PasswordHash, ch.PasswordHash != "", nil
}

// lockedWriter serialises log writes into a test's buffer.
type lockedWriter struct{ w io.Writer }

var logMu sync.Mutex

func (l *lockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return l.w.Write(p)
}

func (st *stack) logText() string {
	logMu.Lock()
	defer logMu.Unlock()
	return st.logs.String()
}

// response is one HTTP exchange's answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) problem(t testing.TB) Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d Content-Type %q, want application/problem+json; body %s", r.status, ct, r.body)
	}
	var p Problem
	r.json(t, &p)
	if p.Status != r.status || p.Type != ProblemTypeBase+p.Code || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v does not match status %d", p, r.status)
	}
	return p
}

// req is a request to send: JSON body by default.
type req struct {
	method, path, token string
	body                string
	header              map[string]string
	base                string // another server's URL
}

func (st *stack) do(t testing.TB, q req) response {
	t.Helper()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	base := q.base
	if base == "" {
		base = st.srv.URL
	}
	r, err := http.NewRequest(q.method, base+q.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if q.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if q.token != "" {
		r.Header.Set("Authorization", "Bearer "+q.token)
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	resp, err := st.http.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (st *stack) mustStatus(t testing.TB, q req, want int) response {
	t.Helper()
	r := st.do(t, q)
	if r.status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", q.method, q.path, r.status, want, r.body)
	}
	return r
}

// setup registers the default tariff and chargers (each with connectors
// 1 and 2) through the API, and marks them online as their presence would.
func (st *stack) setup(t testing.TB, chargers ...string) {
	t.Helper()
	st.mustStatus(t, req{method: "PUT", path: "/v1/tariffs/default", token: operatorToken, body: `{"periods":[
		{"from":"00:00","to":"08:00","energy_fen_per_kwh":40,"service_fen_per_kwh":30},
		{"from":"08:00","to":"24:00","energy_fen_per_kwh":80,"service_fen_per_kwh":30}]}`}, http.StatusOK)
	for _, id := range chargers {
		st.mustStatus(t, req{method: "PUT", path: "/v1/chargers/" + id, token: operatorToken,
			body: `{"connectors":[1,2],"tariff_id":"default","password":"secret-password"}`}, http.StatusOK)
		st.setOnline(t, id, true, nil)
	}
}

// setOnline sets a charger's presence and connector statuses in the store.
func (st *stack) setOnline(t testing.TB, id string, online bool, status map[int]string) {
	t.Helper()
	_, err := st.store.UpdateCharger(bg, id, func(c *store.Charger) ([]byte, error) {
		c.Online = online
		if status != nil {
			c.ConnectorStatus = status
		}
		return json.Marshal(session.NewChargerView(*c))
	})
	if err != nil {
		t.Fatal(err)
	}
}

var keySeq atomic.Int64

func newKey() string { return fmt.Sprintf("key-%d-%d", time.Now().UnixNano(), keySeq.Add(1)) }

func createBody(chargerID string, connector int) string {
	return fmt.Sprintf(`{"charger_id":%q,"connector":%d,"openid":"oUser_%s_%d","max_amount_fen":5000}`, chargerID, connector, chargerID, connector)
}

// create starts a session through the API and returns its view.
func (st *stack) create(t testing.TB, chargerID string, connector int) session.View {
	t.Helper()
	r := st.mustStatus(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: createBody(chargerID, connector),
		header: map[string]string{"Idempotency-Key": newKey()}}, http.StatusCreated)
	var v session.View
	r.json(t, &v)
	return v
}

func (st *stack) view(t testing.TB, id string) session.View {
	t.Helper()
	var v session.View
	st.mustStatus(t, req{method: "GET", path: "/v1/sessions/" + id, token: operatorToken}, http.StatusOK).json(t, &v)
	return v
}

// apply feeds the engine an event as a charger or Pay Score would.
func (st *stack) apply(t testing.TB, id string, ev fsm.Event) {
	t.Helper()
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	if _, err := st.eng.Apply(bg, id, ev); err != nil {
		t.Fatalf("apply %s: %v", ev.Type, err)
	}
}

// charging drives a created session to charging: confirmed by Pay Score,
// started by the charger at register 1000 Wh.
func (st *stack) charging(t testing.TB, id string) {
	t.Helper()
	st.apply(t, id, fsm.Event{Type: fsm.EvConfirm, By: fsm.ByPayScore})
	st.apply(t, id, fsm.Event{Type: fsm.EvStarted, By: fsm.ByCharger, ChargerTime: time.Now(), MeterWh: 1000})
}

// completed drives a charging session to completed with 5 kWh billed and
// the first deduction attempt failed, so the session is idle in completed.
func (st *stack) completed(t testing.TB, id string) {
	t.Helper()
	st.apply(t, id, fsm.Event{Type: fsm.EvEnded, By: fsm.ByCharger, ChargerTime: time.Now(), MeterWh: 6000, Reason: "user"})
	st.apply(t, id, fsm.Event{Type: fsm.EvOrderCompleted, By: fsm.ByPayScore})
	st.apply(t, id, fsm.Event{Type: fsm.EvDeductionRegistered, By: fsm.ByPayScore, Deduction: 1, OutTradeNo: "T1", HfSeqID: "H1"})
	st.apply(t, id, fsm.Event{Type: fsm.EvDebitFailed, By: fsm.ByPayScore, Deduction: 1, Reason: "balance"})
}
