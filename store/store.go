// Package store is chargeflow's persistence port: the one interface the
// engine, the API and the charger link use to keep sessions, their history,
// the outbox of effects (timers included), idempotency records, chargers,
// tariffs, anomalies and the feed of changes.
//
// Two adapters implement it and are held to the same contract by one
// conformance suite (store/storetest): store/redis (go-redis/v9, for a single
// node, Sentinel or Cluster) and store/bolt (go.etcd.io/bbolt, the durable
// single-node default). Neither adapter imports the other; cmd chooses one.
//
// # The rules the port keeps (docs/contract.md §1)
//
//   - A transition and the effects it asks for are persisted as ONE step
//     (Commit): the new record, its history entries and its effects as outbox
//     tasks, all or nothing, before any effect runs. The step is a
//     compare-and-set on the session's Version, so two processes can never
//     both apply an event to one session: the loser gets ErrVersionConflict,
//     reloads and re-applies.
//   - Timers are outbox tasks with a due time, so they survive restarts.
//   - Time is an input: due-ness is decided by the `now` given to Claim
//     (and ReleaseLeases); the
//     expiry of idempotency records by the adapter's injected clock
//     (Options.Now). Nothing here decides a transition by reading a clock.
//
// # Errors
//
// Methods return the sentinels below, wrapped with context; test them with
// errors.Is. ErrVersionConflict, ErrExists and ErrConnectorBusy all wrap
// ErrConflict (the API's 409). ErrCorrupt wraps an error naming the stored key.
// Transient failures of the backing service (connection refused, timeouts,
// a Redis failover in progress) wrap ErrUnavailable; IsRetryable reports them.
// Everything else is permanent.
//
// # Times
//
// Records (sessions, chargers, changes) keep their times exactly as JSON does.
// Outbox bookkeeping (Task.DueAt, Task.LeaseUntil) and expiries are kept to the
// millisecond: both adapters truncate them the same way.
package store

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
)

