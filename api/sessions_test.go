package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

func TestCreateSession(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	key := newKey()
	r := st.mustStatus(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 1),
		header: map[string]string{"Idempotency-Key": key}}, http.StatusCreated)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var raw map[string]any
	r.json(t, &raw)
	for _, f := range []string{"id", "state", "flags", "charger_id", "connector", "openid", "out_order_no", "package",
		"max_amount_fen", "energy_wh", "amount_fen", "lines", "tariff", "created_at", "confirmed_at", "started_at",
		"ended_at", "end_time", "paid_at", "payment", "refunds", "history"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("view has no %q: %s", f, r.body)
		}
	}
	var v session.View
	r.json(t, &v)
	if v.State != fsm.Created || v.ChargerID != "CP1" || v.Connector != 1 || v.OpenID != "oUser_CP1_1" || v.MaxAmountFen != 5000 {
		t.Fatalf("view %+v", v)
	}
	if v.OutOrderNo == "" || v.Package != "sandbox_package_"+v.OutOrderNo {
		t.Fatalf("out_order_no %q package %q", v.OutOrderNo, v.Package)
	}
	if len(v.History) != 1 || v.History[0].To != fsm.Created || v.History[0].By != fsm.ByApp {
		t.Fatalf("history %+v", v.History)
	}
	if got := r.header.Get("Location"); got != "/v1/sessions/"+v.ID {
		t.Fatalf("Location %q", got)
	}
	if _, err := time.Parse(time.RFC3339, raw["created_at"].(string)); err != nil {
		t.Fatalf("created_at not RFC 3339: %v", err)
	}
	// The Pay Score order exists, with the req_seq_id derived from the id.
	o, ok := st.sb.Order(v.OutOrderNo)
	if !ok || o.ReqSeqID != payscore.ReqSeqID(v.ID, payscore.StepCreate, 1, o.ReqDate) || o.RiskFund != 5000 {
		t.Fatalf("sandbox order %+v", o)
	}
	// GET by both roles.
	for _, tok := range []string{appToken, operatorToken} {
		var got session.View
		st.mustStatus(t, req{method: "GET", path: "/v1/sessions/" + v.ID, token: tok}, http.StatusOK).json(t, &got)
		if got.ID != v.ID || got.State != fsm.Created || len(got.History) != 1 {
			t.Fatalf("GET %+v", got)
		}
	}
	p := st.mustStatus(t, req{method: "GET", path: "/v1/sessions/nope", token: appToken}, http.StatusNotFound).problem(t)
	if p.Code != session.CodeNotFound {
		t.Fatalf("problem %+v", p)
	}
	// The access log names the session.
	if !strings.Contains(st.logText(), "session="+v.ID) {
		t.Fatalf("access log without the session")
	}
}

func TestCreateIdempotency(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	key := newKey()
	post := func(body, key string) response {
		h := map[string]string{}
		if key != "" {
			h["Idempotency-Key"] = key
		}
		return st.do(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: body, header: h})
	}

	first := post(createBody("CP1", 1), key)
	if first.status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	// The same body, spelt differently (order, spaces): the same answer, byte for byte.
	again := post(` { "max_amount_fen":5000, "openid":"oUser_CP1_1", "connector":1, "charger_id":"CP1" } `, key)
	if again.status != http.StatusCreated || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s (replayed %q)", again.status, again.body, again.header.Get("Idempotent-Replayed"))
	}
	var list SessionList
	st.mustStatus(t, req{method: "GET", path: "/v1/sessions", token: operatorToken}, http.StatusOK).json(t, &list)
	if len(list.Sessions) != 1 || len(st.sb.Orders()) != 1 {
		t.Fatalf("%d sessions, %d orders after a replay", len(list.Sessions), len(st.sb.Orders()))
	}

	// Another body with the key: 409.
	other := post(createBody("CP1", 2), key)
	if p := other.problem(t); other.status != http.StatusConflict || p.Code != session.CodeConflict || !strings.Contains(p.Detail, "Idempotency-Key") {
		t.Fatalf("other body: %d %+v", other.status, p)
	}
	// The same key from another caller is another key.
	otherCaller := st.do(t, req{method: "POST", path: "/v1/sessions", token: operatorToken, body: createBody("CP1", 2),
		header: map[string]string{"Idempotency-Key": key}})
	if otherCaller.status != http.StatusCreated {
		t.Fatalf("operator with the app's key: %d %s", otherCaller.status, otherCaller.body)
	}

	// No key: 400 naming the header.
	nokey := post(createBody("CP1", 2), "")
	if p := nokey.problem(t); nokey.status != http.StatusBadRequest || p.Errors["Idempotency-Key"] == "" {
		t.Fatalf("no key: %d %+v", nokey.status, p)
	}
	long := post(createBody("CP1", 2), strings.Repeat("k", 300))
	if long.status != http.StatusBadRequest {
		t.Fatalf("long key: %d", long.status)
	}

	// A client error found before anything was done is not kept: the key
	// can be used again once the request is fixed.
	key2 := newKey()
	if r := post(createBody("NOPE", 1), key2); r.status != http.StatusNotFound {
		t.Fatalf("unknown charger: %d %s", r.status, r.body)
	}
	st.setup(t, "NOPE")
	if r := post(createBody("NOPE", 1), key2); r.status != http.StatusCreated {
		t.Fatalf("after registering: %d %s", r.status, r.body)
	}
}

