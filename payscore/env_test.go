package payscore_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// clock is the sandbox's injected clock; tests move it by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a client and a sandbox talking over real HTTP with real RSA
// signatures, plus chargeflow's notification endpoint (NotifyHandler).
type env struct {
	sb     *sandbox.Sandbox
	client *payscore.Client
	clock  *clock
	calls  *callLog

	mu       sync.Mutex
	notes    []payscore.Notification
	ackMode  string // "" = NotifyHandler; "wrong" = 200 with a wrong body; "500"
	applyErr error
}

type callLog struct {
	mu    sync.Mutex
	infos []payscore.CallInfo
}

func (l *callLog) ObserveCall(i payscore.CallInfo) {
	l.mu.Lock()
	l.infos = append(l.infos, i)
	l.mu.Unlock()
}

func (l *callLog) sends(path string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, i := range l.infos {
		if i.Endpoint == path {
			n++
		}
	}
	return n
}

type envOption func(*sandbox.Options, *payscore.Config)

func newEnv(t testing.TB, options ...envOption) *env {
	t.Helper()
	e := &env{clock: &clock{t: mustTime(t, "2025-06-01T02:00:00Z")}, calls: &callLog{}}
	notifyTransport := &http.Transport{}
	clientTransport := &http.Transport{}
	so := sandbox.Options{
		Now:           e.clock.Now,
		NotifyBackoff: 5 * time.Millisecond,
		NotifyTimeout: 2 * time.Second,
		NotifyClient:  &http.Client{Transport: notifyTransport},
	}
	var cfg payscore.Config
	for _, o := range options {
		o(&so, &cfg)
	}
	sb, err := sandbox.New(so)
	if err != nil {
		t.Fatal(err)
	}
	e.sb = sb
	api := httptest.NewServer(sb.Handler())
	var notifyHandler http.Handler // set below, once the verifier exists
	notify := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		mode := e.ackMode
		e.mu.Unlock()
		switch mode {
		case "wrong":
			w.Write([]byte("SUCCESS"))
		case "500":
			http.Error(w, "down", http.StatusInternalServerError)
		default:
			notifyHandler.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() {
		notify.Close()
		api.Close()
		notifyTransport.CloseIdleConnections()
		clientTransport.CloseIdleConnections()
	})
	t.Cleanup(func() { sb.Close() }) // first: releases hung replies, stops deliveries

	base, err := sb.ClientConfig(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	base.NotifyURL = notify.URL + "/notify/huifu/payscore"
	base.HTTPClient = &http.Client{Transport: clientTransport}
	base.Timeout = 2 * time.Second
	base.RetryBackoff = time.Millisecond
	base.Observer = e.calls
	base.Now = e.clock.Now // the client's day is the sandbox's
	if cfg.Observer != nil {
		extra := cfg.Observer
		base.Observer = payscore.ObserverFunc(func(i payscore.CallInfo) { e.calls.ObserveCall(i); extra.ObserveCall(i) })
	}
	if cfg.MaxSends != 0 {
		base.MaxSends = cfg.MaxSends
	}
	if cfg.Timeout != 0 {
		base.Timeout = cfg.Timeout
	}
	e.client, err = payscore.New(base)
	if err != nil {
		t.Fatal(err)
	}
	notifyHandler = payscore.NotifyHandler(base.Verifier, func(ctx context.Context, n payscore.Notification) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.applyErr != nil {
			err := e.applyErr
			e.applyErr = nil
			return err
		}
		e.notes = append(e.notes, n)
		return nil
	}, payscore.NotifyOptions{})
	return e
}

func withSends(n int) envOption {
	return func(_ *sandbox.Options, c *payscore.Config) { c.MaxSends = n }
}

func withTimeout(d time.Duration) envOption {
	return func(_ *sandbox.Options, c *payscore.Config) { c.Timeout = d }
}

func withSandbox(f func(*sandbox.Options)) envOption {
	return func(o *sandbox.Options, _ *payscore.Config) { f(o) }
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *env) notifications() []payscore.Notification {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]payscore.Notification(nil), e.notes...)
}

