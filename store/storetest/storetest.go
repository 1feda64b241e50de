// Package storetest is the conformance suite every store.Store adapter must
// pass, unchanged: each adapter's tests call Run with a way to reach a fresh
// backing store (a bbolt file, a Redis namespace) that can be closed and
// opened again on the same data.
//
// Run (this file) is the entry point; the tests are grouped by area:
// sessions.go (creation, commit, lists), outbox.go (claims, retries,
// disarms), crash.go (timers and leases across a reopen, durability,
// corrupt data), idempotency.go, registry.go (chargers, tariffs,
// anomalies), feed.go (the change feed) and webhooks.go (webhook
// deliveries). bench.go has the benchmarks
// adapters share.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// Opener reaches one backing store, fresh for the test that asked for it.
type Opener struct {
	// Open opens a store on the backing data, with now as its clock. The
	// suite closes a store before it opens the next one on the same data;
	// Open registers nothing that outlives the test.
	Open func(t *testing.T, now func() time.Time) store.Store
	// CorruptSession writes raw as session id's stored record, bypassing
	// the store (to test that bad stored data is an error, not a panic).
	CorruptSession func(t *testing.T, id string, raw []byte)
}

// Clock is a settable clock for the stores under test.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { c := &Clock{}; c.Set(t); return c }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set sets the clock.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Add moves the clock.
func (c *Clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// T0 is the suite's starting time (a whole millisecond).
var T0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	op    Opener
	clock *Clock
	s     store.Store
	ctx   context.Context
}

func newEnv(t *testing.T, newOpener func(t *testing.T) Opener) *env {
	e := &env{t: t, op: newOpener(t), clock: NewClock(T0), ctx: t.Context()}
	e.s = e.op.Open(t, e.clock.Now)
	t.Cleanup(func() { e.s.Close() })
	return e
}

// reopen closes the store and opens it again on the same data.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("second close: %v", err)
	}
	e.s = e.op.Open(e.t, e.clock.Now)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

// Session returns a new session record in state created.
func Session(id, charger string, connector int, at time.Time) fsm.Session {
	return fsm.Session{
		ID: id, State: fsm.Created, ChargerID: charger, Connector: connector, OpenID: "o-" + id,
		MaxAmountFen: 5000, MaxEnergyWh: 40000, OutOrderNo: "OON" + id,
		Tariff:    money.Tariff{ID: "default", Periods: []money.Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 80, ServiceFenPerKWh: 40}}},
		CreatedAt: at, UpdatedAt: at,
	}
}

func (e *env) create(s fsm.Session, effects ...fsm.Effect) fsm.Session {
	e.t.Helper()
	c := store.Commit{Session: s, History: []fsm.HistoryEntry{{At: s.CreatedAt, To: fsm.Created, Event: fsm.EvCreate, By: fsm.ByApp}},
		Effects: effects, Publish: true, ChangeData: []byte(`{"id":"` + s.ID + `","v":1}`)}
	must(e.t, e.s.CreateSession(e.ctx, c))
	s.Version = 1
	return s
}

// move commits a transition of s to state to at time at.
func (e *env) move(s fsm.Session, to fsm.State, at time.Time, effects ...fsm.Effect) (fsm.Session, error) {
	n := s.Clone()
	n.State, n.UpdatedAt = to, at
	err := e.s.Commit(e.ctx, store.Commit{ExpectedVersion: s.Version, Session: n,
		History: []fsm.HistoryEntry{{At: at, From: s.State, To: to, Event: fsm.EvTimer, By: fsm.ByTimer}},
		Effects: effects, Publish: true, ChangeData: fmt.Appendf(nil, `{"id":%q,"state":%q}`, s.ID, to)})
	n.Version = s.Version + 1
	return n, err
}

// Run runs the conformance suite. newOpener is called once per subtest and
// must give a fresh, empty backing store.
func Run(t *testing.T, newOpener func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(e *env)
	}{
		{"CreateAndLookups", testCreateAndLookups},
		{"CreateRefusals", testCreateRefusals},
		{"CommitCompareAndSet", testCommit},
		{"ConcurrentCommits", testConcurrentCommits},
		{"OutboxLeases", testOutboxLeases},
		{"ClaimHonoursMax", testClaimMax},
		{"OutboxRetryAndDisarm", testOutboxRetryAndDisarm},
		{"TimersAcrossReopen", testTimersAcrossReopen},
		{"ReleaseLeases", testReleaseLeases},
		{"ReleaseLeasesMany", testReleaseLeasesMany},
		{"CommitLease", testCommitLease},
		{"DurableReopen", testDurableReopen},
		{"Idempotency", testIdempotency},
		{"Paging", testPaging},
		{"ChangeFeed", testChangeFeed},
		{"ChangeFeedWait", testChangeFeedWait},
		{"ChargersTariffsAnomalies", testChargers},
		{"CorruptData", testCorrupt},
		{"Reconciliations", testReconciliations},
		{"WebhooksInOrder", testWebhooksInOrder},
		{"WebhookLeases", testWebhookLeases},
		{"WebhookLog", testWebhookLog},
		{"WebhooksConcurrent", testWebhooksConcurrent},
		{"WebhookTrim", testWebhookTrim},
		{"WebhookReleaseLeases", testWebhookReleaseLeases},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(newEnv(t, newOpener)) })
	}
}
