package session_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// TestWebhookEventsWithTheirCommits: with webhooks on, a session's
// transitions and a refund's outcome are queued by their own commits, in
// commit order, a full refund's outcome before the session.refunded it
// causes; each body is {"id","type","created_at","data"} with the id the
// store orders by and the view of the version its commit made.
func TestWebhookEventsWithTheirCommits(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, func(c *session.Config) { c.Webhooks = true })
		s := h.paid("CP-W")
		if _, err := refund(h, s.ID, s.Payment.PaidFen, "all"); err != nil {
			t.Fatal(err)
		}
		s = h.waitState(s.ID, fsm.Refunded)

		var want []string
		history, err := st.History(t.Context(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range history {
			if e.To == fsm.Refunded {
				want = append(want, session.WebhookRefundSucceeded)
			}
			want = append(want, session.WebhookSessionType(e.To))
		}
		p, err := st.ListDeliveries(t.Context(), store.DeliveryFilter{SessionID: s.ID, Limit: store.MaxPage})
		if err != nil {
			t.Fatal(err)
		}
		ds := p.Deliveries
		slices.Reverse(ds) // oldest first
		var got []string
		lastVersion := int64(0)
		for _, d := range ds {
			got = append(got, d.Type)
			var ev session.WebhookEvent
			if err := json.Unmarshal(d.Body, &ev); err != nil {
				t.Fatal(err)
			}
			var view session.View
			if err := json.Unmarshal(ev.Data, &view); err != nil {
				t.Fatal(err)
			}
			if ev.ID != d.ID || ev.Type != d.Type || ev.CreatedAt.IsZero() || view.ID != s.ID || view.Version < lastVersion {
				t.Errorf("event %s: %+v, view version %d after %d", d.ID, ev, view.Version, lastVersion)
			}
			if _, seq, _ := store.ParseEventID(d.ID); seq != d.Seq {
				t.Errorf("event %s stored at seq %d", d.ID, d.Seq)
			}
			lastVersion = view.Version
		}
		if !slices.Equal(got, want) {
			t.Fatalf("queued %v, want %v", got, want)
		}
	})
}