// storeKeyAndHash mirrors session.Engine.CreateIdempotent's record key and request hash.
func storeKeyAndHash(t *testing.T, c caller, key string, req session.CreateRequest) (string, string) {
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("POST /v1/sessions\n" + c.role.String() + "\n" + c.name + "\n" + string(b)))
	return "create-session\x00" + c.role.String() + "\x00" + c.name + "\x00" + key, hex.EncodeToString(sum[:])
}

func TestCreateIdempotencyInFlightAndRetry(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	app := caller{role: roleApp, name: "miniprogram"}
	body := session.CreateRequest{ChargerID: "CP1", Connector: 1, OpenID: "oUser_CP1_1", MaxAmountFen: 5000}

	// A record without an answer: the first request is being served.
	key := newKey()
	sk, hash := storeKeyAndHash(t, app, key, body)
	if _, created, err := st.store.PutIdempotency(bg, sk, hash, session.DefaultIdempotencyTTL); err != nil || !created {
		t.Fatal(created, err)
	}
	r := st.do(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 1), header: map[string]string{"Idempotency-Key": key}})
	if p := r.problem(t); r.status != http.StatusConflict || !strings.Contains(p.Detail, "still being served") {
		t.Fatalf("in flight: %d %+v", r.status, p)
	}
	// The same record, abandoned (older than InFlightTimeout) with its id
	// saved: a retry creates the session under that very id.
	abandoned := newServer(st.deps(st.newEngine(st.pay, func(c *session.Config) { c.InFlightTimeout = time.Nanosecond })))
	id := session.NewID(time.Now())
	if err := st.store.SaveIdempotentResponse(bg, sk, store.IdemRecord{RequestHash: hash, SessionID: id}); err != nil {
		t.Fatal(err)
	}
	base := st.serveHandler(abandoned)
	var v session.View
	st.mustStatus(t, req{base: base, method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 1),
		header: map[string]string{"Idempotency-Key": key}}, http.StatusCreated).json(t, &v)
	if v.ID != id {
		t.Fatalf("abandoned record: session %s, want the record's %s", v.ID, id)
	}

	// A temporary failure keeps the id: Pay Score executed the create but
	// the reply was lost (502 → uncertain → 503 to the client). The retry
	// uses the same id, so the same req_seq_id: the order is not created twice.
	if err := st.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultExecuted5xx); err != nil {
		t.Fatal(err)
	}
	key2 := newKey()
	r = st.do(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 2), header: map[string]string{"Idempotency-Key": key2}})
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || p.Code != session.CodeUnavailable {
		t.Fatalf("lost reply: %d %+v", r.status, p)
	}
	sk2, hash2 := storeKeyAndHash(t, app, key2, session.CreateRequest{ChargerID: "CP1", Connector: 2, OpenID: "oUser_CP1_2", MaxAmountFen: 5000})
	rec, created, err := st.store.PutIdempotency(bg, sk2, hash2, time.Hour)
	if err != nil || created || rec.SessionID == "" {
		t.Fatalf("record after a 503: %+v created=%v err=%v", rec, created, err)
	}
	orders := len(st.sb.Orders())
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 2),
		header: map[string]string{"Idempotency-Key": key2}}, http.StatusCreated).json(t, &v)
	if v.ID != rec.SessionID || len(st.sb.Orders()) != orders {
		t.Fatalf("retry: session %s (record %s), orders %d → %d", v.ID, rec.SessionID, orders, len(st.sb.Orders()))
	}
	o, _ := st.sb.Order(v.OutOrderNo)
	if o.ReqSeqID != payscore.ReqSeqID(rec.SessionID, payscore.StepCreate, 1, o.ReqDate) {
		t.Fatalf("order %+v", o)
	}
}

