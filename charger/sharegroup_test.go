package charger_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestShareGroupLeave: a link that closes leaves its share group, so
// Mosquitto gives every later message to the members still there — not a
// share of them to the closed one's persistent session, which a replaced
// instance (a new Kubernetes pod name) never comes back to collect.
func TestShareGroupLeave(t *testing.T) {
	url := testenv.MosquittoProcess(t, "max_inflight_messages 0").URL
	prefix := testenv.Namespace(t) + "/ev/v1"
	newLink := func(id string) charger.Link {
		l, err := charger.NewPahoLink(charger.PahoConfig{URL: url, ClientID: "chargeflow-" + id, Prefix: prefix,
			ShareGroup: "g", RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	var gone, stays recorder
	old := newLink("old")
	startLink(t, old, gone.handle)
	startLink(t, newLink("new"), stays.handle)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	cp, err := rawClient(t, url, "CP-1", "", "", true)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	topics := charger.Topics{Prefix: prefix}
	for i := range n {
		mustPublish(t, cp, topics.Up("CP-1", charger.KindMeter), []byte(fmt.Sprintf(`{"connector":1,"session_id":"s","meter_wh":%d,"ts":"2026-12-04T02:00:00Z"}`, i)))
	}
	eventually(t, fmt.Sprintf("%d meter messages at the member that stays", n), func() bool { return stays.count() >= n })
	if c := stays.count(); c != n {
		t.Fatalf("the member that stays got %d messages, want %d", c, n)
	}
	if g := gone.count(); g != 0 {
		t.Fatalf("the closed link handled %d messages", g)
	}
	stays.mu.Lock()
	defer stays.mu.Unlock()
	for _, m := range stays.all {
		if !strings.HasSuffix(m.Topic, "/up/meter") {
			t.Errorf("unexpected topic %s", m.Topic)
		}
	}
}
