package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
	"github.com/chargeflow/chargeflow/session"
)

// postForm posts a notification form body to the API.
func (st *stack) postForm(t *testing.T, body string) response {
	t.Helper()
	return st.do(t, req{method: "POST", path: "/notify/huifu/payscore", body: body,
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
}

func TestNotify(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	v := st.create(t, "CP1", 1)
	o, _ := st.sb.Order(v.OutOrderNo)
	reqSeq := payscore.ReqSeqID(v.ID, payscore.StepCreate, 1, o.ReqDate)
	fields := payscoretest.UserConfirmed(reqSeq, o.ReqDate, v.OutOrderNo, v.OpenID)

	// Forgeries change nothing: signed by another key, a tampered body, no signature.
	mk, _ := merchantKey()
	other := payscoretest.SignedForm(t, payscore.NewRSASigner(mk), fields)
	good := payscoretest.SignedForm(t, st.keys.Signer, fields)
	form, _ := url.ParseQuery(good)
	tampered := url.Values{"resp_data": {strings.Replace(form.Get("resp_data"), v.OpenID, "oAttacker", 1)}, "sign": {form.Get("sign")}}
	unsigned := url.Values{"resp_data": {form.Get("resp_data")}}
	for name, body := range map[string]string{"other key": other, "tampered": tampered.Encode(), "unsigned": unsigned.Encode()} {
		if r := st.postForm(t, body); r.status != http.StatusUnauthorized {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
	}
	if after := st.view(t, v.ID); after.State != fsm.Created || after.Version != v.Version {
		t.Fatalf("a forged notification changed the session: %s v%d", after.State, after.Version)
	}

	// The real one: 200 and exactly the acknowledgement; the session is confirmed.
	r := st.postForm(t, good)
	if r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_"+reqSeq {
		t.Fatalf("notify: %d %q", r.status, r.body)
	}
	confirmed := st.view(t, v.ID)
	if confirmed.State != fsm.UserConfirmed || confirmed.History[len(confirmed.History)-1].By != fsm.ByPayScore {
		t.Fatalf("after the notification: %s %+v", confirmed.State, confirmed.History)
	}
	// Again (Huifu repeats itself): the same ack, nothing changes.
	r = st.postForm(t, good)
	if r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_"+reqSeq {
		t.Fatalf("duplicate: %d %q", r.status, r.body)
	}
	if again := st.view(t, v.ID); again.Version != confirmed.Version || len(again.History) != len(confirmed.History) {
		t.Fatalf("a duplicate changed the session: v%d → v%d", confirmed.Version, again.Version)
	}

	// A payment notification pays a completed session (the user paid in WeChat).
	st.apply(t, v.ID, fsm.Event{Type: fsm.EvStarted, By: fsm.ByCharger, ChargerTime: time.Now(), MeterWh: 1000})
	st.completed(t, v.ID)
	billed := st.view(t, v.ID)
	paySeq := "USERPAY0001"
	pay := payscoretest.PaymentSucceeded(paySeq, o.ReqDate, v.OutOrderNo, "HFPAY0001", billed.AmountFen.Yuan())
	r = st.postForm(t, payscoretest.SignedForm(t, st.keys.Signer, pay))
	if r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_"+paySeq {
		t.Fatalf("payment notify: %d %q", r.status, r.body)
	}
	if paid := st.view(t, v.ID); paid.State != fsm.Paid || paid.Payment.PaidFen != billed.AmountFen || !paid.Payment.ByUser {
		t.Fatalf("after payment: %s %+v", paid.State, paid.Payment)
	}

	// Too large: 413, nothing read.
	if r := st.postForm(t, "resp_data="+strings.Repeat("x", DefaultMaxBody)); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize: %d", r.status)
	}
	// A notification for an order nobody knows is acknowledged and kept as an anomaly.
	unknown := payscoretest.UserConfirmed("CR0001nobody", o.ReqDate, "SO-UNKNOWN", "o")
	if r := st.postForm(t, payscoretest.SignedForm(t, st.keys.Signer, unknown)); r.status != http.StatusOK {
		t.Fatalf("unknown order: %d", r.status)
	}
	var an AnomalyList
	st.mustStatus(t, req{method: "GET", path: "/v1/anomalies", token: operatorToken}, http.StatusOK).json(t, &an)
	if len(an.Anomalies) == 0 || !strings.Contains(an.Anomalies[0].Reason, "SO-UNKNOWN") {
		t.Fatalf("anomalies %+v", an.Anomalies)
	}
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct{ id, event, data string }

// sseStream reads a stream with a small line parser (the WHATWG rules the
// server relies on: fields, comments, blank line ends an event).
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	pings  chan struct{}
	done   chan struct{}
}

func (st *stack) openSSE(t *testing.T, path string, header map[string]string) *sseStream {
	t.Helper()
	r, err := http.NewRequest("GET", st.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+operatorToken)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	client := &http.Client{Transport: st.http.Transport} // no overall timeout: it is a stream
	resp, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1000), pings: make(chan struct{}, 1000), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" || len(data) > 0 {
					ev.data = strings.Join(data, "\n")
					s.events <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, ":"):
				select {
				case s.pings <- struct{}{}:
				default:
				}
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				switch field {
				case "id":
					ev.id = value
				case "event":
					ev.event = value
				case "data":
					data = append(data, value)
				}
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() {
	s.resp.Body.Close()
	<-s.done
}