// waitNotification waits for the n-th (1-based) applied notification of kind
// for outOrderNo and returns it.
func (e *env) waitNotification(t testing.TB, kind payscore.NotificationKind, outOrderNo string, n int) payscore.Notification {
	t.Helper()
	var got payscore.Notification
	eventually(t, string(kind)+" notification", func() bool {
		c := 0
		for _, x := range e.notifications() {
			if x.Kind == kind && x.OutOrderNo == outOrderNo {
				c++
				if c == n {
					got = x
					return true
				}
			}
		}
		return false
	})
	return got
}

func (e *env) countNotifications(kind payscore.NotificationKind, outOrderNo string) int {
	c := 0
	for _, x := range e.notifications() {
		if x.Kind == kind && x.OutOrderNo == outOrderNo {
			c++
		}
	}
	return c
}

// waitDelivered waits until every sandbox delivery is finished.
func (e *env) waitDelivered(t testing.TB) []sandbox.Delivery {
	t.Helper()
	var ds []sandbox.Delivery
	eventually(t, "deliveries done", func() bool {
		ds = e.sb.Deliveries()
		for _, d := range ds {
			if !d.Done {
				return false
			}
		}
		return true
	})
	return ds
}

const testOpenID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"

func (e *env) createReq(session string, riskFund money.Fen) payscore.CreateOrderRequest {
	return payscore.CreateOrderRequest{
		ReqSeqID:            payscore.ReqSeqID(session, payscore.StepCreate, 1, payscore.FormatDate(e.clock.Now())),
		ReqDate:             e.clock.Now(),
		ServiceIntroduction: "充电服务",
		RiskFund:            payscore.RiskFund{Amount: riskFund, Description: "充电预估费用"},
		TimeRange:           payscore.TimeRange{StartOnAccept: true},
		OpenID:              testOpenID,
	}
}

func (e *env) create(t testing.TB, session string, riskFund money.Fen) *payscore.CreateOrderResponse {
	t.Helper()
	res, err := e.client.CreateOrder(context.Background(), e.createReq(session, riskFund))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return res
}

// confirmed creates an order and plays the user confirming it.
func (e *env) confirmed(t testing.TB, session string, riskFund money.Fen) string {
	t.Helper()
	no := e.create(t, session, riskFund).OutOrderNo
	if err := e.sb.Confirm(no); err != nil {
		t.Fatal(err)
	}
	return no
}

func (e *env) completeReq(no string, amount money.Fen) payscore.CompleteOrderRequest {
	e.clock.Advance(30 * time.Minute)
	end, _ := payscore.ClampEndTime(e.clock.Now().Add(-time.Minute), time.Time{}, e.clock.Now(), 5*time.Second)
	energy := amount * 7 / 10
	return payscore.CompleteOrderRequest{
		OutOrderNo: no, Amount: amount,
		TimeRange:    payscore.TimeRange{End: end},
		PostPayments: []payscore.PostItem{{Name: "电费", Amount: energy}, {Name: "服务费", Amount: amount - energy}},
	}
}

// completed goes as far as DOING/MCH_COMPLETE.
func (e *env) completed(t testing.TB, session string, amount money.Fen) string {
	t.Helper()
	no := e.confirmed(t, session, amount+1000)
	if err := e.client.CompleteOrder(context.Background(), e.completeReq(no, amount)); err != nil {
		t.Fatalf("complete: %v", err)
	}
	return no
}

func (e *env) register(t testing.TB, session string, attempt int, no string) *payscore.Registration {
	t.Helper()
	reg, err := e.client.RegisterDeduction(context.Background(), payscore.RegisterDeductionRequest{
		ReqSeqID: payscore.ReqSeqID(session, payscore.StepRegister, attempt, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(),
		Order: payscore.OrderLocator{OutOrderNo: no},
	})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return reg
}

func (e *env) debitReq(session string, attempt int, reg *payscore.Registration) payscore.DebitRequest {
	return payscore.DebitRequest{
		ReqSeqID: payscore.ReqSeqID(session, payscore.StepDebit, attempt, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(),
		DeductReqSeqID: reg.ReqSeqID, OutTradeNo: reg.OutTradeNo, GoodsDesc: "充电费用", ClientIP: "203.0.113.7",
	}
}

func (e *env) query(t testing.TB, no string) *payscore.Order {
	t.Helper()
	o, err := e.client.QueryOrder(context.Background(), payscore.OrderLocator{OutOrderNo: no})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	return o
}
