package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Webhooks is the part of the port that keeps the events sent to the
// webhook receiver (docs/contract.md §3 "Webhooks") and their delivery log.
//
// An event is recorded by the commit of the transition it tells of
// (Commit.Webhooks), so it is as durable as the transition and never lost.
// Each session's events form a queue in commit order (Delivery.Seq); only
// the oldest pending one of a session (its head) is ever handed out, and
// only while no other of the session's deliveries is leased, so event n+1
// of a session is not sent before event n is delivered or given up. Several
// processes share the queues through leases, as the outbox does.
type Webhooks interface {
	// ClaimDeliveries leases, for up to max sessions, the head of the
	// session's queue when it is due at now (NextAt) and the queue is not
	// under a live lease, to owner for lease. A lease that runs out lets the
	// head be claimed again (at least once). Oldest due first.
	ClaimDeliveries(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]Delivery, error)
	// SettleDelivery records the outcome of an attempt of a claimed delivery
	// and releases the session's queue: DeliveryDelivered and DeliveryFailed
	// (given up) take it off the queue, DeliveryPending keeps it at the head,
	// due at o.NextAt. ErrLeaseLost if d.Lease no longer holds the queue.
	SettleDelivery(ctx context.Context, d Delivery, o DeliveryOutcome) error
	// GetDelivery returns one delivery. ErrNotFound, ErrInvalid for an id
	// that is not an event id.
	GetDelivery(ctx context.Context, id string) (Delivery, error)
	// RetryDelivery puts a delivery back in its session's queue, due at now
	// with a new delivery window starting at now (an operator's retry): a
	// failed or delivered one is sent again, a pending one is tried at once.
	// It takes its place in the session's order (by Seq). ErrNotFound.
	RetryDelivery(ctx context.Context, id string, now time.Time) (Delivery, error)
	// ListDeliveries pages through deliveries newest first (by CreatedAt,
	// then id; one session's by Seq, its true order). As with ListSessions a page may hold fewer than Limit
	// deliveries while NextCursor is not empty; the end is NextCursor == "".
	ListDeliveries(ctx context.Context, f DeliveryFilter) (DeliveryPage, error)
	// DeliveryStats counts pending and failed deliveries. The Redis adapter
	// may over-count after a crash left a stale index entry.
	DeliveryStats(ctx context.Context) (DeliveryStats, error)
	// ReleaseDeliveryLeases gives back at once every live claim of a queue
	// whose owner starts with ownerPrefix (a restarted instance releasing
	// what its previous life held, as ReleaseLeases does for the outbox); the
	// heads are due again at their own time. A released claim's settle gets
	// ErrLeaseLost. It returns how many it released; "" is ErrInvalid.
	ReleaseDeliveryLeases(ctx context.Context, ownerPrefix string, now time.Time) (int, error)
	// TrimDeliveries deletes delivered and failed deliveries done before
	// doneBefore (the log's retention), oldest first, at most max of them,
	// and returns how many it deleted. Pending ones are never deleted. It
	// looks at a bounded number of the oldest entries per call: call it
	// again while it returns max.
	TrimDeliveries(ctx context.Context, doneBefore time.Time, max int) (int, error)
}

// WebhookEvent is one event to deliver, recorded with its commit.
type WebhookEvent struct {
	// ID is EventID(session, version, n, nonce): unique and stable (the
	// receiver's deduplication key), and the delivery's id.
	ID        string
	Type      string
	CreatedAt time.Time
	// Body is exactly what is POSTed (JSON).
	Body []byte
}

// DeliveryStatus is where a delivery is.
type DeliveryStatus string

// The delivery statuses.
const (
	// DeliveryPending: not delivered yet (never tried, or being retried).
	DeliveryPending DeliveryStatus = "pending"
	// DeliveryDelivered: a 2xx answer was received.
	DeliveryDelivered DeliveryStatus = "delivered"
	// DeliveryFailed: given up (the delivery window passed without a 2xx).
	DeliveryFailed DeliveryStatus = "failed"
)

// Valid reports whether s is a known status.
func (s DeliveryStatus) Valid() bool {
	return s == DeliveryPending || s == DeliveryDelivered || s == DeliveryFailed
}

