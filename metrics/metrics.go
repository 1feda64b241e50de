// Package metrics exposes chargeflow's Prometheus metrics (docs/contract.md §3,
// GET /metrics). It owns a registry of its own — never the global one, so
// that two services in one process (the end-to-end tests) do not share
// counters — and adapts the observation hooks of the other packages to it:
// session.Observer (Metrics itself), payscore.Observer (PayScore), the
// charger link's handler and publishes (WrapHandler, WrapCommander), and the
// store's counts, read at scrape time, and errors, as they happen
// (WatchStore).
//
// Every label is a small enum (state, event, kind, outcome, endpoint, result,
// type): no session, charger or order id is ever a label value, so the
// number of series does not grow with traffic. Values that come from outside
// (a charger's topic kind, a Huifu resp_code) are mapped onto a fixed set,
// unknown ones to "other".
//
// Only cmd imports this package.
package metrics

import (
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chargeflow/chargeflow/fsm"
)

// Namespace prefixes every chargeflow metric.
const namespace = "chargeflow"

// Histogram buckets, in seconds.
var (
	// payScoreBuckets span a fast sandbox reply (10 ms) to Huifu's slowest
	// answer before our client gives up (30 s).
	payScoreBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30}
	// confirmBuckets span an immediate start (0.1 s) to a start sent after
	// worker retries (5 min).
	confirmBuckets = []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	// handleBuckets: a charger handler must be quick (a store write or two).
	handleBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
)

// Metrics holds chargeflow's metrics and their registry. It implements
// session.Observer. All methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	transitions    *prometheus.CounterVec // from, to, event
	effects        *prometheus.CounterVec // kind, outcome
	anomalies      prometheus.Counter
	confirmToStart prometheus.Histogram

	payCalls    *prometheus.CounterVec   // endpoint, result (the last attempt's)
	payAttempts *prometheus.CounterVec   // endpoint, result
	payDuration *prometheus.HistogramVec // endpoint

	mqttIn       *prometheus.CounterVec   // kind, result
	mqttHandle   *prometheus.HistogramVec // kind
	mqttOut      *prometheus.CounterVec   // kind, type, result
	storeErrors  *prometheus.CounterVec   // kind
	resent       *prometheus.CounterVec   // type, why (commands.go)
	storeWatched atomic.Bool

	webhooksWatched atomic.Bool
}

// New returns the metrics with a fresh registry holding them and the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "transitions_total",
		Help: "Session state transitions, by the row of the machine's table that fired (event)."},
		[]string{"from", "to", "event"})
	m.effects = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "effects_total",
		Help: "Outbox effects performed, by kind and outcome (done, retried, failed, skipped)."},
		[]string{"kind", "outcome"})
	m.anomalies = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "anomalies_total",
		Help: "Anomalies recorded for operators (malformed or unexpected charger messages, refused events, effects failed for good)."})
	m.confirmToStart = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "confirm_to_start_seconds",
		Help: "Time from the user's confirmation to the start command's publish.", Buckets: confirmBuckets})
	m.payCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "payscore_calls_total",
		Help: "Pay Score calls (retries included in one call), by endpoint and the result of the last attempt."},
		[]string{"endpoint", "result"})
	m.payAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "payscore_attempts_total",
		Help: "Pay Score HTTP requests (every attempt of a call), by endpoint and result."},
		[]string{"endpoint", "result"})
	m.payDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "payscore_request_duration_seconds",
		Help: "Latency of one Pay Score HTTP request (one attempt), by endpoint.", Buckets: payScoreBuckets},
		[]string{"endpoint"})
	m.mqttIn = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "mqtt_messages_in_total",
		Help: "Charger messages handled, by kind and result (ok: stored and acknowledged; error: not stored, delivered again)."},
		[]string{"kind", "result"})
	m.mqttHandle = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "mqtt_handle_duration_seconds",
		Help: "Time the engine took to handle one charger message, by kind.", Buckets: handleBuckets},
		[]string{"kind"})
	m.mqttOut = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "mqtt_messages_out_total",
		Help: "Messages published to chargers, by kind (cmd, txnack), command type (start, stop; txnack for acks) and result (ok, error)."},
		[]string{"kind", "type", "result"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_errors_total",
		Help: "Errors the store's servers or connections gave, by kind (moved, readonly, cluster_down, loading, noreplicas, timeout, connection, other): a failover shows as connection/timeout, then cluster_down, readonly and moved."},
		[]string{"kind"})

	m.resent = newCommandsResent()
	m.reg.MustRegister(m.resent)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.transitions, m.effects, m.anomalies, m.confirmToStart, m.payCalls, m.payAttempts, m.payDuration,
		m.mqttIn, m.mqttHandle, m.mqttOut, m.storeErrors)
	m.preset()
	return m
}