// The error vocabulary of the port.
var (
	// ErrNotFound: no such record (or it expired).
	ErrNotFound = errors.New("not found")
	// ErrConflict is the class of the three refusals below.
	ErrConflict = errors.New("conflict")
	// ErrVersionConflict: Commit's ExpectedVersion is not the stored one.
	// The caller reloads the session and re-applies its event.
	ErrVersionConflict = fmt.Errorf("%w: stale session version", ErrConflict)
	// ErrExists: CreateSession with an id already stored.
	ErrExists = fmt.Errorf("%w: already exists", ErrConflict)
	// ErrConnectorBusy: CreateSession on a connector that has an active session.
	ErrConnectorBusy = fmt.Errorf("%w: connector busy", ErrConflict)
	// ErrLeaseLost: Complete or Retry of a task that is no longer held under
	// that lease (it expired and was claimed again, or the task was withdrawn
	// by a disarm). The worker must not assume its outcome was recorded.
	ErrLeaseLost = errors.New("outbox lease lost")
	// ErrCorrupt: stored data that cannot be decoded or is invalid (an unknown
	// state). The wrapped error names the key.
	ErrCorrupt = errors.New("corrupt stored data")
	// ErrInvalid: a malformed argument (empty id, bad cursor, bad version).
	ErrInvalid = errors.New("invalid argument")
	// ErrUnavailable: the backing service is unreachable or busy; retry later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// IsRetryable reports whether err is a transient failure of the backing
// service (the same call may succeed later). ErrVersionConflict is not
// "retryable" in this sense: the caller must reload before trying again.
func IsRetryable(err error) bool { return errors.Is(err, ErrUnavailable) }

// Corrupt returns an ErrCorrupt naming key.
func Corrupt(key string, err error) error {
	return fmt.Errorf("%w: key %q: %w", ErrCorrupt, key, err)
}

// Store is the persistence port. All methods are safe for concurrent use by
// any number of goroutines (and processes, for the Redis adapter). After
// Close every method returns ErrClosed (or, for Redis, a closed-client error
// wrapped as ErrClosed).
type Store interface {
	// Ping checks the backing service is usable (readiness).
	Ping(ctx context.Context) error
	// Close releases the store and waits for its goroutines. It is idempotent.
	Close() error

	// CreateSession stores a new session as version 1 with its first history
	// entries and effects, and appends a change to the feed when c.Publish.
	// c.ExpectedVersion must be 0. It refuses with ErrExists if the id is
	// stored, and ErrConnectorBusy if the charger+connector has an active
	// session (fsm.State.Active); nothing is written then.
	CreateSession(ctx context.Context, c Commit) error
	// Commit applies a transition atomically (see Commit). Errors:
	// ErrNotFound (no such session), ErrVersionConflict, ErrInvalid.
	Commit(ctx context.Context, c Commit) error
	// Durable returns once every commit made so far for the session can no
	// longer be lost by a failover of the backing service (docs/contract.md
	// §7): on Redis, once a replica of the primary that holds the session
	// has acknowledged them, within the adapter's bound (WAIT); a primary
	// without a connected replica, and bbolt (which fsyncs every commit),
	// answer at once. ErrUnavailable when the bound passes first: the caller
	// must not act on those commits yet, nor acknowledge what they recorded,
	// and tries again later. The engine asks before an effect
	// fsm.Machine.Durable names and before acknowledging an event
	// fsm.Machine.DurableEvent names. An unknown session is not an error.
	Durable(ctx context.Context, sessionID string) error
	// GetSession returns the stored record. ErrNotFound, ErrCorrupt.
	GetSession(ctx context.Context, id string) (fsm.Session, error)
	// History returns the session's history, oldest first. ErrNotFound.
	History(ctx context.Context, id string) ([]fsm.HistoryEntry, error)
	// SessionByOutOrderNo finds the session of a Pay Score order. ErrNotFound.
	SessionByOutOrderNo(ctx context.Context, outOrderNo string) (fsm.Session, error)
	// ActiveSession returns the active session of a connector. ErrNotFound.
	ActiveSession(ctx context.Context, chargerID string, connector int) (fsm.Session, error)
	// ListSessions pages through sessions, newest (CreatedAt) first. A page
	// may hold fewer than Limit sessions while NextCursor is not empty (a
	// selective filter is scanned in bounded steps); the end is NextCursor == "".
	ListSessions(ctx context.Context, f Filter) (Page, error)
	// CountByState counts sessions per state (for metrics and the board).
	// The Redis adapter may over-count after a crash left a stale index entry.
	CountByState(ctx context.Context) (map[fsm.State]int, error)

	// Claim leases up to max outbox tasks due at now and not under a live
	// lease to owner for lease, oldest due first. A task whose lease runs out
	// can be claimed again (its worker crashed or stalled).
	Claim(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]Task, error)
	// Complete removes a task its worker has done. ErrLeaseLost if t.Lease
	// no longer holds it.
	Complete(ctx context.Context, t Task) error
	// Retry releases a task to be tried again at nextDue, counting the
	// attempt and keeping errText. ErrLeaseLost if t.Lease no longer holds it.
	Retry(ctx context.Context, t Task, nextDue time.Time, errText string) error
	// PendingTasks lists a session's tasks (done ones are gone), by id.
	PendingTasks(ctx context.Context, sessionID string) ([]Task, error)
	// ReleaseLeases gives back, at once, every outbox claim whose owner starts
	// with ownerPrefix (a restarted instance releasing what its previous life
	// had claimed: the same instance id means that process is gone). The
	// tasks become due again at their own due time (never later than now);
	// their Tries do not change. It returns how many claims it released.
	// Only live leases (LeaseUntil after now) count; a released claim's token
	// is void, so a late Complete or Retry under it gets ErrLeaseLost.
	// Include the separator in the prefix ("inst-7/", so that "inst-70/…"
	// keeps its claims), and call it before the new life's workers claim
	// anything under that prefix. An empty prefix is ErrInvalid.
	ReleaseLeases(ctx context.Context, ownerPrefix string, now time.Time) (int, error)
	// OutboxStats reports the outbox's size and its oldest due time.
	OutboxStats(ctx context.Context, now time.Time) (OutboxStats, error)

	// PutIdempotency records that a request with key and requestHash is being
	// served, unless a live record for key exists: then it returns that record
	// and created == false (the caller compares hashes: another body → 409;
	// Status 0 → the first request is still in flight). A record lives for ttl.
	PutIdempotency(ctx context.Context, key, requestHash string, ttl time.Duration) (rec IdemRecord, created bool, err error)
	// SaveIdempotentResponse stores the response for a live record with the
	// same RequestHash; its expiry is unchanged. ErrNotFound if absent or
	// expired, ErrConflict if the hash differs.
	SaveIdempotentResponse(ctx context.Context, key string, rec IdemRecord) error
	// DeleteIdempotency drops a record (the request failed in a way the
	// client may retry). Deleting an absent record is not an error.
	DeleteIdempotency(ctx context.Context, key string) error
	// MarkProcessed records (scope, key) for ttl and reports whether this is
	// the first time it is seen alive: charger events (`txn:<event_id>`,
	// `meter:<session>:<seq>`) and payment notifications.
	MarkProcessed(ctx context.Context, scope, key string, ttl time.Duration) (first bool, err error)

	// PutCharger stores (registers or replaces) a charger.
	PutCharger(ctx context.Context, c Charger) error
	// GetCharger returns a charger. ErrNotFound.
	GetCharger(ctx context.Context, id string) (Charger, error)
	// ListChargers returns every charger, by id.
	ListChargers(ctx context.Context) ([]Charger, error)
	// UpdateCharger changes a stored charger atomically (read, fn, write;
	// fn may run more than once under contention, so it must only change c).
	// When fn returns non-nil data a `charger` change carrying it is appended
	// to the feed. ErrNotFound; fn's error is returned as is.
	UpdateCharger(ctx context.Context, id string, fn func(c *Charger) (changeData []byte, err error)) (Charger, error)

	// PutTariff stores a tariff under t.ID. GetTariff: ErrNotFound.
	PutTariff(ctx context.Context, t money.Tariff) error
	GetTariff(ctx context.Context, id string) (money.Tariff, error)
	// ListTariffs returns every tariff, by id.
	ListTariffs(ctx context.Context) ([]money.Tariff, error)

	// AddAnomaly keeps a message that could not be used (its ID is assigned
	// when empty) and returns the stored ID. The oldest are trimmed beyond the
	// adapter's retention.
	AddAnomaly(ctx context.Context, a Anomaly) (string, error)
	// ListAnomalies pages anomalies newest first; cursor is a NextCursor.
	ListAnomalies(ctx context.Context, limit int, cursor string) (AnomalyPage, error)

	// ReadChanges returns up to max changes with IDs strictly after afterID
	// ("" = from the oldest retained), in order. When there are none it waits
	// up to wait for one (0 = do not wait) and returns an empty slice if none
	// came. If afterID was already trimmed away, reading resumes at the oldest
	// retained change (a gap the caller cannot avoid). ErrInvalid for an ID
	// this adapter never issued.
	ReadChanges(ctx context.Context, afterID string, max int, wait time.Duration) ([]Change, error)
	// LatestChangeID is the ID of the newest change ("" when none), so a new
	// reader can start with what happens from now on.
	LatestChangeID(ctx context.Context) (string, error)

	// StartReconciliation claims the run of date's reconciliation for owner,
	// atomically across instances: it stores a running report (RanAt now)
	// and returns true when MayStartReconciliation allows it, else false.
	// ErrInvalid for a bad date.
	StartReconciliation(ctx context.Context, date, owner string, now time.Time, retryAfter time.Duration) (bool, error)
	// PutReconciliation stores (replaces) the report of r.Date. ErrInvalid.
	PutReconciliation(ctx context.Context, r Reconciliation) error
	// GetReconciliation returns date's report. ErrNotFound, ErrInvalid.
	GetReconciliation(ctx context.Context, date string) (Reconciliation, error)
	// ListReconciliations returns up to limit reports (1..MaxReconciliations),
	// newest date first.
	ListReconciliations(ctx context.Context, limit int) ([]Reconciliation, error)

	// Webhooks: the webhook events and their delivery log (webhooks.go).
	Webhooks
}