func TestCreateErrors(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1", "CP2", "CP3")
	post := func(body string) response {
		return st.do(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: body, header: map[string]string{"Idempotency-Key": newKey()}})
	}
	check := func(name string, r response, status int, code string) Problem {
		t.Helper()
		p := r.problem(t)
		if r.status != status || p.Code != code {
			t.Fatalf("%s: %d %+v, want %d %s", name, r.status, p, status, code)
		}
		return p
	}
	check("unknown charger", post(createBody("UNKNOWN", 1)), http.StatusNotFound, session.CodeNotFound)
	check("unknown connector", post(createBody("CP1", 9)), http.StatusNotFound, session.CodeNotFound)

	st.setOnline(t, "CP2", false, nil)
	p := check("offline", post(createBody("CP2", 1)), http.StatusConflict, session.CodeConflict)
	if !strings.Contains(p.Detail, "offline") {
		t.Fatalf("offline detail %q", p.Detail)
	}
	st.setOnline(t, "CP3", true, map[int]string{1: "faulted"})
	check("faulted", post(createBody("CP3", 1)), http.StatusConflict, session.CodeConflict)

	v := st.create(t, "CP1", 1)
	p = check("busy", post(createBody("CP1", 1)), http.StatusConflict, session.CodeConflict)
	if !strings.Contains(p.Detail, v.ID) {
		t.Fatalf("busy detail %q", p.Detail)
	}

	p = check("invalid", post(`{"charger_id":"","connector":0,"openid":"","max_amount_fen":-1}`), http.StatusBadRequest, session.CodeInvalid)
	for _, f := range []string{"charger_id", "connector", "openid", "max_amount_fen"} {
		if p.Errors[f] == "" {
			t.Errorf("no message for %s: %+v", f, p.Errors)
		}
	}
	check("over the cap", post(`{"charger_id":"CP1","connector":2,"openid":"o","max_amount_fen":100000000}`), http.StatusBadRequest, session.CodeInvalid)

	// Pay Score refuses: an engine whose merchant identity the sandbox does
	// not know (22000002) gets a definite refusal → 502 payment_refused,
	// which is the key's answer from then on.
	cfg := st.cfg
	cfg.HuifuID = "6666000199999999"
	refusing, err := payscore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := st.serve(st.deps(st.newEngine(refusing)))
	key := newKey()
	q := req{base: base, method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 2), header: map[string]string{"Idempotency-Key": key}}
	r := st.do(t, q)
	p = check("refused", r, http.StatusBadGateway, session.CodePaymentRefused)
	if !strings.Contains(p.Detail, "refused") {
		t.Fatalf("refused detail %q", p.Detail)
	}
	again := st.do(t, q)
	if again.status != http.StatusBadGateway || !bytes.Equal(again.body, r.body) && again.problem(t).Detail != p.Detail {
		t.Fatalf("refusal replay: %d %s", again.status, again.body)
	}
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("refusal not replayed")
	}
}