// tableRows are the machine's rows, for naming transitions.
var tableRows = fsm.DefaultTable().Rows

// preset creates the series a dashboard divides or rates by, at zero, so
// that they exist before the first event (a missing series is not a zero
// in PromQL).
func (m *Metrics) preset() {
	m.transitions.WithLabelValues("none", string(fsm.Created), string(fsm.EvCreate))
	for _, row := range tableRows {
		if row.Dst == fsm.Stay {
			continue
		}
		for _, from := range row.Src {
			m.transitions.WithLabelValues(string(from), string(row.Dst), row.Name)
		}
	}
	for _, k := range fsm.EffectKinds {
		for _, o := range outcomes {
			m.effects.WithLabelValues(string(k), o)
		}
	}
	for _, k := range inKinds {
		m.mqttIn.WithLabelValues(k, "ok")
		m.mqttIn.WithLabelValues(k, "error")
	}
	for _, t := range []string{"start", "stop"} {
		m.mqttOut.WithLabelValues("cmd", t, "ok")
		m.mqttOut.WithLabelValues("cmd", t, "error")
	}
	m.mqttOut.WithLabelValues("txnack", "txnack", "ok")
	m.mqttOut.WithLabelValues("txnack", "txnack", "error")
	for _, k := range storeErrorKinds {
		m.storeErrors.WithLabelValues(k)
	}
	m.presetResent()
}

// Registry returns the registry every metric is registered with (for tests
// and for adding collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format. A
// collector that fails contributes nothing to that scrape; the rest is
// served (ContinueOnError).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// other is the label value of anything outside a label's known set.
const other = "other"

var outcomes = []string{"done", "retried", "failed", "skipped"}

// Transition implements session.Observer.
func (m *Metrics) Transition(from, to fsm.State, event fsm.EventType) {
	m.transitions.WithLabelValues(stateLabel(from), stateLabel(to), eventLabel(event)).Inc()
}

// Effect implements session.Observer.
func (m *Metrics) Effect(kind fsm.EffectKind, outcome string) {
	k := string(kind)
	if !slices.Contains(fsm.EffectKinds, kind) {
		k = other
	}
	if !slices.Contains(outcomes, outcome) {
		outcome = other
	}
	m.effects.WithLabelValues(k, outcome).Inc()
}

// Anomaly implements session.Observer.
func (m *Metrics) Anomaly() { m.anomalies.Inc() }

// ConfirmToStart implements session.Observer.
func (m *Metrics) ConfirmToStart(d time.Duration) { m.confirmToStart.Observe(max(d, 0).Seconds()) }

// stateLabel bounds a state label; "none" is the state before a session's
// creation.
func stateLabel(s fsm.State) string {
	switch {
	case s == "":
		return "none"
	case s.Valid():
		return string(s)
	}
	return other
}

// eventLabel bounds an event label: a row of fsm.Table, an event type, or
// "create".
func eventLabel(e fsm.EventType) string {
	if e == fsm.EvCreate || slices.Contains(fsm.EventTypes, e) {
		return string(e)
	}
	for _, row := range tableRows {
		if row.Name == string(e) {
			return string(e)
		}
	}
	return other
}
