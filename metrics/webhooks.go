package metrics

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chargeflow/chargeflow/store"
)

// DeliveryStats is the part of store.Store the webhook gauges read.
type DeliveryStats interface {
	DeliveryStats(ctx context.Context) (store.DeliveryStats, error)
}

// lagBuckets span a delivery at once (0.1 s) to one at the end of the
// delivery window (24 h).
var lagBuckets = []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600}

// Webhooks observes the webhook sender (it implements webhooks.Observer).
type Webhooks struct {
	deliveries *prometheus.CounterVec // outcome
	lag        prometheus.Histogram
}

// The outcomes of chargeflow_webhook_deliveries_total.
var webhookOutcomes = []string{"delivered", "retried", "given_up"}

var (
	webhookPendingDesc = prometheus.NewDesc(namespace+"_webhook_pending_deliveries",
		"Webhook deliveries not delivered yet (store, at scrape time). Growing: the receiver is down or refusing.", nil, nil)
	webhookFailedDesc = prometheus.NewDesc(namespace+"_webhook_failed_deliveries",
		"Webhook deliveries given up after the delivery window and not retried since (store, at scrape time).", nil, nil)
)

// WatchWebhooks registers the webhook sender's metrics and, when st is not
// nil, gauges read from st at every scrape (bounded by timeout,
// DefaultStoreTimeout if ≤ 0; a failed read exposes neither gauge). It may
// be called once per Metrics.
func (m *Metrics) WatchWebhooks(st DeliveryStats, timeout time.Duration) (*Webhooks, error) {
	if !m.webhooksWatched.CompareAndSwap(false, true) {
		return nil, errors.New("metrics: WatchWebhooks called twice")
	}
	if timeout <= 0 {
		timeout = DefaultStoreTimeout
	}
	w := &Webhooks{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts, by outcome (delivered: a 2xx; retried: failed, tried again after a back-off; given_up: the delivery window passed)."},
			[]string{"outcome"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "webhook_delivery_lag_seconds",
			Help: "From an event's creation (or an operator's retry) to its delivery.", Buckets: lagBuckets}),
	}
	for _, o := range webhookOutcomes {
		w.deliveries.WithLabelValues(o)
	}
	cs := []prometheus.Collector{w.deliveries, w.lag}
	if st != nil {
		cs = append(cs, &deliveryCollector{st: st, timeout: timeout})
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Delivered implements webhooks.Observer.
func (w *Webhooks) Delivered(lag time.Duration) {
	w.deliveries.WithLabelValues("delivered").Inc()
	w.lag.Observe(max(lag, 0).Seconds())
}

// Retried implements webhooks.Observer.
func (w *Webhooks) Retried() { w.deliveries.WithLabelValues("retried").Inc() }

// GaveUp implements webhooks.Observer.
func (w *Webhooks) GaveUp() { w.deliveries.WithLabelValues("given_up").Inc() }

type deliveryCollector struct {
	st      DeliveryStats
	timeout time.Duration
	errors  atomic.Uint64
}

func (c *deliveryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- webhookPendingDesc
	ch <- webhookFailedDesc
}

func (c *deliveryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.st.DeliveryStats(ctx)
	if err != nil {
		c.errors.Add(1)
		return
	}
	ch <- prometheus.MustNewConstMetric(webhookPendingDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(webhookFailedDesc, prometheus.GaugeValue, float64(st.Failed))
}
