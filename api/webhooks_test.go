package api

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// TestWebhookDeliveryLog: with webhooks on, a session's transitions are in
// the delivery log (every exchange checked against the document, the
// events' bodies included); a given-up delivery is listed as failed,
// counted in /v1/stats, and an operator's retry makes it pending again.
func TestWebhookDeliveryLog(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CPW")
	eng := st.newEngine(st.pay, func(c *session.Config) { c.Webhooks = true })
	base := st.serve(st.deps(eng))

	var v session.View
	st.mustStatus(t, req{base: base, method: "POST", path: "/v1/sessions", token: appToken, body: createBody("CPW", 1),
		header: map[string]string{"Idempotency-Key": newKey()}}, http.StatusCreated).json(t, &v)
	if _, err := eng.Apply(bg, v.ID, fsm.Event{Type: fsm.EvConfirm, At: time.Now(), By: fsm.ByPayScore}); err != nil {
		t.Fatal(err)
	}
	list := func(query string, want int) DeliveryList {
		t.Helper()
		var l DeliveryList
		st.mustStatus(t, req{base: base, method: "GET", path: "/v1/webhooks/deliveries" + query, token: operatorToken}, want).json(t, &l)
		return l
	}
	all := list("?session_id="+v.ID, http.StatusOK)
	var types []string
	for _, d := range all.Deliveries {
		types = append(types, d.Type)
		if d.Status != store.DeliveryPending || d.SessionID != v.ID || d.Attempts != 0 || len(d.Event) == 0 {
			t.Fatalf("delivery %+v", d)
		}
	}
	if !slices.Equal(types, []string{"session.user_confirmed", "session.created"}) {
		t.Fatalf("types newest first %v", types)
	}
	if l := list("?status=pending&limit=1", http.StatusOK); len(l.Deliveries) != 1 || l.NextCursor == "" {
		t.Fatalf("first page %+v", l)
	}
	st.mustStatus(t, req{base: base, method: "GET", path: "/v1/webhooks/deliveries?status=lost", token: operatorToken}, http.StatusBadRequest)
	st.mustStatus(t, req{base: base, method: "GET", path: "/v1/webhooks/deliveries", token: appToken}, http.StatusForbidden)

	// the created event is given up (as the sender does after 24 h)
	ds, err := st.store.ClaimDeliveries(bg, time.Now(), "test", time.Minute, 10)
	if err != nil || len(ds) != 1 || ds[0].Type != "session.created" {
		t.Fatalf("claimed %+v, %v", ds, err)
	}
	if err := st.store.SettleDelivery(bg, ds[0], store.DeliveryOutcome{Status: store.DeliveryFailed, At: time.Now(), Error: "connection refused"}); err != nil {
		t.Fatal(err)
	}
	failed := list("?status=failed", http.StatusOK)
	if len(failed.Deliveries) != 1 || failed.Deliveries[0].ID != ds[0].ID || failed.Deliveries[0].DoneAt == nil || failed.Deliveries[0].LastError == "" {
		t.Fatalf("failed %+v", failed)
	}
	var stats Stats
	st.mustStatus(t, req{base: base, method: "GET", path: "/v1/stats", token: operatorToken}, http.StatusOK).json(t, &stats)
	if stats.Webhooks.Failed != 1 || stats.Webhooks.Pending != 1 {
		t.Fatalf("stats %+v", stats.Webhooks)
	}

	var d Delivery
	st.mustStatus(t, req{base: base, method: "POST", path: "/v1/webhooks/deliveries/" + ds[0].ID + "/retry", token: operatorToken}, http.StatusOK).json(t, &d)
	if d.Status != store.DeliveryPending || d.NextAttemptAt == nil || d.Attempts != 1 {
		t.Fatalf("retried %+v", d)
	}
	if l := list("?status=failed", http.StatusOK); len(l.Deliveries) != 0 {
		t.Fatalf("failed after the retry %+v", l)
	}
	st.mustStatus(t, req{base: base, method: "POST", path: "/v1/webhooks/deliveries/evt_nope_1_0/retry", token: operatorToken}, http.StatusNotFound).problem(t)
	st.mustStatus(t, req{base: base, method: "POST", path: "/v1/webhooks/deliveries/not-an-id/retry", token: operatorToken}, http.StatusNotFound).problem(t)

	// webhooks off: nothing is queued
	off := st.create(t, "CPW", 2)
	if l := list("?session_id="+off.ID, http.StatusOK); len(l.Deliveries) != 0 {
		t.Fatalf("webhooks off queued %+v", l)
	}
}