func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return sseEvent{}
}

func TestEvents(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")

	live := st.openSSE(t, "/v1/events", nil)
	a := st.create(t, "CP1", 1)
	st.setOnline(t, "CP1", true, map[int]string{1: "occupied"})
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + a.ID + "/cancel", token: appToken}, http.StatusOK)

	var seen []sseEvent
	for range 3 {
		seen = append(seen, live.next(t))
	}
	wantKinds := []string{"session", "charger", "session"}
	for i, ev := range seen {
		if ev.event != wantKinds[i] {
			t.Fatalf("event %d is %q, want %q", i, ev.event, wantKinds[i])
		}
		if i > 0 && !idLess(seen[i-1].id, ev.id) {
			t.Fatalf("ids not increasing: %s then %s", seen[i-1].id, ev.id)
		}
	}
	var v session.View
	if err := json.Unmarshal([]byte(seen[0].data), &v); err != nil || v.ID != a.ID || v.State != fsm.Created {
		t.Fatalf("first event %s (%v)", seen[0].data, err)
	}
	var c session.ChargerView
	if err := json.Unmarshal([]byte(seen[1].data), &c); err != nil || c.ID != "CP1" || !c.Online {
		t.Fatalf("charger event %s (%v)", seen[1].data, err)
	}
	if err := json.Unmarshal([]byte(seen[2].data), &v); err != nil || v.State != fsm.Cancelled {
		t.Fatalf("cancel event %s (%v)", seen[2].data, err)
	}
	// An idle stream gets heartbeats.
	select {
	case <-live.pings:
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat")
	}
	live.close()

	// Changes while nobody listens, then a resume from the last id seen.
	last := seen[len(seen)-1].id
	b := st.create(t, "CP1", 1)
	st.charging(t, b.ID)
	st.mustStatus(t, req{method: "POST", path: "/v1/sessions/" + b.ID + "/stop", token: appToken}, http.StatusAccepted)
	missed, err := st.store.ReadChanges(bg, last, 1000, 0)
	if err != nil || len(missed) < 4 {
		t.Fatalf("%d changes missed (%v)", len(missed), err)
	}
	for _, resume := range []struct {
		path   string
		header map[string]string
	}{{"/v1/events", map[string]string{"Last-Event-ID": last}}, {"/v1/events?last_event_id=" + last, nil}} {
		s := st.openSSE(t, resume.path, resume.header)
		for i, want := range missed {
			ev := s.next(t)
			if ev.id != want.ID || ev.event != string(want.Kind) || ev.data != string(want.Data) {
				t.Fatalf("%s: event %d is %s/%s, want %s/%s", resume.path, i, ev.id, ev.event, want.ID, want.Kind)
			}
		}
		// And it goes on live.
		st.setOnline(t, "CP1", false, nil)
		if ev := s.next(t); ev.event != "charger" || !idLess(missed[len(missed)-1].ID, ev.id) {
			t.Fatalf("live after resume: %+v", ev)
		}
		missed, _ = st.store.ReadChanges(bg, last, 1000, 0)
		s.close()
	}

	r := st.do(t, req{method: "GET", path: "/v1/events", token: operatorToken, header: map[string]string{"Last-Event-ID": "not-an-id"}})
	if p := r.problem(t); r.status != http.StatusBadRequest || p.Errors["Last-Event-ID"] == "" {
		t.Fatalf("bad Last-Event-ID: %d %+v", r.status, p)
	}
}

// idLess compares the store's numeric change ids.
func idLess(a, b string) bool {
	var x, y uint64
	fmt.Sscan(a, &x)
	fmt.Sscan(b, &y)
	return x < y
}