// Commit is one transition: the new record, its history and effects.
type Commit struct {
	// ExpectedVersion is the version the transition was computed from (0 for
	// CreateSession). The stored record becomes version ExpectedVersion+1
	// whatever Session.Version says.
	ExpectedVersion int64
	// Session is the new record.
	Session fsm.Session
	// History is appended to the session's history.
	History []fsm.HistoryEntry
	// Effects become outbox tasks due at their DueAt (the commit's
	// Session.UpdatedAt when zero), except fsm.EffDisarmTimer: it removes
	// the pending task whose ID is its TimerID, in the same step. An effect
	// whose ID is already pending is kept as it is (idempotent).
	Effects []fsm.Effect
	// Publish appends one `session` change carrying ChangeData (the API's
	// session view) to the feed.
	Publish    bool
	ChangeData []byte
	// Webhooks are events for the webhook receiver, queued for delivery in
	// the same step (see Webhooks); the n-th must have the id
	// EventID(session, ExpectedVersion+1, n, nonce).
	Webhooks []WebhookEvent
	// Lease, when set, leases the effect tasks this commit adds in the same
	// step, so that the committing process performs them at once instead of
	// waiting for a Claim (see CommitLease). nil: no lease.
	Lease *CommitLease
}

// CommitLease asks a Commit (or CreateSession) to lease, under Token until
// Until, every effect task the commit ADDS whose due time is not after
// DueBy, exactly as a Claim at DueBy by the token's owner would have: the
// task is not claimable by anyone until Until, Complete and Retry take the
// token, ReleaseLeases releases it by the token's owner. A task already
// pending (its effect id was added by an earlier commit) is kept as it is
// and not granted; a task due after DueBy is added without a lease.
// A disarm is never leased.
type CommitLease struct {
	// Token is the lease token: LeaseToken(owner, random).
	Token string
	// Until is the end of the lease; DueBy bounds the due times leased.
	Until, DueBy time.Time
	// Granted is filled by a successful commit with the tasks it leased
	// (Owner, Lease and LeaseUntil set, Tries 0), in the order of the
	// commit's effects; empty when it leased none or the commit failed.
	Granted []Task
}

