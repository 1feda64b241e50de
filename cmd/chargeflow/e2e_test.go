package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// scenario is one end-to-end story on its own charger of a shared stack.
type scenario struct {
	name string
	run  func(t *testing.T, s *stack, cp string)
}

var scenarios = []scenario{
	{"happy path to paid", happyPath},
	{"duplicate and forged notifications", notifications},
	{"lost payment notification settled by polling", lostPaymentNotification},
	{"start rejected", startRejected},
	{"start timeout", startTimeout},
	{"charger ends by itself", chargerEnds},
	{"charger offline past grace", chargerOffline},
	{"clock skew", clockSkew},
	{"debit failures then success", debitFailures},
	{"user pays themselves", userPays},
	{"refund", refund},
	{"cancel before charging", cancelBeforeCharging},
	{"idempotency key", idempotency},
	{"auth", auth},
	{"malformed JSON and MQTT garbage", garbage},
	{"payment refused at create", paymentRefused},
}

// TestEndToEnd runs every scenario against the real service on both
// backends: Redis + Mosquitto, and the embedded store and broker.
func TestEndToEnd(t *testing.T) {
	for _, backend := range []string{"external", "embedded"} {
		t.Run(backend, func(t *testing.T) {
			s := newStack(t, backend, len(scenarios))
			for i, sc := range scenarios {
				cp := fmt.Sprintf("CP-%d", i+1)
				t.Run(sc.name, func(t *testing.T) {
					s.t = t
					sc.run(t, s, cp)
				})
			}
			s.t = t
			// Nothing secret is ever logged.
			for _, secret := range []string{appToken, opsToken, s.sb.MerchantPrivateKey()[100:140], simPW} {
				if strings.Contains(s.errOut.String(), secret) {
					t.Errorf("the service log contains a secret (%.8s…)", secret)
				}
			}
			// Restarting keeps every session.
			before := s.listAll()
			s.restart()
			after := s.listAll()
			if len(after) != len(before) || len(before) == 0 {
				t.Fatalf("after restart %d sessions, before %d", len(after), len(before))
			}
			for id, st := range before {
				if after[id] != st {
					t.Errorf("session %s: %s before restart, %s after", id, st, after[id])
				}
			}
		})
	}
}

