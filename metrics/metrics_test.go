package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	dto "github.com/prometheus/client_model/go"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

func TestObserverLabelsAreBounded(t *testing.T) {
	m := New()
	m.Transition(fsm.Created, fsm.UserConfirmed, "confirm")
	m.Transition("", fsm.Created, fsm.EvCreate)
	m.Transition("weird", "S-123", "evil-event-abc")
	m.Effect(fsm.EffDebit, "done")
	m.Effect("made_up", "exploded")
	m.Anomaly()
	m.ConfirmToStart(1500 * time.Millisecond)
	m.ConfirmToStart(-time.Second)

	if got := value(t, m.transitions.WithLabelValues("created", "user_confirmed", "confirm")); got != 1 {
		t.Errorf("confirm transitions %v", got)
	}
	if got := value(t, m.transitions.WithLabelValues("none", "created", "create")); got != 1 {
		t.Errorf("create transitions %v", got)
	}
	if got := value(t, m.transitions.WithLabelValues("other", "other", "other")); got != 1 {
		t.Errorf("unknown transition not mapped to other: %v", got)
	}
	if got := value(t, m.effects.WithLabelValues("other", "other")); got != 1 {
		t.Errorf("unknown effect not mapped to other: %v", got)
	}
	if got := value(t, m.anomalies); got != 1 {
		t.Errorf("anomalies %v", got)
	}
	text := scrape(t, m)
	for _, bad := range []string{"S-123", "evil-event-abc", "made_up", "exploded", "weird"} {
		if strings.Contains(text, bad) {
			t.Errorf("label value %q leaked into the exposition", bad)
		}
	}
	if !strings.Contains(text, "chargeflow_confirm_to_start_seconds_count 2") {
		t.Errorf("confirm_to_start count missing:\n%s", grep(text, "confirm_to_start"))
	}
}

// The series a dashboard rates or divides by exist at zero before anything
// happened, and the runtime collectors are registered.
func TestPresets(t *testing.T) {
	text := scrape(t, New())
	for _, want := range []string{
		`chargeflow_effects_total{kind="send_start",outcome="failed"} 0`,
		`chargeflow_mqtt_messages_in_total{kind="txn",result="error"} 0`,
		`chargeflow_mqtt_messages_out_total{kind="txnack",result="error",type="txnack"} 0`,
		`chargeflow_transitions_total{event="paid",from="deducting",to="paid"} 0`,
		`chargeflow_transitions_total{event="create",from="none",to="created"} 0`,
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %s", want)
		}
	}
}

func TestPayScoreObserver(t *testing.T) {
	m := New()
	o := m.PayScore()
	o.ObserveCall(payscore.CallInfo{Endpoint: payscore.PathDebit, Send: 1, Result: payscore.CodeSystemError, Duration: 30 * time.Millisecond})
	o.ObserveCall(payscore.CallInfo{Endpoint: payscore.PathDebit, Send: 2, Result: payscore.CodeSuccess, Duration: 20 * time.Millisecond, Final: true})
	o.ObserveCall(payscore.CallInfo{Endpoint: "/v2/something/else?x=1", Send: 1, Result: "12345678", Final: true})
	o.ObserveCall(payscore.CallInfo{Endpoint: payscore.PathRefund, Send: 1, Result: "http_503", Final: true})
	o.ObserveCall(payscore.CallInfo{Endpoint: payscore.PathRefund, Send: 1, Result: "something odd", Final: true})

	if got := value(t, m.payAttempts.WithLabelValues("debit", "system_error")); got != 1 {
		t.Errorf("debit system_error attempts %v", got)
	}
	if got := value(t, m.payCalls.WithLabelValues("debit", "success")); got != 1 {
		t.Errorf("debit success calls %v", got)
	}
	if got := value(t, m.payCalls.WithLabelValues("debit", "system_error")); got != 0 {
		t.Errorf("a retried attempt counted as a call: %v", got)
	}
	if got := value(t, m.payCalls.WithLabelValues("other", "other_code")); got != 1 {
		t.Errorf("unknown endpoint/code calls %v", got)
	}
	if got := value(t, m.payCalls.WithLabelValues("refund", "http_5xx")); got != 1 {
		t.Errorf("http_503 calls %v", got)
	}
	if got := value(t, m.payCalls.WithLabelValues("refund", "other")); got != 1 {
		t.Errorf("odd result calls %v", got)
	}
	if !strings.Contains(scrape(t, m), `chargeflow_payscore_request_duration_seconds_count{endpoint="debit"} 2`) {
		t.Error("debit latency count is not 2")
	}
}

type fakeCommander struct{ err error }

func (f fakeCommander) SendCommand(context.Context, string, charger.Command) error { return f.err }
func (f fakeCommander) AckTxn(context.Context, string, string) error               { return f.err }

