package metrics_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/metrics"
	"github.com/chargeflow/chargeflow/store"
)

type reports []store.Reconciliation

func (r reports) ListReconciliations(context.Context, int) ([]store.Reconciliation, error) {
	return r, nil
}

// TestReconcileGauges: open differences add up over the days reported, and
// failed days are counted.
func TestReconcileGauges(t *testing.T) {
	m := metrics.New()
	if err := m.WatchReconciliations(reports{{Date: "2026-12-03", Status: store.ReconcileDifferences, Differences: 3},
		{Date: "2026-12-02", Status: store.ReconcileFailed}, {Date: "2026-12-01", Status: store.ReconcileDifferences, Differences: 2}}, 0); err != nil {
		t.Fatal(err)
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "chargeflow_reconcile_") {
			got[f.GetName()] = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if got["chargeflow_reconcile_open_differences"] != 5 || got["chargeflow_reconcile_failed_days"] != 1 {
		t.Fatalf("gauges %v", got)
	}
}