// Delivery is an event and what became of sending it.
type Delivery struct {
	ID        string `json:"id"`
	SessionID string `json:"session_id"`
	// Seq orders a session's deliveries: EventSeq(version, n).
	Seq       int64           `json:"seq"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Body      json.RawMessage `json:"body"`

	Status   DeliveryStatus `json:"status"`
	Attempts int            `json:"attempts"`
	// Since starts the delivery window (CreatedAt, or an operator's retry):
	// the sender gives up when it has passed without a 2xx.
	Since time.Time `json:"since"`
	// NextAt is when a pending delivery is next due (ms precision).
	NextAt        time.Time `json:"next_at,omitzero"`
	LastAttemptAt time.Time `json:"last_attempt_at,omitzero"`
	// LastStatus is the HTTP status of the last attempt (0: no answer).
	LastStatus int       `json:"last_status,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	DoneAt     time.Time `json:"done_at,omitzero"` // delivered or given up

	// Lease is set on a claimed delivery: the token SettleDelivery presents.
	Lease      string    `json:"-"`
	LeaseUntil time.Time `json:"-"`
}

// DeliveryOutcome is the result of one attempt.
type DeliveryOutcome struct {
	// Status is DeliveryDelivered, DeliveryFailed (give up) or
	// DeliveryPending (try again at NextAt).
	Status DeliveryStatus
	At     time.Time // when the attempt ended
	NextAt time.Time
	// HTTPStatus is the receiver's answer (0: none); Error says what went wrong.
	HTTPStatus int
	Error      string
}

// DeliveryFilter selects deliveries. Empty fields match everything.
type DeliveryFilter struct {
	Status    DeliveryStatus
	SessionID string
	// Limit is the page size: 1..MaxPage, 0 means DefaultPage.
	Limit  int
	Cursor string
}

// DeliveryPage is one page of deliveries.
type DeliveryPage struct {
	Deliveries []Delivery
	NextCursor string
}

// DeliveryStats describes the delivery log.
type DeliveryStats struct {
	Pending int // deliveries not delivered yet
	Failed  int // deliveries given up
}

// maxEventsPerCommit bounds a commit's events, so that EventSeq is unique.
const maxEventsPerCommit = 1000

// EventID is the id of the n-th event (from 0) of the commit that made
// version of session: evt_<session>_<version>_<n>, followed by
// "_r<nonce>" when nonce is not empty. The engine gives every commit a
// random nonce: a commit lost in a Redis failover and made again differently
// at the same version must not reuse the lost events' ids (a receiver
// de-duplicates on them).
func EventID(session string, version int64, n int, nonce ...string) string {
	id := "evt_" + session + "_" + strconv.FormatInt(version, 10) + "_" + strconv.Itoa(n)
	if len(nonce) > 0 && nonce[0] != "" {
		id += "_r" + nonce[0]
	}
	return id
}

// EventSeq orders a session's events: by version, then by place in the commit.
func EventSeq(version int64, n int) int64 { return version*maxEventsPerCommit + int64(n) }

// ParseEventID returns the session and Seq an EventID names, or ErrInvalid.
func ParseEventID(id string) (session string, seq int64, err error) {
	session, version, n, _, err := parseEventID(id)
	return session, EventSeq(version, n), err
}

func parseEventID(id string) (session string, version int64, n int, nonce string, err error) {
	bad := fmt.Errorf("%w: %q is not an event id", ErrInvalid, id)
	rest, ok := strings.CutPrefix(id, "evt_")
	if !ok {
		return "", 0, 0, "", bad
	}
	if i := strings.LastIndexByte(rest, '_'); i > 0 && strings.HasPrefix(rest[i+1:], "r") {
		nonce, rest = rest[i+2:], rest[:i]
		if nonce == "" || strings.Trim(nonce, "0123456789abcdef") != "" {
			return "", 0, 0, "", bad
		}
	}
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 {
		return "", 0, 0, "", bad
	}
	n, nerr := strconv.Atoi(rest[i+1:])
	j := strings.LastIndexByte(rest[:i], '_')
	if nerr != nil || j <= 0 || n < 0 || n >= maxEventsPerCommit {
		return "", 0, 0, "", bad
	}
	v, verr := strconv.ParseInt(rest[j+1:i], 10, 64)
	if verr != nil || v < 1 {
		return "", 0, 0, "", bad
	}
	return rest[:j], v, n, nonce, nil
}

