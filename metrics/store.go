package metrics

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// StoreStats is the part of store.Store the scrape reads.
type StoreStats interface {
	CountByState(ctx context.Context) (map[fsm.State]int, error)
	OutboxStats(ctx context.Context, now time.Time) (store.OutboxStats, error)
}

// DefaultStoreTimeout bounds the store queries of one scrape.
const DefaultStoreTimeout = 3 * time.Second

// ErrorObserver is a store that reports the errors its servers give, by
// kind, as they happen (the Redis adapter: redisstore.Store.ObserveErrors).
type ErrorObserver interface {
	ObserveErrors(fn func(kind string))
}

// storeErrorKinds are the values of chargeflow_store_errors_total's kind
// label: the kinds of redisstore.ErrorKind (docs/metrics.md).
var storeErrorKinds = []string{"moved", "readonly", "cluster_down", "loading", "noreplicas", "timeout", "connection", other}

// StoreError counts one error of the store's servers of that kind
// (chargeflow_store_errors_total); a kind outside the known set counts as
// other.
func (m *Metrics) StoreError(kind string) {
	if !slices.Contains(storeErrorKinds, kind) {
		kind = other
	}
	m.storeErrors.WithLabelValues(kind).Inc()
}

// WatchStore registers a collector that asks st at every scrape for the
// sessions by state and the outbox's depth, due tasks and oldest due time.
// Each query is bounded by timeout (DefaultStoreTimeout if ≤ 0); a query
// that fails or times out exposes none of its series in that scrape —
// never a stale value — and counts chargeflow_store_scrape_errors_total.
// When st is also an ErrorObserver, its errors are counted by kind
// (StoreError). now may be nil (time.Now). It may be called once per Metrics.
func (m *Metrics) WatchStore(st StoreStats, timeout time.Duration, now func() time.Time) error {
	if !m.storeWatched.CompareAndSwap(false, true) {
		return errors.New("metrics: WatchStore called twice")
	}
	if timeout <= 0 {
		timeout = DefaultStoreTimeout
	}
	if now == nil {
		now = time.Now
	}
	if err := m.reg.Register(&storeCollector{st: st, timeout: timeout, now: now}); err != nil {
		m.storeWatched.Store(false)
		return err
	}
	if o, ok := st.(ErrorObserver); ok {
		o.ObserveErrors(m.StoreError)
	}
	return nil
}

var (
	sessionsDesc = prometheus.NewDesc(namespace+"_sessions", "Sessions in each state, read from the store at scrape time.",
		[]string{"state"}, nil)
	outboxPendingDesc = prometheus.NewDesc(namespace+"_outbox_pending_tasks",
		"Outbox tasks not yet done (effects and armed timers, due or not).", nil, nil)
	outboxDueDesc = prometheus.NewDesc(namespace+"_outbox_due_tasks",
		"Outbox tasks due now (leased ones included): work the engine's workers should be doing.", nil, nil)
	outboxOldestDesc = prometheus.NewDesc(namespace+"_outbox_oldest_due_age_seconds",
		"How long the oldest outbox task has been due; 0 when nothing is overdue. Growing: workers stuck or an effect failing.", nil, nil)
	scrapeErrorsDesc = prometheus.NewDesc(namespace+"_store_scrape_errors_total",
		"Store queries of a scrape that failed or timed out, by query (sessions, outbox).", []string{"query"}, nil)
)

// storeCollector reads the store at scrape time. Collect may run
// concurrently (two scrapers); the error counts are atomic.
type storeCollector struct {
	st      StoreStats
	timeout time.Duration
	now     func() time.Time

	sessionErrors, outboxErrors atomic.Uint64
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- outboxPendingDesc
	ch <- outboxDueDesc
	ch <- outboxOldestDesc
	ch <- scrapeErrorsDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectSessions(ch)
	c.collectOutbox(ch)
	ch <- prometheus.MustNewConstMetric(scrapeErrorsDesc, prometheus.CounterValue, float64(c.sessionErrors.Load()), "sessions")
	ch <- prometheus.MustNewConstMetric(scrapeErrorsDesc, prometheus.CounterValue, float64(c.outboxErrors.Load()), "outbox")
}

func (c *storeCollector) collectSessions(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	counts, err := c.st.CountByState(ctx)
	if err != nil {
		c.sessionErrors.Add(1)
		return
	}
	// Every state, zeros included, so sum() and per-state panels are
	// continuous; a state the store knows and fsm does not goes to other.
	byLabel := make(map[string]int, len(fsm.States)+1)
	for _, s := range fsm.States {
		byLabel[string(s)] = 0
	}
	for s, n := range counts {
		byLabel[stateLabel(s)] += n
	}
	for label, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(n), label)
	}
}

func (c *storeCollector) collectOutbox(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	now := c.now()
	st, err := c.st.OutboxStats(ctx, now)
	if err != nil {
		c.outboxErrors.Add(1)
		return
	}
	age := time.Duration(0)
	if !st.OldestDue.IsZero() {
		age = max(now.Sub(st.OldestDue), 0)
	}
	ch <- prometheus.MustNewConstMetric(outboxPendingDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(outboxDueDesc, prometheus.GaugeValue, float64(st.DueNow))
	ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, age.Seconds())
}
