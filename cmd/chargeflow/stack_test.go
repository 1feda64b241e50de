package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/internal/openapitest"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// The tokens the end-to-end stacks run with.
const (
	appToken = "app-token-e2e"
	opsToken = "ops-token-e2e"
	simPW    = "charger-password"
)

// stack is the real chargeflow serve (through run, in this process), with the
// Pay Score sandbox on real HTTP and simulated chargers on a real broker.
type stack struct {
	t       *testing.T
	backend string
	base    string // chargeflow's HTTP base URL
	mqtt    string
	prefix  string
	sb      *sandbox.Sandbox
	sbURL   string
	fleet   *sim.Fleet
	env     map[string]string
	out     *syncBuffer
	errOut  *syncBuffer // the service's log

	cancel func()
	done   chan error
	http   *http.Client

	wait time.Duration // how long waitState and waitFor wait (default 30 s)

	bin  string    // when set, serve runs as this binary in a child process
	proc *exec.Cmd // the child process
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newStack starts sandbox, service and chargers CP-1…CP-n (one connector
// each). backend is "embedded" (bbolt + embedded broker) or "external"
// (Redis + Mosquitto).
func newStack(t *testing.T, backend string, chargers int) *stack {
	t.Helper()
	return newStackWith(t, backend, chargers, "")
}

// newStackWith is newStack with serve run as the binary bin (when not
// empty), so that a test can kill -9 it.
// env overrides settings: name, value, name, value…
func newStackWith(t *testing.T, backend string, chargers int, bin string, env ...string) *stack {
	t.Helper()
	// Every exchange with the service — the test's own requests and the
	// sandbox's notifications — is checked against its OpenAPI document.
	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 100 * time.Millisecond, NotifyTimeout: 2 * time.Second,
		NotifyClient: &http.Client{Transport: openapitest.Transport(t, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { sb.Close(); sbSrv.Close() })

	port := testenv.FreePort(t)
	s := &stack{t: t, backend: backend, sb: sb, sbURL: sbSrv.URL, prefix: "ev/v1", http: &http.Client{Timeout: 20 * time.Second, Transport: openapitest.Transport(t, nil)}, bin: bin,
		base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.env = map[string]string{
		"CHARGEFLOW_HTTP_ADDR":           fmt.Sprintf("127.0.0.1:%d", port),
		"CHARGEFLOW_PUBLIC_URL":          s.base,
		"CHARGEFLOW_HUIFU_BASE_URL":      sbSrv.URL,
		"CHARGEFLOW_HUIFU_SYS_ID":        "6666000100000000",
		"CHARGEFLOW_HUIFU_PRODUCT_ID":    "PAYUN",
		"CHARGEFLOW_HUIFU_MERCHANT_ID":   "6666000100000001",
		"CHARGEFLOW_HUIFU_PRIVATE_KEY":   sb.MerchantPrivateKey(),
		"CHARGEFLOW_HUIFU_PUBLIC_KEY":    sb.PublicKey(),
		"CHARGEFLOW_PAYSCORE_SERVICE_ID": "00004000000000000000000000000001",
		"CHARGEFLOW_APP_TOKENS":          "miniapp:" + appToken,
		"CHARGEFLOW_OPERATOR_TOKENS":     "alice:" + opsToken,
		"CHARGEFLOW_INSTANCE_ID":         "e2e-" + backend,
		"CHARGEFLOW_CONFIRM_TIMEOUT":     "30s",
		"CHARGEFLOW_START_TIMEOUT":       "2s",
		"CHARGEFLOW_STOP_TIMEOUT":        "2s",
		"CHARGEFLOW_OFFLINE_GRACE":       "2s",
		"CHARGEFLOW_POLL_INTERVAL":       "500ms",
		"CHARGEFLOW_DEBIT_RETRY":         "300ms",
		"CHARGEFLOW_LOG_FORMAT":          "json",
	}
	for i := 0; i+1 < len(env); i += 2 {
		s.env[env[i]] = env[i+1]
	}
	switch backend {
	case "embedded":
		if s.env["CHARGEFLOW_DATA_DIR"] == "" { // a test may start on a given store (a backup)
			s.env["CHARGEFLOW_DATA_DIR"] = t.TempDir()
		}
		s.env["CHARGEFLOW_MQTT_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	case "external":
		ns := testenv.Namespace(t)
		s.prefix = ns + "/ev/v1"
		if s.env["CHARGEFLOW_REDIS_URL"] == "" { // a cluster or Sentinel URL may be given in env
			s.env["CHARGEFLOW_REDIS_URL"] = testenv.Redis(t)
		}
		s.env["CHARGEFLOW_REDIS_PREFIX"] = ns
		if s.env["CHARGEFLOW_MQTT_URL"] == "" { // a broker's TLS listener, or a broker the test restarts, may be given in env
			s.env["CHARGEFLOW_MQTT_URL"] = testenv.MQTT(t)
		}
		s.env["CHARGEFLOW_MQTT_PREFIX"] = s.prefix
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	s.start()
	t.Cleanup(s.stop)
	t.Cleanup(func() {
		if t.Failed() && s.errOut != nil {
			t.Logf("service log:\n%s", tail(s.errOut.String()))
		}
	})

	specs := make([]sim.ChargerSpec, chargers)
	for i := range specs {
		id := fmt.Sprintf("CP-%d", i+1)
		specs[i] = sim.ChargerSpec{ID: id, Password: simPW, Connectors: []int{1}}
		s.mustDo("PUT", "/v1/chargers/"+id, opsToken, map[string]any{"connectors": []int{1}, "tariff_id": "default", "password": simPW}, 200)
	}
	// 360 kW and a sample every 100 ms: 10 Wh per sample, a few yuan a minute.
	fleet, err := sim.New(sim.Config{BrokerURL: s.mqtt, Prefix: s.prefix, Chargers: specs, MeterInterval: 100 * time.Millisecond,
		PowerW: 360_000, TxnResend: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.fleet = fleet
	t.Cleanup(func() { fleet.Close() })
	for _, sp := range specs {
		s.waitCharger(sp.ID, true)
	}
	return s
}

func (s *stack) getenv(k string) string { return s.env[k] }

// start runs chargeflow serve until stop.
func (s *stack) start() {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan error, 1)
	s.out = &syncBuffer{}
	errOut := &syncBuffer{}
	s.errOut = errOut
	if s.bin != "" {
		cmd := exec.Command(s.bin, "serve")
		cmd.Env = os.Environ()
		for k, v := range s.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdout, cmd.Stderr = s.out, errOut
		if err := cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
		s.proc = cmd
		go func() { s.done <- cmd.Wait() }()
		s.cancel = func() { _ = cmd.Process.Signal(os.Interrupt) }
	} else {
		go func() { s.done <- run(ctx, []string{"serve"}, s.getenv, s.out, errOut) }()
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.out.String(), "chargeflow ready:") {
		select {
		case err := <-s.done:
			s.t.Fatalf("serve exited: %v\n%s", err, tail(errOut.String()))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("serve not ready after 30s:\n%s", tail(errOut.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range strings.Fields(s.out.String()) {
		if v, ok := strings.CutPrefix(f, "mqtt="); ok {
			s.mqtt = v
		}
	}
}

// logOf returns the service's log lines that name the session or its order
// (the last 60).
func (s *stack) logOf(id, outOrderNo string) string {
	if s.errOut == nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(s.errOut.String(), "\n") {
		named := strings.Contains(l, id) || (outOrderNo != "" && strings.Contains(l, outOrderNo))
		if named && !strings.Contains(l, `"http request"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

// stop shuts serve down gracefully and waits.
func (s *stack) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Error("serve did not stop within 30s")
	}
	s.cancel = nil
}

// kill ends the service with SIGKILL: nothing is flushed or closed.
func (s *stack) kill() {
	s.t.Helper()
	if s.proc == nil {
		s.t.Fatal("kill needs the service in a child process")
	}
	_ = s.proc.Process.Kill()
	<-s.done
	s.cancel = nil
}

// restart stops and starts the service on the same store and broker.
func (s *stack) restart() {
	s.stop()
	s.start()
}

// do sends a request and returns the status and body.
func (s *stack) do(method, path, token string, body any, headers ...string) (int, []byte) {
	s.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.base+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (s *stack) mustDo(method, path, token string, body any, want int, headers ...string) []byte {
	s.t.Helper()
	code, out := s.do(method, path, token, body, headers...)
	if code != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, out)
	}
	return out
}

// view is the part of the session view the tests read.
type view struct {
	ID           string     `json:"id"`
	State        string     `json:"state"`
	CancelReason string     `json:"cancel_reason"`
	Flags        []string   `json:"flags"`
	ChargerID    string     `json:"charger_id"`
	OutOrderNo   string     `json:"out_order_no"`
	Package      string     `json:"package"`
	MaxAmountFen int64      `json:"max_amount_fen"`
	EnergyWh     int64      `json:"energy_wh"`
	AmountFen    int64      `json:"amount_fen"`
	StartedAt    *time.Time `json:"started_at"`
	EndedAt      *time.Time `json:"ended_at"`
	EndTime      *time.Time `json:"end_time"`
	PaidAt       *time.Time `json:"paid_at"`
	Lines        []struct {
		Name      string `json:"name"`
		AmountFen int64  `json:"amount_fen"`
	} `json:"lines"`
	Payment struct {
		Attempts int   `json:"attempts"`
		Failures int   `json:"failures"`
		PaidFen  int64 `json:"paid_fen"`
		ByUser   bool  `json:"by_user"`
	} `json:"payment"`
	Refunds []struct {
		AmountFen int64  `json:"amount_fen"`
		Status    string `json:"status"`
	} `json:"refunds"`
	History []struct {
		From  string `json:"from"`
		To    string `json:"to"`
		Event string `json:"event"`
		By    string `json:"by"`
	} `json:"history"`
}

func (v view) hasFlag(f string) bool {
	for _, g := range v.Flags {
		if g == f {
			return true
		}
	}
	return false
}

func (s *stack) create(cp string, maxFen int64) view {
	s.t.Helper()
	var v view
	out := s.mustDo("POST", "/v1/sessions", appToken, map[string]any{"charger_id": cp, "connector": 1, "openid": "o-" + cp, "max_amount_fen": maxFen},
		201, "Idempotency-Key", fmt.Sprintf("%s-%d", cp, time.Now().UnixNano()))
	if err := json.Unmarshal(out, &v); err != nil {
		s.t.Fatal(err)
	}
	if v.State != "created" || v.OutOrderNo == "" {
		s.t.Fatalf("created session: %s", out)
	}
	return v
}

func (s *stack) get(id string) view {
	s.t.Helper()
	var v view
	if err := json.Unmarshal(s.mustDo("GET", "/v1/sessions/"+id, appToken, nil, 200), &v); err != nil {
		s.t.Fatal(err)
	}
	return v
}

// waitState waits until the session is in state (or fails on a terminal
// state that is not it).
func (s *stack) waitState(id, state string) view {
	s.t.Helper()
	deadline := time.Now().Add(s.waitLimit())
	for {
		v := s.get(id)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("session %s: state %s, want %s; history %+v\nits log:\n%s", id, v.State, state, v.History, s.logOf(id, v.OutOrderNo))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *stack) waitLimit() time.Duration {
	if s.wait > 0 {
		return s.wait
	}
	return 30 * time.Second
}

// waitFor polls cond for up to 30 s (s.wait).
func (s *stack) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(s.waitLimit())
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *stack) waitCharger(id string, online bool) {
	s.t.Helper()
	s.waitFor(fmt.Sprintf("%s online=%v", id, online), func() bool {
		code, out := s.do("GET", "/v1/chargers/"+id, opsToken, nil)
		var c struct {
			Online bool `json:"online"`
		}
		return code == 200 && json.Unmarshal(out, &c) == nil && c.Online == online
	})
}

// charge plugs cp, creates a session, confirms it as the WeChat user and
// waits until energy flows.
func (s *stack) charge(cp string, maxFen int64) view {
	s.t.Helper()
	c := s.fleet.Charger(cp)
	if err := c.Plug(1); err != nil {
		s.t.Fatal(err)
	}
	v := s.create(cp, maxFen)
	if err := s.sb.Confirm(v.OutOrderNo); err != nil {
		s.t.Fatal(err)
	}
	s.waitState(v.ID, "charging")
	s.waitFor("energy on "+cp, func() bool { si, ok := c.Session(1); return ok && c.Register(1) > si.StartWh+50 })
	return s.get(v.ID)
}

// startsFor counts the start commands cp received for session id.
func (s *stack) startsFor(cp, id string) int {
	n := 0
	for _, c := range s.fleet.Charger(cp).Commands() {
		if c.Type == "start" && c.SessionID == id {
			n++
		}
	}
	return n
}

func (s *stack) ledger(outOrderNo string) sandbox.LedgerEntry {
	return s.sb.Ledger()[outOrderNo]
}
