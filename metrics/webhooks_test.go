package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/store"
)

type fakeDeliveries struct {
	st  store.DeliveryStats
	err error
}

func (f *fakeDeliveries) DeliveryStats(context.Context) (store.DeliveryStats, error) {
	return f.st, f.err
}

func TestWebhookMetrics(t *testing.T) {
	m := New()
	st := &fakeDeliveries{st: store.DeliveryStats{Pending: 4, Failed: 1}}
	w, err := m.WatchWebhooks(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WatchWebhooks(st, 0); err == nil {
		t.Fatal("a second WatchWebhooks was accepted")
	}
	text := scrape(t, m)
	for _, want := range []string{`chargeflow_webhook_deliveries_total{outcome="given_up"} 0`, "chargeflow_webhook_delivery_lag_seconds_count 0",
		"chargeflow_webhook_pending_deliveries 4", "chargeflow_webhook_failed_deliveries 1"} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in\n%s", want, grep(text, "chargeflow_webhook"))
		}
	}
	w.Delivered(3 * time.Second)
	w.Delivered(-time.Second) // a clock step back counts as 0
	w.Retried()
	w.GaveUp()
	st.err = errors.New("store down")
	text = scrape(t, m)
	for _, want := range []string{`chargeflow_webhook_deliveries_total{outcome="delivered"} 2`, `chargeflow_webhook_deliveries_total{outcome="retried"} 1`,
		`chargeflow_webhook_deliveries_total{outcome="given_up"} 1`, "chargeflow_webhook_delivery_lag_seconds_sum 3"} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in\n%s", want, grep(text, "chargeflow_webhook"))
		}
	}
	if strings.Contains(text, "chargeflow_webhook_pending_deliveries ") {
		t.Errorf("a failed read exposed a stale gauge")
	}
}
