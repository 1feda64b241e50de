package session

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// Webhook event types (docs/contract.md §3 "Webhooks"): "session.<state>" for
// a transition into that state, creation included, and a refund's outcome.
const (
	WebhookRefundSucceeded = "refund.succeeded"
	WebhookRefundFailed    = "refund.failed"
)

// WebhookSessionType is the event type of a transition into state s.
func WebhookSessionType(s fsm.State) string { return "session." + string(s) }

// WebhookEvent is the JSON body POSTed to the webhook receiver.
type WebhookEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"` // the session View of the version the commit creates
}

// webhookEvents returns the events a commit creating version of session id
// tells the webhook receiver of, when webhooks are on: a refund's outcome
// first, then one event per transition, each with view (the session View
// as GET /v1/sessions/{id} returns it after the commit) as its data. Their
// ids are store.EventID(id, version, n, nonce) with a random nonce per
// commit: fixed with the commit (every retry sends them unchanged), and new
// for a commit made again at a version whose first commit a Redis failover
// lost. The store queues them in the same step as the transition.
func (e *Engine) webhookEvents(id string, version int64, ev fsm.Event, r fsm.Result, view []byte) []store.WebhookEvent {
	if !e.cfg.Webhooks || !r.Changed {
		return nil
	}
	type event struct {
		typ string
		at  time.Time
	}
	var evs []event
	switch ev.Type {
	case fsm.EvRefundSucceeded:
		evs = append(evs, event{WebhookRefundSucceeded, ev.At})
	case fsm.EvRefundFailed:
		evs = append(evs, event{WebhookRefundFailed, ev.At})
	}
	for _, h := range r.History {
		evs = append(evs, event{WebhookSessionType(h.To), h.At})
	}
	out := make([]store.WebhookEvent, 0, len(evs))
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	for n, x := range evs {
		at := x.at
		if at.IsZero() {
			at = r.Session.UpdatedAt
		}
		we := WebhookEvent{ID: store.EventID(id, version, n, hex.EncodeToString(nonce)), Type: x.typ, CreatedAt: at.UTC(), Data: view}
		body, err := json.Marshal(we)
		if err != nil {
			// a View always encodes; an event that cannot is a bug, and
			// losing the commit for it would be worse
			e.log.Error("encode webhook event", "session", id, "type", x.typ, "err", err)
			break
		}
		out = append(out, store.WebhookEvent{ID: we.ID, Type: we.Type, CreatedAt: we.CreatedAt, Body: body})
	}
	return out
}