func TestChargerWrappers(t *testing.T) {
	m := New()
	fail := errors.New("store down")
	h := m.WrapHandler(func(_ context.Context, in charger.Inbound) error {
		if in.ChargerID == "CP-bad" {
			return fail
		}
		return nil
	})
	for _, in := range []charger.Inbound{
		{ChargerID: "CP-1", Kind: charger.KindMeter},
		{ChargerID: "CP-1", Kind: charger.KindTxn},
		{ChargerID: "CP-bad", Kind: charger.KindTxn},
		{ChargerID: "CP-1", Kind: "firmware_dump"},
		{ChargerID: "CP-1"},
	} {
		if err := h(context.Background(), in); (err != nil) != (in.ChargerID == "CP-bad") {
			t.Fatalf("%+v: err %v", in, err)
		}
	}
	for labels, want := range map[[2]string]float64{
		{"meter", "ok"}: 1, {"txn", "ok"}: 1, {"txn", "error"}: 1, {"other", "ok"}: 1, {"unparsed", "ok"}: 1,
	} {
		if got := value(t, m.mqttIn.WithLabelValues(labels[0], labels[1])); got != want {
			t.Errorf("in %v: %v, want %v", labels, got, want)
		}
	}

	ok, bad := m.WrapCommander(fakeCommander{}), m.WrapCommander(fakeCommander{err: fail})
	_ = ok.SendCommand(context.Background(), "CP-1", charger.Command{Type: charger.CmdStart, SessionID: "S-1"})
	_ = ok.SendCommand(context.Background(), "CP-1", charger.Command{Type: charger.CmdStop})
	_ = ok.SendCommand(context.Background(), "CP-1", charger.Command{Type: "reboot"})
	_ = ok.AckTxn(context.Background(), "CP-1", "e-1")
	if err := bad.SendCommand(context.Background(), "CP-1", charger.Command{Type: charger.CmdStop}); err != fail {
		t.Fatalf("wrapper changed the error: %v", err)
	}
	_ = bad.AckTxn(context.Background(), "CP-1", "e-2")
	for labels, want := range map[[3]string]float64{
		{"cmd", "start", "ok"}: 1, {"cmd", "stop", "ok"}: 1, {"cmd", "other", "ok"}: 1, {"txnack", "txnack", "ok"}: 1,
		{"cmd", "stop", "error"}: 1, {"txnack", "txnack", "error"}: 1,
	} {
		if got := value(t, m.mqttOut.WithLabelValues(labels[0], labels[1], labels[2])); got != want {
			t.Errorf("out %v: %v, want %v", labels, got, want)
		}
	}
}

// fakeStore answers the scrape's queries, or fails them, or hangs until
// the query's context ends.
type fakeStore struct {
	counts map[fsm.State]int
	stats  store.OutboxStats
	err    error
	hang   bool
}

func (f *fakeStore) CountByState(ctx context.Context) (map[fsm.State]int, error) {
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.counts, f.err
}

func (f *fakeStore) OutboxStats(ctx context.Context, _ time.Time) (store.OutboxStats, error) {
	if f.hang {
		<-ctx.Done()
		return store.OutboxStats{}, ctx.Err()
	}
	return f.stats, f.err
}

func TestStoreCollector(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := &fakeStore{counts: map[fsm.State]int{fsm.Paid: 3, fsm.Charging: 1, "from_the_future": 2},
		stats: store.OutboxStats{Pending: 7, DueNow: 2, OldestDue: now.Add(-90 * time.Second)}}
	m := New()
	if err := m.WatchStore(st, 50*time.Millisecond, func() time.Time { return now }); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchStore(st, 0, nil); err == nil {
		t.Fatal("a second WatchStore was accepted")
	}
	text := scrape(t, m)
	for _, want := range []string{
		`chargeflow_sessions{state="paid"} 3`, `chargeflow_sessions{state="charging"} 1`,
		`chargeflow_sessions{state="refunded"} 0`, `chargeflow_sessions{state="other"} 2`,
		"chargeflow_outbox_pending_tasks 7", "chargeflow_outbox_due_tasks 2", "chargeflow_outbox_oldest_due_age_seconds 90",
		`chargeflow_store_scrape_errors_total{query="sessions"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in\n%s", want, grep(text, "chargeflow_sessions", "chargeflow_outbox", "scrape_errors"))
		}
	}

	// Nothing overdue: age 0, never negative.
	st.stats = store.OutboxStats{Pending: 1, OldestDue: now.Add(time.Minute)}
	if text := scrape(t, m); !strings.Contains(text, "chargeflow_outbox_oldest_due_age_seconds 0\n") {
		t.Errorf("future due time: %s", grep(text, "oldest_due"))
	}

	// A failing store: no stale values, errors counted.
	for _, bad := range []*fakeStore{{err: errors.New("redis down")}, {hang: true}} {
		*st = *bad
		text := scrape(t, m)
		for _, absent := range []string{"chargeflow_sessions{", "chargeflow_outbox_pending_tasks ", "chargeflow_outbox_oldest_due_age_seconds "} {
			if strings.Contains(text, absent) {
				t.Errorf("store failing (%+v) but %s exposed", bad, absent)
			}
		}
	}
	text = scrape(t, m)
	for _, want := range []string{`chargeflow_store_scrape_errors_total{query="sessions"} 3`, `chargeflow_store_scrape_errors_total{query="outbox"} 3`} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in\n%s", want, grep(text, "scrape_errors"))
		}
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

func grep(text string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// value reads a counter's value.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