func (s *stack) listAll() map[string]string {
	s.t.Helper()
	out := map[string]string{}
	cursor := ""
	for {
		var page struct {
			Sessions []view `json:"sessions"`
			Next     string `json:"next_cursor"`
		}
		body := s.mustDo("GET", "/v1/sessions?limit=7&cursor="+url.QueryEscape(cursor), opsToken, nil, 200)
		if err := json.Unmarshal(body, &page); err != nil {
			s.t.Fatal(err)
		}
		for _, v := range page.Sessions {
			out[v.ID] = v.State
		}
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}

// checkPaid checks a paid session against the tariff, the sandbox's order
// and its ledger, to the fen.
func checkPaid(t *testing.T, s *stack, v view) {
	t.Helper()
	if v.State != "paid" || v.AmountFen <= 0 || v.Payment.PaidFen != v.AmountFen {
		t.Fatalf("not paid right: %+v", v)
	}
	var sum int64
	for _, l := range v.Lines {
		sum += l.AmountFen
	}
	if len(v.Lines) != 2 || v.Lines[0].Name != money.LineEnergy || v.Lines[1].Name != money.LineService || sum != v.AmountFen {
		t.Fatalf("lines %+v do not add up to %d", v.Lines, v.AmountFen)
	}
	if v.AmountFen > v.MaxAmountFen {
		t.Fatalf("amount %d over the cap %d", v.AmountFen, v.MaxAmountFen)
	}
	o, ok := s.sb.Order(v.OutOrderNo)
	if !ok || o.State != payscore.StateDone || int64(o.Total) != v.AmountFen || o.Completes != 1 {
		t.Fatalf("sandbox order %+v, session amount %d", o, v.AmountFen)
	}
	if v.EndTime == nil || !o.EndTime.Equal(*v.EndTime) {
		t.Fatalf("end_time: sandbox %s, session %v", o.EndTime, v.EndTime)
	}
	if v.StartedAt == nil || !v.EndTime.After(*v.StartedAt) {
		t.Fatalf("end_time %v not after start %v", v.EndTime, v.StartedAt)
	}
	if l := s.ledger(v.OutOrderNo); int64(l.Collected) != v.AmountFen {
		t.Fatalf("ledger collected %d, billed %d", l.Collected, v.AmountFen)
	}
}

func happyPath(t *testing.T, s *stack, cp string) {
	c := s.fleet.Charger(cp)
	if err := c.Plug(1); err != nil {
		t.Fatal(err)
	}
	v := s.create(cp, 5000)
	if v.Package == "" {
		t.Error("no package for wx.openBusinessView")
	}
	// Nobody gets energy before confirming: wait through several polls and
	// check at the charger.
	time.Sleep(1500 * time.Millisecond)
	if n := s.startsFor(cp, v.ID); n != 0 {
		t.Fatalf("charger got %d start commands before the user confirmed", n)
	}
	if got := s.get(v.ID).State; got != "created" {
		t.Fatalf("state %s before confirmation", got)
	}
	if err := s.sb.Confirm(v.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	s.waitState(v.ID, "charging")
	if n := s.startsFor(cp, v.ID); n != 1 {
		t.Fatalf("%d start commands, want 1", n)
	}
	s.waitFor("energy", func() bool { si, ok := c.Session(1); return ok && c.Register(1) > si.StartWh+200 })
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid")
	checkPaid(t, s, v)
	// end_time is the charger's measured stop time (credible clock).
	if v.EndedAt == nil || !v.EndTime.Equal(v.EndedAt.Truncate(time.Second)) {
		t.Fatalf("end_time %v, measured stop %v", v.EndTime, v.EndedAt)
	}
	// The bill is the tariff on the energy the charger measured.
	si := v
	if si.EnergyWh <= 0 {
		t.Fatalf("energy %d", si.EnergyWh)
	}
	want := []string{"create", "confirm", "started", "stop", "ended", "order_completed", "deduction_registered", "paid"}
	var got []string
	for _, h := range v.History {
		got = append(got, h.Event)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("history %v, want %v", got, want)
	}
}

func notifications(t *testing.T, s *stack, cp string) {
	s.sb.DuplicateNotifications(true)
	defer s.sb.DuplicateNotifications(false)
	v := s.charge(cp, 5000)
	// A forged notification (signed with another key) is refused and changes nothing.
	forger := payscoretest.HuifuKeys(t)
	form := payscoretest.SignedForm(t, forger.Signer, payscoretest.PaymentSucceeded("FAKE1", "20261126", v.OutOrderNo, "HFFAKE", "0.01"))
	code, body := s.do("POST", "/notify/huifu/payscore", "", form, "Content-Type", "application/x-www-form-urlencoded")
	if code != 401 {
		t.Fatalf("forged notification: %d %s", code, body)
	}
	if got := s.get(v.ID); got.State != "charging" || got.PaidAt != nil {
		t.Fatalf("forged notification changed the session: %s", got.State)
	}
	// No signature at all.
	code, _ = s.do("POST", "/notify/huifu/payscore", "", "resp_data=%7B%7D", "Content-Type", "application/x-www-form-urlencoded")
	if code != 401 {
		t.Fatalf("unsigned notification: %d", code)
	}
	s.fleet.Charger(cp).StopLocal(1)
	v = s.waitState(v.ID, "paid")
	checkPaid(t, s, v)
	// Every notification was delivered twice and acknowledged exactly.
	s.waitFor("deliveries acknowledged", func() bool {
		n := 0
		for _, d := range s.sb.Deliveries() {
			if d.OutOrderNo == v.OutOrderNo && d.Acked {
				n++
			}
		}
		return n >= 4
	})
	if got := s.get(v.ID); got.Payment.PaidFen != v.AmountFen || len(got.History) != len(v.History) {
		t.Fatalf("duplicate notifications changed the session")
	}
}

func lostPaymentNotification(t *testing.T, s *stack, cp string) {
	v := s.charge(cp, 5000)
	s.sb.LoseNotifications(10) // every notification of what follows is lost
	defer s.sb.LoseNotifications(0)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid") // found by the poll
	checkPaid(t, s, v)
}

func startRejected(t *testing.T, s *stack, cp string) {
	c := s.fleet.Charger(cp)
	c.RejectStart("busy")
	defer c.RejectStart("")
	_ = c.Plug(1)
	v := s.create(cp, 5000)
	_ = s.sb.Confirm(v.OutOrderNo)
	v = s.waitState(v.ID, "cancelled")
	if v.CancelReason != "charger_rejected" {
		t.Fatalf("cancel reason %q", v.CancelReason)
	}
	s.waitFor("order revoked", func() bool { o, _ := s.sb.Order(v.OutOrderNo); return o.State == payscore.StateRevoked })
	if l := s.ledger(v.OutOrderNo); l.Collected != 0 {
		t.Fatalf("collected %d", l.Collected)
	}
}

func startTimeout(t *testing.T, s *stack, cp string) {
	c := s.fleet.Charger(cp)
	c.NeverStart(true)
	defer c.NeverStart(false)
	_ = c.Plug(1)
	v := s.create(cp, 5000)
	_ = s.sb.Confirm(v.OutOrderNo)
	v = s.waitState(v.ID, "cancelled")
	if v.CancelReason != "charger_never_started" {
		t.Fatalf("cancel reason %q", v.CancelReason)
	}
	s.waitFor("order revoked", func() bool { o, _ := s.sb.Order(v.OutOrderNo); return o.State == payscore.StateRevoked })
}

func chargerEnds(t *testing.T, s *stack, cp string) {
	v := s.charge(cp, 5000)
	time.Sleep(1500 * time.Millisecond) // long enough that the stop is a second after the start
	_ = s.fleet.Charger(cp).Unplug(1)   // ev_disconnected
	v = s.waitState(v.ID, "paid")
	checkPaid(t, s, v)
	if v.EndedAt == nil || !v.EndTime.Equal(v.EndedAt.Truncate(time.Second)) {
		t.Fatalf("end_time %v, measured stop %v", v.EndTime, v.EndedAt)
	}
}

func chargerOffline(t *testing.T, s *stack, cp string) {
	v := s.charge(cp, 5000)
	c := s.fleet.Charger(cp)
	c.Kill() // the will fires; the charger keeps its session in NVM
	s.waitCharger(cp, false)
	v = s.waitState(v.ID, "paid") // after the grace, billed with the last register
	if !v.hasFlag("charger_offline") {
		t.Fatalf("flags %v", v.Flags)
	}
	checkPaid(t, s, v)
	// It comes back and sends what it queued: the bill does not change.
	if err := c.PowerOn(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.waitCharger(cp, true)
	s.waitFor("queue sent", func() bool { return len(c.Pending()) == 0 })
	if got := s.get(v.ID); got.AmountFen != v.AmountFen || got.State != "paid" {
		t.Fatalf("late ended changed the bill: %d → %d", v.AmountFen, got.AmountFen)
	}
}

func clockSkew(t *testing.T, s *stack, cp string) {
	// Two hours slow: its started/ended times are not credible (before the
	// start was sent), so our receive times are used and the session is
	// flagged. (A fast clock would make the charger refuse every start as
	// past its deadline — which is the protocol working.)
	c := s.fleet.Charger(cp)
	c.ClockSkew(-2 * time.Hour)
	defer c.ClockSkew(0)
	v := s.charge(cp, 5000)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid")
	if !v.hasFlag("clock_skew") {
		t.Fatalf("flags %v", v.Flags)
	}
	checkPaid(t, s, v) // the sandbox refused no end_time in the future
	if v.EndTime.After(time.Now()) {
		t.Fatalf("end_time %s in the future", v.EndTime)
	}
}

func debitFailures(t *testing.T, s *stack, cp string) {
	v := s.charge(cp, 5000)
	s.sb.FailDebits(2)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid")
	checkPaid(t, s, v)
	if v.Payment.Attempts != 3 || v.Payment.Failures != 2 {
		t.Fatalf("payment %+v, want 3 attempts and 2 failures", v.Payment)
	}
	o, _ := s.sb.Order(v.OutOrderNo)
	if len(o.Registrations) != 3 {
		t.Fatalf("%d registrations, want a new one per attempt", len(o.Registrations))
	}
}

func userPays(t *testing.T, s *stack, cp string) {
	v := s.charge(cp, 5000)
	s.sb.FailDebits(1000) // every debit fails silently
	defer s.sb.FailDebits(0)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	s.waitFor("a failed debit", func() bool { return s.get(v.ID).Payment.Failures >= 1 })
	if err := s.sb.PayByUser(v.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	v = s.waitState(v.ID, "paid")
	checkPaid(t, s, v) // collected exactly once
}

func refund(t *testing.T, s *stack, cp string) {
	v := s.charge(cp, 5000)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid")
	// The app may not refund.
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/refund", appToken, map[string]any{"amount_fen": 1, "reason": "x"}, 403)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/refund", opsToken, map[string]any{"amount_fen": v.AmountFen + 1, "reason": "too much"}, 409)
	// Submitted twice with one Idempotency-Key: one refund.
	for range 2 {
		s.mustDo("POST", "/v1/sessions/"+v.ID+"/refund", opsToken, map[string]any{"amount_fen": 1, "reason": "goodwill"}, 202,
			"Idempotency-Key", "refund-"+v.ID)
	}
	s.waitFor("partial refund", func() bool {
		g := s.get(v.ID)
		return len(g.Refunds) == 1 && g.Refunds[0].Status == "succeeded"
	})
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/refund", opsToken, map[string]any{"amount_fen": v.AmountFen - 1, "reason": "broken cable"}, 202)
	v = s.waitState(v.ID, "refunded")
	if l := s.ledger(v.OutOrderNo); int64(l.Refunded) != v.AmountFen || int64(l.Collected) != v.AmountFen {
		t.Fatalf("ledger %+v, amount %d", l, v.AmountFen)
	}
}

func cancelBeforeCharging(t *testing.T, s *stack, cp string) {
	_ = s.fleet.Charger(cp).Plug(1)
	v := s.create(cp, 5000)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/cancel", appToken, nil, 200)
	v = s.waitState(v.ID, "cancelled")
	if v.CancelReason != "user_cancelled" {
		t.Fatalf("reason %q", v.CancelReason)
	}
	s.waitFor("order revoked", func() bool { o, _ := s.sb.Order(v.OutOrderNo); return o.State == payscore.StateRevoked })
	// A late confirmation never starts the charger.
	_ = s.sb.Confirm(v.OutOrderNo)
	time.Sleep(time.Second)
	if n := s.startsFor(cp, v.ID); n != 0 {
		t.Fatalf("%d starts after cancel", n)
	}
	// Cancel after charging is a conflict.
	w := s.charge(cp, 5000)
	s.mustDo("POST", "/v1/sessions/"+w.ID+"/cancel", appToken, nil, 409)
	s.mustDo("POST", "/v1/sessions/"+w.ID+"/stop", appToken, nil, 202)
	s.waitState(w.ID, "paid")
}

func idempotency(t *testing.T, s *stack, cp string) {
	_ = s.fleet.Charger(cp).Plug(1)
	body := map[string]any{"charger_id": cp, "connector": 1, "openid": "o-idem", "max_amount_fen": 3000}
	key := "idem-" + cp
	code1, out1 := s.do("POST", "/v1/sessions", appToken, body, "Idempotency-Key", key)
	code2, out2 := s.do("POST", "/v1/sessions", appToken, body, "Idempotency-Key", key)
	if code1 != 201 || code2 != 201 || string(out1) != string(out2) {
		t.Fatalf("replay: %d %s / %d %s", code1, out1, code2, out2)
	}
	body["max_amount_fen"] = 4000
	s.mustDo("POST", "/v1/sessions", appToken, body, 409, "Idempotency-Key", key)
	s.mustDo("POST", "/v1/sessions", appToken, body, 400) // no key
	if n := len(s.sb.Orders()); n == 0 {
		t.Fatal("no order")
	}
	var v view
	_ = json.Unmarshal(out1, &v)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/cancel", appToken, nil, 200)
}

func auth(t *testing.T, s *stack, cp string) {
	s.mustDo("GET", "/v1/sessions", "", nil, 401)
	s.mustDo("GET", "/v1/sessions", "wrong-token", nil, 401)
	s.mustDo("GET", "/v1/sessions", appToken, nil, 403)
	s.mustDo("PUT", "/v1/chargers/"+cp, appToken, map[string]any{"connectors": []int{1}}, 403)
	s.mustDo("GET", "/v1/sessions", opsToken, nil, 200)
	code, body := s.do("GET", "/v1/sessions/nope", "", nil)
	if code != 401 || !strings.Contains(string(body), `"unauthorized"`) {
		t.Fatalf("%d %s", code, body)
	}
}

func garbage(t *testing.T, s *stack, cp string) {
	code, body := s.do("POST", "/v1/sessions", appToken, `{"charger_id": "CP-1", "connector": `, "Idempotency-Key", "garbage-1")
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if code != 400 || json.Unmarshal(body, &p) != nil || p.Code != "invalid" {
		t.Fatalf("malformed JSON: %d %s", code, body)
	}
	// Garbage on a charger's topics is stored as an anomaly, never a crash.
	opts := mqtt.NewClientOptions().AddBroker(s.mqtt).SetClientID(cp).SetUsername(cp).SetPassword(simPW).SetCleanSession(true)
	// The simulated charger holds the id; use it after killing the sim.
	c := s.fleet.Charger(cp)
	c.Shutdown()
	cl := mqtt.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer cl.Disconnect(100)
	// A well-formed message about another charger's session.
	var others struct {
		Sessions []view `json:"sessions"`
	}
	_ = json.Unmarshal(s.mustDo("GET", "/v1/sessions?charger_id=CP-1&limit=1", opsToken, nil, 200), &others)
	if len(others.Sessions) != 1 {
		t.Fatal("no session of CP-1 to spoof")
	}
	victim := others.Sessions[0]
	spoof := fmt.Sprintf(`{"event_id":"spoof-1","session_id":%q,"connector":1,"type":"ended","ts":%q,"meter_wh":99999999}`,
		victim.ID, time.Now().Format(time.RFC3339))
	for _, p := range []struct{ topic, payload string }{
		{s.prefix + "/" + cp + "/up/txn", spoof},
		{s.prefix + "/" + cp + "/up/meter", `{"session_id": 42`},
		{s.prefix + "/" + cp + "/up/txn", `{"event_id":"e1","type":"exploded"}`},
		{s.prefix + "/" + cp + "/up/ack", "\x00\xff not json"},
	} {
		if tok := cl.Publish(p.topic, 1, false, p.payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	s.waitFor("anomalies stored", func() bool {
		var page struct {
			Anomalies []struct {
				ChargerID string `json:"charger_id"`
				Reason    string `json:"reason"`
			} `json:"anomalies"`
		}
		body := s.mustDo("GET", "/v1/anomalies?limit=100", opsToken, nil, 200)
		_ = json.Unmarshal(body, &page)
		n := 0
		for _, a := range page.Anomalies {
			if a.ChargerID == cp && a.Reason != "" {
				n++
			}
		}
		return n >= 4
	})
	if got := s.get(victim.ID); got.State != victim.State || got.EnergyWh != victim.EnergyWh {
		t.Fatalf("another charger's message changed session %s: %s/%d → %s/%d", victim.ID, victim.State, victim.EnergyWh, got.State, got.EnergyWh)
	}
	s.mustDo("GET", "/healthz", "", nil, 200)
}

func paymentRefused(t *testing.T, s *stack, cp string) {
	_ = s.fleet.Charger(cp).Plug(1)
	if err := s.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultRefuse); err != nil {
		t.Fatal(err)
	}
	code, body := s.do("POST", "/v1/sessions", appToken, map[string]any{"charger_id": cp, "connector": 1, "openid": "o", "max_amount_fen": 100},
		"Idempotency-Key", "refused-"+cp)
	if code != 502 || !strings.Contains(string(body), "payment_refused") {
		t.Fatalf("%d %s", code, body)
	}
	// Unknown charger, unknown connector.
	s.mustDo("POST", "/v1/sessions", appToken, map[string]any{"charger_id": "NOPE", "connector": 1, "openid": "o", "max_amount_fen": 100}, 404, "Idempotency-Key", "nope-1")
	s.mustDo("POST", "/v1/sessions", appToken, map[string]any{"charger_id": cp, "connector": 9, "openid": "o", "max_amount_fen": 100}, 404, "Idempotency-Key", "nope-2")
}