func TestChargersTariffsStats(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1", "CP2")
	a := st.create(t, "CP1", 2)

	var list ChargerList
	r := st.mustStatus(t, req{method: "GET", path: "/v1/chargers", token: operatorToken}, http.StatusOK)
	if strings.Contains(string(r.body), "password") && !strings.Contains(string(r.body), "has_password") || strings.Contains(string(r.body), "$7$") {
		t.Fatalf("a password leaks: %s", r.body)
	}
	r.json(t, &list)
	if len(list.Chargers) != 2 || list.Chargers[0].ID != "CP1" || !list.Chargers[0].HasPassword || !list.Chargers[0].Online {
		t.Fatalf("chargers %+v", list.Chargers)
	}
	conns := list.Chargers[0].Connectors
	if len(conns) != 2 || conns[0].Session != "" || conns[1].Session != a.ID {
		t.Fatalf("connectors %+v", conns)
	}
	var one session.ChargerView
	st.mustStatus(t, req{method: "GET", path: "/v1/chargers/CP1", token: operatorToken}, http.StatusOK).json(t, &one)
	if one.ID != "CP1" || one.Connectors[1].Session != a.ID {
		t.Fatalf("charger %+v", one)
	}
	st.mustStatus(t, req{method: "GET", path: "/v1/chargers/NOPE", token: operatorToken}, http.StatusNotFound).problem(t)

	// Updates keep presence; bad bodies name their fields.
	st.mustStatus(t, req{method: "PUT", path: "/v1/chargers/CP1", token: operatorToken, body: `{"connectors":[3,1,2]}`}, http.StatusOK).json(t, &one)
	if len(one.Connectors) != 3 || one.Connectors[0].ID != 1 || !one.Online || !one.HasPassword || one.TariffID != "default" {
		t.Fatalf("updated %+v", one)
	}
	for body, field := range map[string]string{
		`{"connectors":[]}`:                         "connectors",
		`{"connectors":[1,1]}`:                      "connectors",
		`{"connectors":[1],"password":"short"}`:     "password",
		`{"connectors":[1],"tariff_id":"nonesuch"}`: "tariff_id",
	} {
		r := st.do(t, req{method: "PUT", path: "/v1/chargers/CP9", token: operatorToken, body: body})
		if p := r.problem(t); r.status != http.StatusBadRequest || p.Errors[field] == "" {
			t.Fatalf("%s: %d %+v", body, r.status, p)
		}
	}
	r = st.do(t, req{method: "PUT", path: "/v1/chargers/bad%20id", token: operatorToken, body: `{"connectors":[1]}`})
	if p := r.problem(t); r.status != http.StatusBadRequest || p.Errors["id"] == "" {
		t.Fatalf("bad id: %d %+v", r.status, p)
	}

	// Tariffs.
	var tl TariffList
	st.mustStatus(t, req{method: "GET", path: "/v1/tariffs", token: operatorToken}, http.StatusOK).json(t, &tl)
	if len(tl.Tariffs) != 1 || tl.Tariffs[0].ID != "default" || len(tl.Tariffs[0].Periods) != 2 {
		t.Fatalf("tariffs %+v", tl)
	}
	st.mustStatus(t, req{method: "GET", path: "/v1/tariffs/default", token: operatorToken}, http.StatusOK)
	st.mustStatus(t, req{method: "GET", path: "/v1/tariffs/none", token: operatorToken}, http.StatusNotFound)
	r = st.do(t, req{method: "PUT", path: "/v1/tariffs/night", token: operatorToken,
		body: `{"periods":[{"from":"00:00","to":"08:00","energy_fen_per_kwh":40,"service_fen_per_kwh":30}]}`})
	if p := r.problem(t); r.status != http.StatusBadRequest || len(p.Errors) == 0 {
		t.Fatalf("a tariff not covering the day: %d %+v", r.status, p)
	}
	r = st.do(t, req{method: "PUT", path: "/v1/tariffs/night", token: operatorToken, body: `{"periods":[{"from":"00:00","to":"24:00","energy_fen_per_kwh":"forty"}]}`})
	if p := r.problem(t); r.status != http.StatusBadRequest || len(p.Errors) == 0 {
		t.Fatalf("a wrongly typed tariff: %d %+v", r.status, p)
	}
	st.mustStatus(t, req{method: "PUT", path: "/v1/tariffs/night", token: operatorToken,
		body: `{"periods":[{"from":"00:00","to":"24:00","energy_fen_per_kwh":40,"service_fen_per_kwh":30}]}`}, http.StatusOK)

	// Stats: every state present.
	var stats Stats
	st.mustStatus(t, req{method: "GET", path: "/v1/stats", token: operatorToken}, http.StatusOK).json(t, &stats)
	if len(stats.Sessions) != len(fsm.States) || stats.Sessions[fsm.Created] != 1 || stats.Total != 1 || stats.Active != 1 || stats.Outbox.Pending == 0 {
		t.Fatalf("stats %+v", stats)
	}

	// Anomalies: paging and argument checks.
	for i := range 3 {
		st.eng.HandleNotification(bg, payscore.Notification{OutOrderNo: fmt.Sprintf("SO-X%d", i), Raw: "{}"})
	}
	var an AnomalyList
	st.mustStatus(t, req{method: "GET", path: "/v1/anomalies?limit=2", token: operatorToken}, http.StatusOK).json(t, &an)
	if len(an.Anomalies) != 2 || an.NextCursor == "" || !strings.Contains(an.Anomalies[0].Reason, "SO-X2") {
		t.Fatalf("anomalies page 1 %+v", an)
	}
	st.mustStatus(t, req{method: "GET", path: "/v1/anomalies?limit=2&cursor=" + an.NextCursor, token: operatorToken}, http.StatusOK).json(t, &an)
	if len(an.Anomalies) != 1 || an.NextCursor != "" || !strings.Contains(an.Anomalies[0].Reason, "SO-X0") {
		t.Fatalf("anomalies page 2 %+v", an)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?cursor=zz"} {
		r := st.do(t, req{method: "GET", path: "/v1/anomalies" + q, token: operatorToken})
		if r.problem(t); r.status != http.StatusBadRequest {
			t.Fatalf("%s: %d", q, r.status)
		}
	}
}
