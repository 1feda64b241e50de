package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// Delivery is one entry of the webhook delivery log (docs/contract.md §3
// "Webhooks", docs/operations.md).
type Delivery struct {
	ID        string               `json:"id"` // the event's id
	SessionID string               `json:"session_id"`
	Type      string               `json:"type"`
	CreatedAt time.Time            `json:"created_at"`
	Status    store.DeliveryStatus `json:"status"`
	Attempts  int                  `json:"attempts"`
	// Since starts the delivery window: the event's creation, or the last
	// operator retry. The sender gives up 24 h after it.
	Since         time.Time  `json:"since"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	// LastStatus is the receiver's HTTP status at the last attempt (0: no answer).
	LastStatus int        `json:"last_status"`
	LastError  string     `json:"last_error,omitempty"`
	DoneAt     *time.Time `json:"done_at,omitempty"`
	// Event is the body POSTed, exactly.
	Event json.RawMessage `json:"event"`
}

// WebhookCounts counts the delivery log for GET /v1/stats.
type WebhookCounts struct {
	Pending int `json:"pending"`
	Failed  int `json:"failed"`
}

// DeliveryList is a page of the delivery log.
type DeliveryList struct {
	Deliveries []Delivery `json:"deliveries"`
	NextCursor string     `json:"next_cursor"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func deliveryView(d store.Delivery) Delivery {
	return Delivery{ID: d.ID, SessionID: d.SessionID, Type: d.Type, CreatedAt: d.CreatedAt.UTC(), Status: d.Status,
		Attempts: d.Attempts, Since: d.Since.UTC(), NextAttemptAt: timePtr(d.NextAt), LastAttemptAt: timePtr(d.LastAttemptAt),
		LastStatus: d.LastStatus, LastError: d.LastError, DoneAt: timePtr(d.DoneAt), Event: d.Body}
}

var deliveryStatuses = []store.DeliveryStatus{store.DeliveryPending, store.DeliveryDelivered, store.DeliveryFailed}

// handleListDeliveries: GET /v1/webhooks/deliveries?status=&session_id=&limit=&cursor=,
// newest first; the end is next_cursor == "" (a page may be short while it
// is not).
func (s *server) handleListDeliveries() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := store.DeliveryFilter{Status: store.DeliveryStatus(q.Get("status")), SessionID: q.Get("session_id"), Cursor: q.Get("cursor")}
		fields := map[string]string{}
		if f.Status != "" && !f.Status.Valid() {
			fields["status"] = fmt.Sprintf("unknown status; one of %v", deliveryStatuses)
		}
		f.Limit = pageArgs(q, fields)
		if len(fields) > 0 {
			Error(w, r, session.Invalid(fields))
			return
		}
		page, err := s.store.ListDeliveries(r.Context(), f)
		if err != nil {
			Error(w, r, storeArg(err, "cursor"))
			return
		}
		out := DeliveryList{Deliveries: make([]Delivery, 0, len(page.Deliveries)), NextCursor: page.NextCursor}
		for _, d := range page.Deliveries {
			out.Deliveries = append(out.Deliveries, deliveryView(d))
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}

// handleRetryDelivery: POST /v1/webhooks/deliveries/{id}/retry puts a
// delivery back in its session's queue, due at once, with a new 24 h window:
// a failed or delivered one is sent again (the receiver deduplicates on the
// event id), a pending one is tried now. 404 for an unknown id.
func (s *server) handleRetryDelivery() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		d, err := s.store.RetryDelivery(r.Context(), id, s.now())
		if errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrNotFound) {
			Error(w, r, session.Errorf(session.CodeNotFound, "no delivery %q", id))
			return
		}
		if err != nil {
			Error(w, r, err)
			return
		}
		loggerFrom(r).Info("webhook delivery retried by an operator", "delivery", id, "session", d.SessionID, "by", callerFrom(r.Context()).name)
		writeJSON(w, r, http.StatusOK, deliveryView(d))
	}
}