func TestStopAndCancel(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")

	// Before charging: stop is refused, cancel works (and again is a no-op).
	a := st.create(t, "CP1", 1)
	r := st.do(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/stop", token: appToken})
	if p := r.problem(t); r.status != http.StatusConflict || !strings.Contains(p.Detail, "cancel") {
		t.Fatalf("stop before charging: %d %+v", r.status, p)
	}
	var v session.View
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/cancel", token: appToken}, http.StatusOK).json(t, &v)
	if v.State != fsm.Cancelled || v.CancelReason != fsm.ReasonUserCancelled || v.History[len(v.History)-1].By != fsm.ByApp {
		t.Fatalf("cancelled view %+v", v)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/cancel", token: appToken}, http.StatusOK)

	// Charging: cancel → 409, stop → 202 stopping (an operator's stop is audited as such).
	b := st.create(t, "CP1", 1)
	st.charging(t, b.ID)
	r = st.do(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/cancel", token: appToken})
	if p := r.problem(t); r.status != http.StatusConflict || p.Code != session.CodeConflict {
		t.Fatalf("cancel while charging: %d %+v", r.status, p)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/stop", token: operatorToken}, http.StatusAccepted).json(t, &v)
	if v.State != fsm.Stopping || v.History[len(v.History)-1].By != fsm.Operator("alice") {
		t.Fatalf("stopped view %+v", v.History)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/stop", token: appToken}, http.StatusAccepted).json(t, &v)
	if v.State != fsm.Stopping {
		t.Fatalf("second stop: %s", v.State)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/nope/stop", token: appToken}, http.StatusNotFound)
}

func TestListSessions(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1", "CP2")
	var ids []string
	for _, c := range []struct {
		cp   string
		conn int
	}{{"CP1", 1}, {"CP1", 2}, {"CP2", 1}, {"CP2", 2}} {
		ids = append(ids, st.create(t, c.cp, c.conn).ID)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + ids[0] + "/cancel", token: appToken}, http.StatusOK)
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + ids[3] + "/close", token: operatorToken, body: `{"reason":"stuck"}`}, http.StatusOK)

	list := func(query string) SessionList {
		t.Helper()
		r := st.mustStatus(t, req{method: "GET", path: "/v1/sessions" + query, token: operatorToken}, http.StatusOK)
		if bytes.Contains(r.body, []byte(`"history"`)) {
			t.Fatalf("list items carry history: %s", r.body)
		}
		var l SessionList
		r.json(t, &l)
		return l
	}
	idsOf := func(l SessionList) []string {
		var out []string
		for _, s := range l.Sessions {
			out = append(out, s.ID)
		}
		return out
	}

	// Paging newest first, one at a time.
	var paged []string
	cursor := ""
	for range 10 {
		l := list("?limit=1&cursor=" + cursor)
		paged = append(paged, idsOf(l)...)
		if cursor = l.NextCursor; cursor == "" {
			break
		}
	}
	want := []string{ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Fatalf("paged %v, want %v", paged, want)
	}
	if got := idsOf(list("?state=cancelled")); fmt.Sprint(got) != fmt.Sprint([]string{ids[3], ids[0]}) {
		t.Fatalf("state=cancelled: %v", got)
	}
	if got := idsOf(list("?charger_id=CP1&state=created")); fmt.Sprint(got) != fmt.Sprint([]string{ids[1]}) {
		t.Fatalf("charger CP1 created: %v", got)
	}
	if got := idsOf(list("?flag=closed_by_operator")); fmt.Sprint(got) != fmt.Sprint([]string{ids[3]}) {
		t.Fatalf("flag: %v", got)
	}

	r := st.do(t, req{method: "GET", path: "/v1/sessions?state=flying&flag=odd&limit=0&cursor=%25%25", token: operatorToken})
	p := r.problem(t)
	if r.status != http.StatusBadRequest || p.Errors["state"] == "" || p.Errors["flag"] == "" || p.Errors["limit"] == "" || p.Errors["cursor"] == "" {
		t.Fatalf("bad filters: %d %+v", r.status, p)
	}
}

func TestCloseDeductRefund(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")

	// Close a session waiting for confirmation: cancelled, flagged, audited.
	a := st.create(t, "CP1", 1)
	r := st.do(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/close", token: operatorToken, body: `{"reason":" "}`})
	if p := r.problem(t); r.status != http.StatusBadRequest || p.Errors["reason"] == "" {
		t.Fatalf("close without reason: %d %+v", r.status, p)
	}
	var v session.View
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/close", token: operatorToken, body: `{"reason":"user left"}`}, http.StatusOK).json(t, &v)
	last := v.History[len(v.History)-1]
	if v.State != fsm.Cancelled || len(v.Flags) != 1 || v.Flags[0] != fsm.FlagClosedByOperator || last.By != fsm.Operator("alice") || last.Note != "user left" {
		t.Fatalf("closed %+v", v)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/close", token: operatorToken, body: `{"reason":"again"}`}, http.StatusConflict)
	// The app may not close.
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/close", token: appToken, body: `{"reason":"x"}`}, http.StatusForbidden)

	// Deduct: refused while an attempt is in flight, accepted when idle.
	b := st.create(t, "CP1", 1)
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/deduct", token: operatorToken}, http.StatusConflict)
	st.charging(t, b.ID)
	st.apply(t, b.ID, fsm.Event{Type: fsm.EvEnded, By: fsm.ByCharger, ChargerTime: time.Now(), MeterWh: 6000})
	st.apply(t, b.ID, fsm.Event{Type: fsm.EvOrderCompleted, By: fsm.ByPayScore})
	r = st.do(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/deduct", token: operatorToken})
	if p := r.problem(t); r.status != http.StatusConflict || !strings.Contains(p.Detail, "in flight") {
		t.Fatalf("deduct in flight: %d %+v", r.status, p)
	}
	st.apply(t, b.ID, fsm.Event{Type: fsm.EvDeductionRegistered, By: fsm.ByPayScore, Deduction: 1, OutTradeNo: "T1", HfSeqID: "H1"})
	st.apply(t, b.ID, fsm.Event{Type: fsm.EvDebitFailed, By: fsm.ByPayScore, Deduction: 1, Reason: "balance"})
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/deduct", token: operatorToken}, http.StatusAccepted).json(t, &v)
	if v.State != fsm.Completed || v.Payment.Attempts != 2 {
		t.Fatalf("after deduct: %s %+v", v.State, v.Payment)
	}

	// Refund: only a paid session; bounded by what was paid.
	refund := func(body string) response {
		return st.do(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/refund", token: operatorToken, body: body})
	}
	if r := refund(`{"amount_fen":10,"reason":"goodwill"}`); r.status != http.StatusConflict {
		t.Fatalf("refund before paid: %d %s", r.status, r.body)
	}
	st.apply(t, b.ID, fsm.Event{Type: fsm.EvDeductionRegistered, By: fsm.ByPayScore, Deduction: 2, OutTradeNo: "T2", HfSeqID: "H2"})
	st.apply(t, b.ID, fsm.Event{Type: fsm.EvPaid, By: fsm.ByPayScore, HfSeqID: "D2", ReqDate: "20250601"})
	r = refund(`{"amount_fen":0,"reason":""}`)
	if p := r.problem(t); r.status != http.StatusBadRequest || p.Errors["amount_fen"] == "" || p.Errors["reason"] == "" {
		t.Fatalf("empty refund: %d %+v", r.status, p)
	}
	paid := st.view(t, b.ID)
	if r := refund(fmt.Sprintf(`{"amount_fen":%d,"reason":"too much"}`, paid.Payment.PaidFen+1)); r.status != http.StatusConflict {
		t.Fatalf("refund over paid: %d %s", r.status, r.body)
	}
	r = refund(`{"amount_fen":100,"reason":"goodwill"}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("refund: %d %s", r.status, r.body)
	}
	r.json(t, &v)
	if v.State != fsm.Paid || len(v.Refunds) != 1 || v.Refunds[0].Status != fsm.RefundPending || v.Refunds[0].By != fsm.Operator("alice") || v.Refunds[0].AmountFen != 100 {
		t.Fatalf("refunds %+v", v.Refunds)
	}
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/refund", token: appToken, body: `{"amount_fen":1,"reason":"x"}`}, http.StatusForbidden)
}

// TestConcurrentRetries: the same key sent many times at once creates one
// session; every answer is that session (201, identical) or "still being
// served" (409).
func TestConcurrentRetries(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	key := newKey()
	const n = 8
	results := make(chan response, n)
	for range n {
		go func() {
			results <- st.do(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CP1", 1),
				header: map[string]string{"Idempotency-Key": key}})
		}()
	}
	var created []byte
	for range n {
		r := <-results
		switch r.status {
		case http.StatusCreated:
			if created != nil && !bytes.Equal(created, r.body) {
				t.Fatalf("two different answers:\n%s\n%s", created, r.body)
			}
			created = r.body
		case http.StatusConflict:
			if p := r.problem(t); !strings.Contains(p.Detail, "still being served") {
				t.Fatalf("conflict %+v", p)
			}
		default:
			t.Fatalf("status %d %s", r.status, r.body)
		}
	}
	if created == nil {
		t.Fatal("no request created the session")
	}
	if len(st.sb.Orders()) != 1 {
		t.Fatalf("%d Pay Score orders", len(st.sb.Orders()))
	}
}

// TestWithEngineRunning drives a session with the engine's workers running
// and the sandbox playing the user: the sandbox's own signed notification
// reaches the API and confirms the session; the app's cancel makes the
// engine revoke the Pay Score order.
func TestWithEngineRunning(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { defer close(done); st.eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	st.setup(t, "CP1")
	v := st.create(t, "CP1", 1)
	if err := st.sb.Confirm(v.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the confirmation", func() bool { return st.view(t, v.ID).State == fsm.UserConfirmed })
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + v.ID + "/cancel", token: appToken}, http.StatusOK)
	waitFor(t, "the order's revocation", func() bool {
		o, _ := st.sb.Order(v.OutOrderNo)
		return o.State == payscore.StateRevoked
	})
	if d := st.sb.Deliveries(); len(d) == 0 {
		t.Fatal("the sandbox delivered nothing")
	}
}

// waitFor polls cond for up to 15 s (a bound, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 15 s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