// NewDeliveries validates a commit's events (session id, version: the
// version the commit creates) and returns them as pending deliveries, due
// at once. ErrInvalid for an event whose id is not EventID(id, version, n, …).
func NewDeliveries(session string, version int64, events []WebhookEvent) ([]Delivery, error) {
	if len(events) > maxEventsPerCommit {
		return nil, fmt.Errorf("%w: %d webhook events in one commit", ErrInvalid, len(events))
	}
	out := make([]Delivery, 0, len(events))
	for n, ev := range events {
		if sess, v, m, nonce, err := parseEventID(ev.ID); err != nil || sess != session || v != version || m != n || ev.ID != EventID(session, version, n, nonce) {
			return nil, fmt.Errorf("%w: webhook event %q of session %s version %d: want id %s[_r<hex>]", ErrInvalid, ev.ID, session, version, EventID(session, version, n))
		}
		if ev.Type == "" || !json.Valid(ev.Body) {
			return nil, fmt.Errorf("%w: webhook event %s without type or JSON body", ErrInvalid, ev.ID)
		}
		at := ev.CreatedAt.Truncate(time.Millisecond)
		out = append(out, Delivery{ID: ev.ID, SessionID: session, Seq: EventSeq(version, n), Type: ev.Type,
			CreatedAt: ev.CreatedAt, Body: json.RawMessage(ev.Body), Status: DeliveryPending, Since: at, NextAt: at})
	}
	return out, nil
}

// Settled returns d after outcome o (the record SettleDelivery stores).
func (d Delivery) Settled(o DeliveryOutcome) Delivery {
	d.Lease, d.LeaseUntil = "", time.Time{}
	d.Attempts++
	d.Status = o.Status
	d.LastAttemptAt = o.At.Truncate(time.Millisecond)
	d.LastStatus, d.LastError = o.HTTPStatus, o.Error
	d.NextAt = time.Time{}
	switch o.Status {
	case DeliveryPending:
		d.NextAt = o.NextAt.Truncate(time.Millisecond)
	default:
		d.DoneAt = d.LastAttemptAt
	}
	return d
}

// Requeued returns d put back in its queue at now (RetryDelivery).
func (d Delivery) Requeued(now time.Time) Delivery {
	now = now.Truncate(time.Millisecond)
	d.Status, d.Since, d.NextAt, d.DoneAt = DeliveryPending, now, now, time.Time{}
	return d
}

// LogKey orders deliveries for lists: newest first is descending LogKey
// (16 hex digits of the creation time in ms, then the id).
func (d Delivery) LogKey() string {
	ms := Millis(d.CreatedAt)
	if ms < 0 {
		ms = 0
	}
	return fmt.Sprintf("%016x|%s", uint64(ms), d.ID)
}

// LogKeyBefore is the LogKey prefix of the creation time t: every LogKey of
// a delivery created before t sorts before it.
func LogKeyBefore(t time.Time) string { return fmt.Sprintf("%016x", uint64(max(Millis(t), 0))) }

// Trimmable reports whether TrimDeliveries may delete d for doneBefore.
func (d Delivery) Trimmable(doneBefore time.Time) bool {
	return d.Status != DeliveryPending && !d.DoneAt.IsZero() && d.DoneAt.Before(doneBefore)
}

// LogKeyID returns the delivery id in a LogKey.
func LogKeyID(k string) string { return SortKeyID(k) }

// Matches reports whether d passes f's filters.
func (f DeliveryFilter) Matches(d Delivery) bool {
	return (f.Status == "" || d.Status == f.Status) && (f.SessionID == "" || d.SessionID == f.SessionID)
}

// Check validates f and returns the page size, or ErrInvalid.
func (f DeliveryFilter) Check() (int, error) {
	if f.Status != "" && !f.Status.Valid() {
		return 0, fmt.Errorf("%w: delivery status %q", ErrInvalid, f.Status)
	}
	return Filter{Limit: f.Limit}.PageLimit()
}

// SessionKey orders one session's deliveries: newest first is descending
// SessionKey (16 hex digits of Seq, then the id; the cursor of a session's
// list).
func (d Delivery) SessionKey() string { return fmt.Sprintf("%016x|%s", uint64(max(d.Seq, 0)), d.ID) }

// PageSessionDeliveries fills page with the deliveries of one session's
// all that match f, newest (highest Seq) first, after the SessionKey after
// ("" = from the newest), limit at most.
func PageSessionDeliveries(all []Delivery, f DeliveryFilter, limit int, after string, page *DeliveryPage) error {
	slices.SortFunc(all, func(a, b Delivery) int { return strings.Compare(b.SessionKey(), a.SessionKey()) })
	for _, d := range all {
		if after != "" && d.SessionKey() >= after || !f.Matches(d) {
			continue
		}
		if len(page.Deliveries) == limit {
			page.NextCursor = EncodeCursor(page.Deliveries[limit-1].SessionKey())
			return nil
		}
		page.Deliveries = append(page.Deliveries, d)
	}
	return nil
}