// LeaseFor reports whether l leases a task added with effect e due at due
// (l may be nil), for the adapters.
func (l *CommitLease) LeaseFor(e fsm.Effect, due time.Time) bool {
	return l != nil && e.Kind != fsm.EffDisarmTimer && !due.After(l.DueBy.Truncate(time.Millisecond))
}

// Grant records that the commit leased e's task (session sid, due at due).
// An effect id given twice in one commit is granted once.
func (l *CommitLease) Grant(sid string, e fsm.Effect, due time.Time) {
	for _, g := range l.Granted {
		if g.ID == e.ID {
			return
		}
	}
	l.Granted = append(l.Granted, Task{ID: e.ID, SessionID: sid, Effect: e, DueAt: due.Truncate(time.Millisecond),
		Owner: LeaseOwner(l.Token), Lease: l.Token, LeaseUntil: l.Until.Truncate(time.Millisecond)})
}

// Filter selects sessions for ListSessions. Empty fields match everything.
type Filter struct {
	State     fsm.State
	ChargerID string
	Flag      fsm.Flag
	// Limit is the page size: 1..MaxPage, 0 means DefaultPage.
	Limit int
	// Cursor is a previous Page.NextCursor ("" = the first page).
	Cursor string
}

// Page sizes.
const (
	DefaultPage = 50
	MaxPage     = 500
)

// Page is one page of sessions.
type Page struct {
	Sessions   []fsm.Session
	NextCursor string
}

// Task is one outbox entry: an effect to perform, or a timer to fire.
type Task struct {
	ID        string // the effect's ID (a timer's ID for arm_timer)
	SessionID string
	Effect    fsm.Effect
	DueAt     time.Time // millisecond precision
	Tries     int       // failed tries so far (Retry counts them)
	// Owner and Lease are set while claimed: Owner is the claimer's name,
	// Lease the token of this very claim (Complete and Retry present it).
	Owner      string
	Lease      string
	LeaseUntil time.Time
	LastError  string
}

