package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chargeflow/chargeflow/store"
)

// ReconcileReports is the part of the store the reconciliation gauges read.
type ReconcileReports interface {
	ListReconciliations(ctx context.Context, limit int) ([]store.Reconciliation, error)
}

// ReconcileWindow is how many of the latest days the gauges look at.
const ReconcileWindow = 30

var (
	reconcileOpenDesc = prometheus.NewDesc(namespace+"_reconcile_open_differences",
		"Differences between our books and Huifu's trade bill in the latest report of each of the last 30 days reconciled (docs/contract.md §6), read from the store at scrape time.",
		nil, nil)
	reconcileFailedDesc = prometheus.NewDesc(namespace+"_reconcile_failed_days",
		"Days among the last 30 reconciled whose latest run could not reconcile (bill not ready or unreadable, Huifu down).",
		nil, nil)
)

// WatchReconciliations registers the reconciliation gauges, read from st at
// scrape time (timeout bounds the query; 0 = DefaultStoreTimeout). A
// failing read contributes nothing to that scrape.
func (m *Metrics) WatchReconciliations(st ReconcileReports, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultStoreTimeout
	}
	return m.reg.Register(&reconcileCollector{st: st, timeout: timeout})
}

type reconcileCollector struct {
	st      ReconcileReports
	timeout time.Duration
}

func (c *reconcileCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- reconcileOpenDesc
	ch <- reconcileFailedDesc
}

func (c *reconcileCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	reps, err := c.st.ListReconciliations(ctx, ReconcileWindow)
	if err != nil {
		return
	}
	var open, failed int
	for _, r := range reps {
		open += r.Differences
		if r.Status == store.ReconcileFailed {
			failed++
		}
	}
	ch <- prometheus.MustNewConstMetric(reconcileOpenDesc, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(reconcileFailedDesc, prometheus.GaugeValue, float64(failed))
}
