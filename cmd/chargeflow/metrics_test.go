package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetrics runs one session to paid on the real service and reads GET
// /metrics: every family the dashboard relies on is there and counted, no
// label carries an id, and the dashboard uses no metric or label that does
// not exist.
func TestMetrics(t *testing.T) {
	s := newStack(t, "embedded", 1)
	v := s.charge("CP-1", 5000)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid")

	// The engine counts after its commits; a scrape may come a moment
	// before the last counts land. Poll until the whole path is there.
	deadline := time.Now().Add(s.waitLimit())
	fams := scrapeMetrics(t, s)
	for missing := checkSessionMetrics(fams); len(missing) > 0; missing = checkSessionMetrics(fams) {
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after a session to paid lacks: %s", strings.Join(missing, "; "))
		}
		time.Sleep(50 * time.Millisecond)
		fams = scrapeMetrics(t, s)
	}

	// Outbox gauges are exposed (values vary: timers stay armed).
	for _, name := range []string{"chargeflow_outbox_pending_tasks", "chargeflow_outbox_due_tasks", "chargeflow_outbox_oldest_due_age_seconds"} {
		if f := fams[name]; f == nil || len(f.Metric) != 1 || f.Metric[0].GetGauge() == nil {
			t.Errorf("%s not exposed as one gauge", name)
		}
	}
	if got := value(fams, "chargeflow_store_scrape_errors_total", "query", "sessions"); got != 0 {
		t.Errorf("store scrape errors %v", got)
	}

	// No label value names a session, a charger or an order.
	ids := []string{v.ID, v.OutOrderNo, "CP-1"}
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				for _, id := range ids {
					if id != "" && strings.Contains(l.GetValue(), id) {
						t.Errorf("%s{%s=%q} carries an id", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
	}

	checkDashboard(t, fams)
	checkLogs(t, s, v)
}

// checkLogs reads the service's JSON log (CHARGEFLOW_LOG_FORMAT=json): every
// line names the instance, and the session's transitions carry the
// session, its charger and its out_order_no, so that one grep follows a
// session from the API through the charger to Huifu.
func checkLogs(t *testing.T, s *stack, v view) {
	t.Helper()
	transitions := 0
	for line := range strings.Lines(s.errOut.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if rec["instance"] != s.env["CHARGEFLOW_INSTANCE_ID"] {
			t.Errorf("log line without the instance: %q", line)
		}
		if rec["msg"] == "transition" && rec["session"] == v.ID {
			transitions++
			if rec["charger"] != v.ChargerID || rec["out_order_no"] != v.OutOrderNo {
				t.Errorf("transition line without charger/out_order_no: %q", line)
			}
		}
	}
	if transitions < len(v.History)-1 { // creation is logged as "session created"
		t.Errorf("%d transition lines for session %s, history has %d entries", transitions, v.ID, len(v.History))
	}
}

// checkSessionMetrics lists what a session to paid must have left in fams.
func checkSessionMetrics(fams map[string]*dto.MetricFamily) []string {
	var missing []string
	need := func(what string, ok bool) {
		if !ok {
			missing = append(missing, what)
		}
	}
	// The happy path's transitions, by the table's row names.
	for _, ev := range []string{"create", "confirm", "started", "stop", "ended", "order_completed", "deduction_registered", "paid"} {
		need("transition "+ev, value(fams, "chargeflow_transitions_total", "event", ev) >= 1)
	}
	need(`transition deducting→paid`, value(fams, "chargeflow_transitions_total", "from", "deducting", "to", "paid", "event", "paid") >= 1)
	for _, k := range []string{"send_start", "send_stop", "complete_order", "register_deduction", "debit"} {
		need("effect "+k+" done", value(fams, "chargeflow_effects_total", "kind", k, "outcome", "done") >= 1)
	}
	for _, ep := range []string{"create_order", "complete_order", "register_deduction", "debit"} {
		ok := value(fams, "chargeflow_payscore_calls_total", "endpoint", ep, "result", "success") +
			value(fams, "chargeflow_payscore_calls_total", "endpoint", ep, "result", "accepted")
		need("payscore call "+ep, ok >= 1)
		need("payscore latency "+ep, histogramCount(fams, "chargeflow_payscore_request_duration_seconds", "endpoint", ep) >= 1)
	}
	for _, k := range []string{"state", "meter", "txn", "ack"} {
		need("mqtt in "+k, value(fams, "chargeflow_mqtt_messages_in_total", "kind", k, "result", "ok") >= 1)
	}
	need("mqtt out cmd start", value(fams, "chargeflow_mqtt_messages_out_total", "kind", "cmd", "type", "start", "result", "ok") >= 1)
	need("mqtt out cmd stop", value(fams, "chargeflow_mqtt_messages_out_total", "kind", "cmd", "type", "stop", "result", "ok") >= 1)
	need("mqtt out txnack", value(fams, "chargeflow_mqtt_messages_out_total", "kind", "txnack", "result", "ok") >= 1)
	need("confirm→start", histogramCount(fams, "chargeflow_confirm_to_start_seconds") >= 1)
	need(`sessions{state="paid"}`, value(fams, "chargeflow_sessions", "state", "paid") >= 1)
	need("anomalies counter", fams["chargeflow_anomalies_total"] != nil)
	need("go runtime", fams["go_goroutines"] != nil)
	return missing
}

// metricRe finds metric names in PromQL: ours and the runtime's.
var metricRe = regexp.MustCompile(`\b(?:chargeflow|go|process)_[a-z0-9_]+\b`)

// labelRe finds label names in matchers and in by/without clauses.
var (
	matcherRe  = regexp.MustCompile(`\{([^}]*)\}`)
	matchNames = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupRe    = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// checkDashboard reads deploy/grafana/chargeflow.json and checks that every
// metric its queries use exists in fams, and every label they match or
// group on is a label of our metrics (or one Prometheus adds), so that the
// dashboard cannot drift from the code.
func checkDashboard(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/grafana/chargeflow.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name, Type string
				Definition string
			}
		}
		Panels []dashPanel
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	labels := map[string]bool{"le": true, "instance": true, "job": true}
	for _, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				labels[l.GetName()] = true
			}
		}
	}
	exprs := map[string]string{} // expr → panel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type != "row" && p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: data source %q, want the ${DS_PROMETHEUS} variable", p.Title, p.Datasource.UID)
			}
			for _, tg := range p.Targets {
				exprs[tg.Expr] = p.Title
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs[v.Definition] = "variable " + v.Name
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d queries in the dashboard", len(exprs))
	}
	used := map[string]bool{}
	for expr, where := range exprs {
		names := metricRe.FindAllString(expr, -1)
		if len(names) == 0 && !strings.HasPrefix(where, "variable") {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			family := n
			if fams[family] == nil {
				for _, suf := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(n, suf); ok && fams[b] != nil && fams[b].GetType() == dto.MetricType_HISTOGRAM {
						family = b
					}
				}
			}
			if fams[family] == nil {
				t.Errorf("%s: metric %s is not exposed", where, n)
			}
			used[family] = true
		}
		var lnames []string
		for _, m := range matcherRe.FindAllStringSubmatch(expr, -1) {
			for _, mm := range matchNames.FindAllStringSubmatch(m[1], -1) {
				lnames = append(lnames, mm[1])
			}
		}
		for _, g := range groupRe.FindAllStringSubmatch(expr, -1) {
			for l := range strings.SplitSeq(g[1], ",") {
				lnames = append(lnames, strings.TrimSpace(l))
			}
		}
		for _, l := range lnames {
			if !labels[l] {
				t.Errorf("%s: label %q is on none of our metrics: %s", where, l, expr)
			}
		}
	}
	// And every chargeflow family has a place on the dashboard.
	var unused []string
	for name := range fams {
		if strings.HasPrefix(name, "chargeflow_") && !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("metrics not on the dashboard: %v", unused)
	}
}

type dashPanel struct {
	Type       string
	Title      string
	Datasource struct{ UID string }
	Targets    []struct{ Expr string }
	Panels     []dashPanel
}

func scrapeMetrics(t *testing.T, s *stack) map[string]*dto.MetricFamily {
	t.Helper()
	// Unauthenticated, like /healthz (docs/metrics.md).
	resp, err := s.http.Get(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value sums the counter or gauge samples of name whose labels include
// the given name, value pairs.
func value(fams map[string]*dto.MetricFamily, name string, kv ...string) float64 {
	sum := 0.0
	for _, m := range matching(fams, name, kv...) {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

func histogramCount(fams map[string]*dto.MetricFamily, name string, kv ...string) uint64 {
	var n uint64
	for _, m := range matching(fams, name, kv...) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func matching(fams map[string]*dto.MetricFamily, name string, kv ...string) []*dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.Metric {
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			ok = ok && slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == kv[i] && l.GetValue() == kv[i+1] })
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}