// OutboxStats describes the outbox.
type OutboxStats struct {
	Pending   int       // tasks not done (the Redis adapter may over-count briefly)
	DueNow    int       // of which due at now (leased ones included)
	OldestDue time.Time // zero when empty
}

// IdemRecord is what an Idempotency-Key remembers.
type IdemRecord struct {
	RequestHash string
	// Status is the HTTP status of the stored response; 0 while the first
	// request is still being served.
	Status    int
	Body      []byte
	SessionID string
	ExpiresAt time.Time
}

// Charger is a registered charger and what we last heard from it.
type Charger struct {
	ID           string `json:"id"`
	Connectors   []int  `json:"connectors"`
	TariffID     string `json:"tariff_id"`
	PasswordHash string `json:"password_hash,omitempty"`

	Online      bool      `json:"online"`
	BootID      string    `json:"boot_id,omitempty"`
	Model       string    `json:"model,omitempty"`
	FW          string    `json:"fw,omitempty"`
	LastHeardAt time.Time `json:"last_heard_at,omitzero"`
	// ConnectorStatus is the last status reported per connector.
	ConnectorStatus map[int]string `json:"connector_status,omitempty"`
	UpdatedAt       time.Time      `json:"updated_at,omitzero"`
}

// Anomaly is a message kept because it could not be used.
type Anomaly struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at"`
	ChargerID string    `json:"charger_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Topic     string    `json:"topic,omitempty"`
	Payload   []byte    `json:"payload,omitempty"`
	Reason    string    `json:"reason"`
}

// AnomalyPage is one page of anomalies.
type AnomalyPage struct {
	Anomalies  []Anomaly
	NextCursor string
}

// ChangeKind says what a change is about.
type ChangeKind string

// The change kinds (the SSE event names).
const (
	ChangeSession ChangeKind = "session"
	ChangeCharger ChangeKind = "charger"
)

// Change is one entry of the feed.
type Change struct {
	// ID increases with every change (the SSE `id:`); opaque to callers.
	ID        string     `json:"-"`
	Kind      ChangeKind `json:"kind"`
	SessionID string     `json:"session_id,omitempty"`
	Version   int64      `json:"version,omitempty"` // the session's version
	ChargerID string     `json:"charger_id,omitempty"`
	At        time.Time  `json:"at"`
	Data      []byte     `json:"data"` // the JSON snapshot to send
}

// ---- helpers shared by the adapters ----

// CheckCommit validates c for CreateSession (create) or Commit and returns
// the record to store (Version set).
func CheckCommit(c Commit, create bool) (fsm.Session, error) {
	s := c.Session.Clone()
	switch {
	case s.ID == "":
		return s, fmt.Errorf("%w: session without id", ErrInvalid)
	case !s.State.Valid():
		return s, fmt.Errorf("%w: session %s: unknown state %q", ErrInvalid, s.ID, s.State)
	case create && c.ExpectedVersion != 0:
		return s, fmt.Errorf("%w: create with expected version %d", ErrInvalid, c.ExpectedVersion)
	case !create && c.ExpectedVersion < 1:
		return s, fmt.Errorf("%w: commit with expected version %d", ErrInvalid, c.ExpectedVersion)
	case create && s.ChargerID == "":
		return s, fmt.Errorf("%w: session %s without charger", ErrInvalid, s.ID)
	}
	if l := c.Lease; l != nil {
		l.Granted = nil
		if l.Token == "" || !l.Until.After(l.DueBy) {
			return s, fmt.Errorf("%w: commit lease needs a token and an end after its due bound", ErrInvalid)
		}
	}
	for _, e := range c.Effects {
		if e.Kind == fsm.EffDisarmTimer {
			if e.TimerID == "" {
				return s, fmt.Errorf("%w: disarm without timer id", ErrInvalid)
			}
			continue
		}
		if e.ID == "" {
			return s, fmt.Errorf("%w: effect %s without id", ErrInvalid, e.Kind)
		}
	}
	s.Version = c.ExpectedVersion + 1
	return s, nil
}

// TaskDue is when an effect's task is due: its DueAt, else the commit's time.
func TaskDue(e fsm.Effect, s fsm.Session) time.Time {
	t := e.DueAt
	if t.IsZero() {
		t = s.UpdatedAt
	}
	return t.Truncate(time.Millisecond)
}

// MarshalSession encodes a record.
func MarshalSession(s fsm.Session) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode session %s: %w", s.ID, err)
	}
	return b, nil
}

// DecodeSession decodes a stored record and checks it, naming key in the
// ErrCorrupt it returns for bad data.
func DecodeSession(key string, b []byte) (fsm.Session, error) {
	var s fsm.Session
	if err := json.Unmarshal(b, &s); err != nil {
		return fsm.Session{}, Corrupt(key, err)
	}
	if !s.State.Valid() {
		return fsm.Session{}, Corrupt(key, fmt.Errorf("unknown state %q", s.State))
	}
	if s.ID == "" || s.Version < 1 {
		return fsm.Session{}, Corrupt(key, fmt.Errorf("no id or version"))
	}
	return s, nil
}

// DecodeJSON decodes stored JSON into v, naming key on failure.
func DecodeJSON(key string, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return Corrupt(key, err)
	}
	return nil
}

// Matches reports whether s passes f's field filters.
func (f Filter) Matches(s fsm.Session) bool {
	return (f.State == "" || s.State == f.State) &&
		(f.ChargerID == "" || s.ChargerID == f.ChargerID) &&
		(f.Flag == "" || s.HasFlag(f.Flag))
}

// Index names the list an adapter scans for f: the most selective filter
// given — state ("s"), then flag ("f"), then charger ("c"), else all ("a").
// The other filters are checked on the records with Matches.
func (f Filter) Index() (kind, value string) {
	switch {
	case f.State != "":
		return "s", string(f.State)
	case f.Flag != "":
		return "f", string(f.Flag)
	case f.ChargerID != "":
		return "c", f.ChargerID
	}
	return "a", ""
}

// PageLimit returns the effective page size, or ErrInvalid.
func (f Filter) PageLimit() (int, error) {
	switch {
	case f.Limit == 0:
		return DefaultPage, nil
	case f.Limit < 0 || f.Limit > MaxPage:
		return 0, fmt.Errorf("%w: limit %d not in 1..%d", ErrInvalid, f.Limit, MaxPage)
	}
	return f.Limit, nil
}

// SortKey orders sessions for lists: newest first is descending SortKey.
// It is the creation time (16 hex digits of Unix nanoseconds, so byte order
// is time order) followed by the id, which breaks ties and makes the key
// unique. Both adapters index lists by it.
func SortKey(s fsm.Session) string {
	ns := s.CreatedAt.UnixNano()
	if ns < 0 || s.CreatedAt.IsZero() {
		ns = 0
	}
	return fmt.Sprintf("%016x|%s", uint64(ns), s.ID)
}

// SortKeyID returns the session id in a SortKey.
func SortKeyID(k string) string {
	if i := strings.IndexByte(k, '|'); i >= 0 {
		return k[i+1:]
	}
	return k
}

// EncodeCursor makes an opaque cursor of a sort key.
func EncodeCursor(k string) string { return base64.RawURLEncoding.EncodeToString([]byte(k)) }

// DecodeCursor reverses EncodeCursor ("" stays ""), or ErrInvalid.
func DecodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 18 || b[16] != '|' {
		return "", fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	if _, err := hex.DecodeString(string(b[:16])); err != nil {
		return "", fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	return string(b), nil
}

// LeaseToken makes the token of one claim: the owner's name and a random
// suffix, so a worker whose lease expired can never act on a later claim of
// the same task, even by the same owner.
func LeaseToken(owner string, random []byte) string {
	return owner + "#" + hex.EncodeToString(random)
}

// LeaseOwner returns the owner's name in a lease token.
func LeaseOwner(token string) string {
	if i := strings.LastIndexByte(token, '#'); i >= 0 {
		return token[:i]
	}
	return token
}

// Millis converts t to Unix milliseconds; the zero time is 0.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMillis converts Unix milliseconds back to a time; 0 is the zero time.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
