// Package storetest is the conformance suite every store.Store adapter must
// pass, unchanged: each adapter's tests call Run with a way to reach a fresh
// backing store (a bbolt file, a Redis namespace) that can be closed and
// opened again on the same data.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
		{"DurableReopen", testDurableReopen},
		{"Idempotency", testIdempotency},
		{"Paging", testPaging},
		{"ChangeFeed", testChangeFeed},
		{"ChangeFeedWait", testChangeFeedWait},
		{"ChargersTariffsAnomalies", testChargers},
		{"CorruptData", testCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(newEnv(t, newOpener)) })
	}
}

func testCreateAndLookups(e *env) {
	t := e.t
	s := Session("s1", "CP1", 1, T0)
	s.Flags = []fsm.Flag{fsm.FlagClockSkew}
	s.Version = 77 // the store sets the version
	e.create(s, fsm.Effect{ID: "s1/1", Kind: fsm.EffQueryOrder, Session: "s1", DueAt: T0})

	got, err := e.s.GetSession(e.ctx, "s1")
	must(t, err)
	if got.Version != 1 || got.State != fsm.Created || got.OutOrderNo != "OONs1" || !got.CreatedAt.Equal(T0) ||
		got.Tariff.Periods[0].EnergyFenPerKWh != 80 || !got.HasFlag(fsm.FlagClockSkew) {
		t.Fatalf("stored session %+v", got)
	}
	h, err := e.s.History(e.ctx, "s1")
	must(t, err)
	if len(h) != 1 || h[0].Event != fsm.EvCreate || !h[0].At.Equal(T0) {
		t.Fatalf("history %+v", h)
	}
	for name, fn := range map[string]func() (fsm.Session, error){
		"by out_order_no": func() (fsm.Session, error) { return e.s.SessionByOutOrderNo(e.ctx, "OONs1") },
		"active":          func() (fsm.Session, error) { return e.s.ActiveSession(e.ctx, "CP1", 1) },
	} {
		got, err := fn()
		if err != nil || got.ID != "s1" {
			t.Fatalf("%s: %v %v", name, got.ID, err)
		}
	}
	tasks, err := e.s.PendingTasks(e.ctx, "s1")
	must(t, err)
	if len(tasks) != 1 || tasks[0].ID != "s1/1" || tasks[0].Effect.Kind != fsm.EffQueryOrder || !tasks[0].DueAt.Equal(T0) {
		t.Fatalf("tasks %+v", tasks)
	}
	_, err = e.s.GetSession(e.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	_, err = e.s.History(e.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	_, err = e.s.SessionByOutOrderNo(e.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	_, err = e.s.ActiveSession(e.ctx, "CP1", 2)
	wantErr(t, err, store.ErrNotFound)
	must(t, e.s.Ping(e.ctx))
}

func testCreateRefusals(e *env) {
	t := e.t
	s := e.create(Session("s1", "CP1", 1, T0))
	err := e.s.CreateSession(e.ctx, store.Commit{Session: Session("s1", "CP9", 9, T0)})
	wantErr(t, err, store.ErrExists)
	wantErr(t, err, store.ErrConflict)
	err = e.s.CreateSession(e.ctx, store.Commit{Session: Session("s2", "CP1", 1, T0)})
	wantErr(t, err, store.ErrConnectorBusy)
	wantErr(t, err, store.ErrConflict)
	if _, err := e.s.GetSession(e.ctx, "s2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused session stored: %v", err)
	}
	// another connector of the same charger is free
	e.create(Session("s3", "CP1", 2, T0))

	// when s1 is no longer active its connector is free again
	s, err = e.move(s, fsm.Charging, T0.Add(time.Second))
	must(t, err)
	err = e.s.CreateSession(e.ctx, store.Commit{Session: Session("s4", "CP1", 1, T0)})
	wantErr(t, err, store.ErrConnectorBusy)
	_, err = e.move(s, fsm.Completed, T0.Add(2*time.Second))
	must(t, err)
	if _, err := e.s.ActiveSession(e.ctx, "CP1", 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("active session after completion: %v", err)
	}
	e.create(Session("s4", "CP1", 1, T0.Add(3*time.Second)))
	got, err := e.s.ActiveSession(e.ctx, "CP1", 1)
	if err != nil || got.ID != "s4" {
		t.Fatalf("active %v %v", got.ID, err)
	}

	for name, c := range map[string]store.Commit{
		"no id":            {Session: Session("", "CP1", 5, T0)},
		"unknown state":    {Session: func() fsm.Session { s := Session("x", "CP1", 5, T0); s.State = "bogus"; return s }()},
		"expected version": {ExpectedVersion: 3, Session: Session("x", "CP1", 5, T0)},
	} {
		if err := e.s.CreateSession(e.ctx, c); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func testCommit(e *env) {
	t := e.t
	s := e.create(Session("s1", "CP1", 1, T0))
	s2, err := e.move(s, fsm.UserConfirmed, T0.Add(time.Second))
	must(t, err)
	// the same transition again from the stale version is refused
	_, err = e.move(s, fsm.Cancelled, T0.Add(2*time.Second))
	wantErr(t, err, store.ErrVersionConflict)
	wantErr(t, err, store.ErrConflict)
	got, err := e.s.GetSession(e.ctx, "s1")
	must(t, err)
	if got.Version != 2 || got.State != fsm.UserConfirmed {
		t.Fatalf("after commit: %+v", got)
	}
	_, err = e.move(s2, fsm.Charging, T0.Add(3*time.Second))
	must(t, err)
	h, err := e.s.History(e.ctx, "s1")
	must(t, err)
	var states []fsm.State
	for _, x := range h {
		states = append(states, x.To)
	}
	if !slices.Equal(states, []fsm.State{fsm.Created, fsm.UserConfirmed, fsm.Charging}) {
		t.Fatalf("history %v", states)
	}
	ghost := Session("ghost", "CP1", 3, T0)
	ghost.Version = 1
	_, err = e.move(ghost, fsm.Charging, T0)
	wantErr(t, err, store.ErrNotFound)
}

// testConcurrentCommits races many goroutines on one session: each reads the
// record and commits from the version it read. Exactly one commit wins each
// version, and the final version is 1 + the number of wins.
func testConcurrentCommits(e *env) {
	t := e.t
	e.create(Session("hot", "CP1", 1, T0))
	const workers, target = 8, 60
	var (
		mu   sync.Mutex
		wins = map[int64]int{} // expected version → winners
		errs = make(chan error, workers)
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cur, err := e.s.GetSession(e.ctx, "hot")
				if err != nil {
					errs <- err
					return
				}
				if cur.Version >= target {
					return
				}
				n := cur.Clone()
				n.Seq = cur.Seq + 1
				n.ConfirmedBy = fmt.Sprintf("w%d", w)
				err = e.s.Commit(e.ctx, store.Commit{ExpectedVersion: cur.Version, Session: n,
					History: []fsm.HistoryEntry{{At: T0, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger, Note: n.ConfirmedBy}},
					Effects: []fsm.Effect{{ID: fmt.Sprintf("hot/%d", cur.Version), Kind: fsm.EffQueryOrder, Session: "hot", DueAt: T0}}})
				switch {
				case err == nil:
					mu.Lock()
					wins[cur.Version]++
					mu.Unlock()
				case errors.Is(err, store.ErrVersionConflict):
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for v := int64(1); v < target; v++ {
		if wins[v] != 1 {
			t.Errorf("version %d won %d times", v, wins[v])
		}
		total += wins[v]
	}
	got, err := e.s.GetSession(e.ctx, "hot")
	must(t, err)
	if got.Version != int64(total)+1 || got.Seq != int64(total) {
		t.Fatalf("final version %d seq %d after %d wins", got.Version, got.Seq, total)
	}
	h, err := e.s.History(e.ctx, "hot")
	must(t, err)
	tasks, err := e.s.PendingTasks(e.ctx, "hot")
	must(t, err)
	if len(h) != total+1 || len(tasks) != total {
		t.Fatalf("history %d tasks %d after %d wins", len(h), len(tasks), total)
	}
}

func ids(ts []store.Task) []string {
	var out []string
	for _, x := range ts {
		out = append(out, x.ID)
	}
	slices.Sort(out)
	return out
}

// testClaimMax: Claim returns at most max tasks, even when one session has
// more due than that; the rest stay claimable.
func testClaimMax(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	e.create(Session("m1", "CPM", 1, now),
		fsm.Effect{ID: "m1/1", Kind: fsm.EffQueryOrder, Session: "m1", DueAt: now},
		fsm.Effect{ID: "m1/2", Kind: fsm.EffQueryOrder, Session: "m1", DueAt: now},
		fsm.Effect{ID: "m1/3", Kind: fsm.EffQueryOrder, Session: "m1", DueAt: now},
	)
	first, err := e.s.Claim(e.ctx, now, "A", time.Minute, 2)
	must(t, err)
	if len(first) != 2 {
		t.Fatalf("claimed %v with max 2", ids(first))
	}
	rest, err := e.s.Claim(e.ctx, now, "B", time.Minute, 5)
	must(t, err)
	if len(rest) != 1 || slices.Contains(ids(first), rest[0].ID) {
		t.Fatalf("then claimed %v after %v", ids(rest), ids(first))
	}
}

func testOutboxLeases(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	s := Session("s1", "CP1", 1, now)
	e.create(s,
		fsm.Effect{ID: "s1/1", Kind: fsm.EffSendStart, Session: "s1", DueAt: now, CmdID: "c1"},
		fsm.Effect{ID: "s1/2", Kind: fsm.EffQueryOrder, Session: "s1"}, // due at the commit's time
		fsm.Effect{ID: "s1/t3", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerConfirm, DueAt: now.Add(5 * time.Minute)},
	)
	e.create(Session("s2", "CP2", 1, now), fsm.Effect{ID: "s2/1", Kind: fsm.EffQueryOrder, Session: "s2", DueAt: now.Add(time.Second)})

	// nothing is due before its time
	got, err := e.s.Claim(e.ctx, now.Add(-time.Millisecond), "A", time.Minute, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("claimed before due: %v", ids(got))
	}
	st, err := e.s.OutboxStats(e.ctx, now)
	must(t, err)
	if st.Pending != 4 || st.DueNow != 2 || !st.OldestDue.Equal(now) {
		t.Fatalf("stats %+v", st)
	}

	a, err := e.s.Claim(e.ctx, now, "A", 30*time.Second, 10)
	must(t, err)
	if !slices.Equal(ids(a), []string{"s1/1", "s1/2"}) {
		t.Fatalf("A claimed %v", ids(a))
	}
	for _, x := range a {
		if x.Owner != "A" || x.Lease == "" || !x.LeaseUntil.Equal(now.Add(30*time.Second)) || x.SessionID != "s1" {
			t.Fatalf("claimed task %+v", x)
		}
		if x.ID == "s1/1" && (x.Effect.CmdID != "c1" || x.Effect.Kind != fsm.EffSendStart) {
			t.Fatalf("effect not kept: %+v", x.Effect)
		}
	}
	// under a live lease nobody else gets them; max is honoured
	b, err := e.s.Claim(e.ctx, now.Add(10*time.Second), "B", 30*time.Second, 1)
	must(t, err)
	if !slices.Equal(ids(b), []string{"s2/1"}) {
		t.Fatalf("B claimed %v", ids(b))
	}
	// A stalls; its lease runs out and B claims the tasks again
	b2, err := e.s.Claim(e.ctx, now.Add(31*time.Second), "B", 30*time.Second, 10)
	must(t, err)
	if !slices.Equal(ids(b2), []string{"s1/1", "s1/2"}) {
		t.Fatalf("re-claim after lease expiry: %v", ids(b2))
	}
	// A's late Complete must not delete B's claim
	for _, x := range a {
		wantErr(t, e.s.Complete(e.ctx, x), store.ErrLeaseLost)
		wantErr(t, e.s.Retry(e.ctx, x, now, "late"), store.ErrLeaseLost)
	}
	// the same owner name claiming again gets a new lease token
	b3, err := e.s.Claim(e.ctx, now.Add(70*time.Second), "B", 30*time.Second, 10)
	must(t, err)
	if !slices.Equal(ids(b3), []string{"s1/1", "s1/2", "s2/1"}) {
		t.Fatalf("second re-claim: %v", ids(b3))
	}
	for _, x := range b2 {
		wantErr(t, e.s.Complete(e.ctx, x), store.ErrLeaseLost)
	}
	for _, x := range b3 {
		must(t, e.s.Complete(e.ctx, x))
		wantErr(t, e.s.Complete(e.ctx, x), store.ErrLeaseLost)
	}
	left, err := e.s.PendingTasks(e.ctx, "s1")
	must(t, err)
	if !slices.Equal(ids(left), []string{"s1/t3"}) {
		t.Fatalf("left %v", ids(left))
	}
	// the timer fires at its due time
	got, err = e.s.Claim(e.ctx, now.Add(5*time.Minute-time.Millisecond), "A", time.Minute, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("timer early: %v", ids(got))
	}
	got, err = e.s.Claim(e.ctx, now.Add(5*time.Minute), "A", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"s1/t3"}) || got[0].Effect.Timer != fsm.TimerConfirm {
		t.Fatalf("timer claim %+v", got)
	}
	must(t, e.s.Complete(e.ctx, got[0]))
	st, err = e.s.OutboxStats(e.ctx, now.Add(time.Hour))
	must(t, err)
	if st.Pending != 0 || st.DueNow != 0 {
		t.Fatalf("stats at end %+v", st)
	}
	if _, err := e.s.Claim(e.ctx, now, "", time.Second, 1); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("claim without owner: %v", err)
	}
}

func testOutboxRetryAndDisarm(e *env) {
	t := e.t
	now := T0
	s := e.create(Session("s1", "CP1", 1, now),
		fsm.Effect{ID: "s1/1", Kind: fsm.EffCancelOrder, Session: "s1", DueAt: now},
		fsm.Effect{ID: "s1/t2", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerConfirm, DueAt: now.Add(5 * time.Minute)},
	)
	got, err := e.s.Claim(e.ctx, now, "A", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"s1/1"}) {
		t.Fatalf("claim %v", ids(got))
	}
	must(t, e.s.Retry(e.ctx, got[0], now.Add(2*time.Minute), "huifu: timeout"))
	if x, _ := e.s.Claim(e.ctx, now.Add(time.Minute+time.Second), "A", time.Minute, 10); len(x) != 0 {
		t.Fatalf("retried task claimed before its next due: %v", ids(x))
	}
	got, err = e.s.Claim(e.ctx, now.Add(2*time.Minute), "B", time.Minute, 10)
	must(t, err)
	if len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "huifu: timeout" || !got[0].DueAt.Equal(now.Add(2*time.Minute)) {
		t.Fatalf("retried task %+v", got)
	}
	must(t, e.s.Complete(e.ctx, got[0]))

	// a commit that disarms the confirm timer and arms the start timer, and
	// repeats an effect already pending (kept as is)
	s, err = e.move(s, fsm.UserConfirmed, now.Add(3*time.Minute),
		fsm.Effect{ID: "s1/t2x", Kind: fsm.EffDisarmTimer, Session: "s1", TimerID: "s1/t2"},
		fsm.Effect{ID: "s1/t3", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerStart, DueAt: now.Add(4 * time.Minute)},
		fsm.Effect{ID: "s1/4", Kind: fsm.EffSendStart, Session: "s1", DueAt: now.Add(3 * time.Minute), CmdID: "c4"},
		fsm.Effect{ID: "s1/no-such-timer", Kind: fsm.EffDisarmTimer, Session: "s1", TimerID: "s1/nope"},
	)
	must(t, err)
	pend, err := e.s.PendingTasks(e.ctx, "s1")
	must(t, err)
	if !slices.Equal(ids(pend), []string{"s1/4", "s1/t3"}) {
		t.Fatalf("after disarm: %v", ids(pend))
	}
	_, err = e.move(s, fsm.Charging, now.Add(3*time.Minute),
		fsm.Effect{ID: "s1/4", Kind: fsm.EffSendStart, Session: "s1", DueAt: now.Add(time.Hour), CmdID: "other"})
	must(t, err)
	got, err = e.s.Claim(e.ctx, now.Add(10*time.Minute), "A", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"s1/4", "s1/t3"}) {
		t.Fatalf("claim after disarm %v", ids(got))
	}
	for _, x := range got {
		if x.ID == "s1/4" && x.Effect.CmdID != "c4" {
			t.Fatalf("a repeated effect replaced the pending one: %+v", x.Effect)
		}
	}
	// a task disarmed while leased: its worker learns the lease is lost
	s3 := e.create(Session("s3", "CP3", 1, now),
		fsm.Effect{ID: "s3/t1", Kind: fsm.EffArmTimer, Session: "s3", Timer: fsm.TimerConfirm, DueAt: now})
	leased, err := e.s.Claim(e.ctx, now.Add(10*time.Minute), "A", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(leased), []string{"s3/t1"}) {
		t.Fatalf("claim %v", ids(leased))
	}
	_, err = e.move(s3, fsm.Cancelled, now.Add(10*time.Minute),
		fsm.Effect{ID: "s3/x", Kind: fsm.EffDisarmTimer, Session: "s3", TimerID: "s3/t1"})
	must(t, err)
	wantErr(t, e.s.Complete(e.ctx, leased[0]), store.ErrLeaseLost)
	if x, _ := e.s.Claim(e.ctx, now.Add(time.Hour), "A", time.Minute, 10); len(x) != 2 {
		// s1's two tasks come back after their lease; s3's is gone
		t.Fatalf("claim at the end: %v", ids(x))
	}
}

func testTimersAcrossReopen(e *env) {
	t := e.t
	due := T0.Add(5 * time.Minute)
	e.create(Session("s1", "CP1", 1, T0),
		fsm.Effect{ID: "s1/t1", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerConfirm, DueAt: due})
	// a claimed task whose worker dies with the process comes back after the lease
	e.create(Session("s2", "CP2", 1, T0), fsm.Effect{ID: "s2/1", Kind: fsm.EffSendStop, Session: "s2", DueAt: T0})
	got, err := e.s.Claim(e.ctx, T0, "dead", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"s2/1"}) {
		t.Fatalf("claim %v", ids(got))
	}
	e.reopen()
	if x, err := e.s.Claim(e.ctx, T0.Add(59*time.Second), "A", time.Minute, 10); err != nil || len(x) != 0 {
		t.Fatalf("after reopen, early claim: %v %v", ids(x), err)
	}
	x, err := e.s.Claim(e.ctx, T0.Add(time.Minute), "A", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(x), []string{"s2/1"}) {
		t.Fatalf("after reopen, lease expiry: %v", ids(x))
	}
	must(t, e.s.Complete(e.ctx, x[0]))
	e.reopen()
	x, err = e.s.Claim(e.ctx, due, "A", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(x), []string{"s1/t1"}) || !x[0].DueAt.Equal(due) {
		t.Fatalf("after reopen, timer: %+v", x)
	}
}

// taskByID returns the task with id, failing the test when it is absent.
func taskByID(t *testing.T, ts []store.Task, id string) store.Task {
	t.Helper()
	for _, x := range ts {
		if x.ID == id {
			return x
		}
	}
	t.Fatalf("no task %s in %v", id, ids(ts))
	return store.Task{}
}

// A restarted instance gives back what its previous life had claimed: the
// claims of owners under its prefix come back at once, nobody else's do.
func testReleaseLeases(e *env) {
	t := e.t
	now := T0.Add(time.Hour)
	e.create(Session("s1", "CP1", 1, T0),
		fsm.Effect{ID: "s1/1", Kind: fsm.EffQueryOrder, Session: "s1", DueAt: now.Add(-4 * time.Second)},
		fsm.Effect{ID: "s1/t", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerConfirm, DueAt: now.Add(5 * time.Minute)})
	e.create(Session("s2", "CP2", 1, T0), fsm.Effect{ID: "s2/1", Kind: fsm.EffQueryOrder, Session: "s2", DueAt: now.Add(-3 * time.Second)})
	e.create(Session("s3", "CP3", 1, T0), fsm.Effect{ID: "s3/1", Kind: fsm.EffSendStop, Session: "s3", DueAt: now.Add(-2 * time.Second)})
	e.create(Session("s4", "CP4", 1, T0), fsm.Effect{ID: "s4/1", Kind: fsm.EffQueryOrder, Session: "s4", DueAt: now.Add(-time.Second)})

	wantErr(t, func() error { _, err := e.s.ReleaseLeases(e.ctx, "", now); return err }(), store.ErrInvalid)

	claim := func(at time.Time, owner string, lease time.Duration, want ...string) []store.Task {
		t.Helper()
		got, err := e.s.Claim(e.ctx, at, owner, lease, 1)
		must(t, err)
		if !slices.Equal(ids(got), want) {
			t.Fatalf("%s claimed %v, want %v", owner, ids(got), want)
		}
		return got
	}
	// s1/1 has failed once already (its attempts and error must stay)
	x := claim(now, "x/1", time.Minute, "s1/1")
	must(t, e.s.Retry(e.ctx, x[0], now.Add(-4*time.Second), "boom"))
	a1 := claim(now, "a/1", time.Minute, "s1/1")
	b1 := claim(now, "b/1", time.Minute, "s2/1")
	a2 := claim(now, "a/2", time.Minute, "s3/1")
	// a claim of a/3 whose lease has already run out: not a live claim
	claim(now.Add(-time.Second), "a/3", 500*time.Millisecond, "s4/1")

	n, err := e.s.ReleaseLeases(e.ctx, "a/", now)
	must(t, err)
	if n != 2 {
		t.Fatalf("released %d claims, want 2 (a/1's and a/2's live ones)", n)
	}
	pend, err := e.s.PendingTasks(e.ctx, "s1")
	must(t, err)
	if r := taskByID(t, pend, "s1/1"); r.Owner != "" || r.Lease != "" || !r.LeaseUntil.IsZero() || r.Attempts != 1 ||
		r.LastError != "boom" || !r.DueAt.Equal(now.Add(-4*time.Second)) {
		t.Fatalf("released task %+v", r)
	}
	if r := taskByID(t, pend, "s1/t"); r.Lease != "" || !r.DueAt.Equal(now.Add(5*time.Minute)) {
		t.Fatalf("timer touched by the release: %+v", r)
	}
	if pend, _ := e.s.PendingTasks(e.ctx, "s2"); len(pend) != 1 || pend[0].Lease != b1[0].Lease {
		t.Fatalf("b/1's claim touched: %+v", pend)
	}
	// the released owners' late outcomes are refused: their tokens are void
	wantErr(t, e.s.Complete(e.ctx, a1[0]), store.ErrLeaseLost)
	wantErr(t, e.s.Retry(e.ctx, a2[0], now.Add(time.Minute), "late"), store.ErrLeaseLost)
	// releasing again finds nothing
	if n, err := e.s.ReleaseLeases(e.ctx, "a/", now); err != nil || n != 0 {
		t.Fatalf("second release: %d %v", n, err)
	}

	// at the same now, long before the leases would have run out, another
	// owner gets them (and the expired one), not b/1's nor the timer
	got, err := e.s.Claim(e.ctx, now, "c/1", time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"s1/1", "s3/1", "s4/1"}) {
		t.Fatalf("claim after release: %v", ids(got))
	}
	if r := taskByID(t, got, "s1/1"); r.Attempts != 1 || r.LastError != "boom" || !r.DueAt.Equal(now.Add(-4*time.Second)) {
		t.Fatalf("re-claimed task %+v", r)
	}
	if r := taskByID(t, got, "s3/1"); r.Attempts != 0 || r.Owner != "c/1" || r.Effect.Kind != fsm.EffSendStop {
		t.Fatalf("re-claimed task %+v", r)
	}
	for _, x := range append(got, b1...) {
		must(t, e.s.Complete(e.ctx, x))
	}

	// a timer not yet due is not made due by a release
	if n, err := e.s.ReleaseLeases(e.ctx, "c/", now); err != nil || n != 0 {
		t.Fatalf("release of completed claims: %d %v", n, err)
	}
	claim(now.Add(5*time.Minute-time.Millisecond), "c/1", time.Minute)
	tm := claim(now.Add(5*time.Minute), "c/1", time.Minute, "s1/t")
	must(t, e.s.Complete(e.ctx, tm[0]))

	// across a restart of the store: the claim is kept, and released
	later := now.Add(10 * time.Minute)
	e.create(Session("s5", "CP5", 1, T0), fsm.Effect{ID: "s5/1", Kind: fsm.EffQueryOrder, Session: "s5", DueAt: later})
	a9 := claim(later, "a/9", time.Minute, "s5/1")
	e.reopen()
	claim(later.Add(time.Second), "d/1", time.Minute)
	if n, err := e.s.ReleaseLeases(e.ctx, "a/", later.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("release after reopen: %d %v", n, err)
	}
	wantErr(t, e.s.Complete(e.ctx, a9[0]), store.ErrLeaseLost)
	d := claim(later.Add(time.Second), "d/1", time.Minute, "s5/1")
	if !d[0].DueAt.Equal(later) || d[0].Attempts != 0 {
		t.Fatalf("re-claimed after reopen: %+v", d[0])
	}
	// a release at a now before the task's due time (another instance's
	// clock ahead of ours) makes it due at that now, not later
	if n, err := e.s.ReleaseLeases(e.ctx, "d/", later.Add(-time.Second)); err != nil || n != 1 {
		t.Fatalf("release before due: %d %v", n, err)
	}
	d = claim(later.Add(-time.Second), "d/2", time.Minute, "s5/1")
	if !d[0].DueAt.Equal(later.Add(-time.Second)) {
		t.Fatalf("due after an early release: %+v", d[0])
	}
	must(t, e.s.Complete(e.ctx, d[0]))
	st, err := e.s.OutboxStats(e.ctx, later.Add(time.Hour))
	must(t, err)
	if st.Pending != 0 {
		t.Fatalf("stats at end %+v", st)
	}
}

// Many claims, more than one page of the adapter's scan, among timers not
// yet due.
func testReleaseLeasesMany(e *env) {
	t := e.t
	now := T0.Add(time.Hour)
	const sessions, each = 4, 80
	for i := range sessions {
		// s3's tasks are the oldest, then s2's…: a claim of 80 takes one session
		id := fmt.Sprintf("s%d", i)
		var effs []fsm.Effect
		for j := range each {
			due := now.Add(-time.Duration(i*1000+j) * time.Millisecond)
			effs = append(effs,
				fsm.Effect{ID: fmt.Sprintf("%s/%d", id, j), Kind: fsm.EffQueryOrder, Session: id, DueAt: due},
				fsm.Effect{ID: fmt.Sprintf("%s/t%d", id, j), Kind: fsm.EffArmTimer, Session: id, Timer: fsm.TimerConfirm, DueAt: now.Add(time.Hour)})
		}
		e.create(Session(id, fmt.Sprintf("CP%d", i), 1, T0), effs...)
	}
	for i, owner := range []string{"a/1", "a/2", "b/1"} {
		want := []int{1, 2, 1}[i] * each
		got, err := e.s.Claim(e.ctx, now, owner, time.Minute, want)
		must(t, err)
		if len(got) != want {
			t.Fatalf("%s claimed %d, want %d", owner, len(got), want)
		}
	}
	n, err := e.s.ReleaseLeases(e.ctx, "a/", now)
	must(t, err)
	if n != 3*each {
		t.Fatalf("released %d, want %d", n, 3*each)
	}
	got, err := e.s.Claim(e.ctx, now, "c/1", time.Minute, 3*each)
	must(t, err)
	if len(got) != 3*each {
		t.Fatalf("claimed %d after the release, want %d", len(got), 3*each)
	}
	for _, x := range got {
		if x.SessionID == "s0" || strings.Contains(x.ID, "/t") || x.Attempts != 0 {
			t.Fatalf("claimed %+v", x)
		}
	}
	if more, err := e.s.Claim(e.ctx, now, "c/2", time.Minute, 10); err != nil || len(more) != 0 {
		t.Fatalf("claimed more: %v %v", ids(more), err)
	}
}

func testDurableReopen(e *env) {
	t := e.t
	s := e.create(Session("s1", "CP1", 1, T0))
	s.Flags = []fsm.Flag{fsm.FlagChargerOffline}
	_, err := e.move(s, fsm.Charging, T0.Add(time.Second))
	must(t, err)
	must(t, e.s.PutCharger(e.ctx, store.Charger{ID: "CP1", Connectors: []int{1, 2}, TariffID: "default", PasswordHash: "h"}))
	must(t, e.s.PutTariff(e.ctx, money.Tariff{ID: "default", Periods: []money.Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 1}}}))
	_, err = e.s.AddAnomaly(e.ctx, store.Anomaly{At: T0, ChargerID: "CP1", Topic: "ev/v1/CP1/txn", Payload: []byte("{"), Reason: "bad json"})
	must(t, err)
	_, _, err = e.s.PutIdempotency(e.ctx, "k1", "h1", time.Hour)
	must(t, err)
	_, err = e.s.MarkProcessed(e.ctx, "txn", "e1", time.Hour)
	must(t, err)
	before, err := e.s.ReadChanges(e.ctx, "", 100, 0)
	must(t, err)

	e.reopen()

	got, err := e.s.GetSession(e.ctx, "s1")
	if err != nil || got.Version != 2 || got.State != fsm.Charging {
		t.Fatalf("session after reopen: %+v %v", got, err)
	}
	if h, err := e.s.History(e.ctx, "s1"); err != nil || len(h) != 2 {
		t.Fatalf("history after reopen: %v %v", h, err)
	}
	if a, err := e.s.ActiveSession(e.ctx, "CP1", 1); err != nil || a.ID != "s1" {
		t.Fatalf("active after reopen: %v", err)
	}
	if p, err := e.s.ListSessions(e.ctx, store.Filter{Flag: fsm.FlagChargerOffline, State: fsm.Charging}); err != nil || len(p.Sessions) != 1 {
		t.Fatalf("list after reopen: %+v %v", p, err)
	}
	if c, err := e.s.GetCharger(e.ctx, "CP1"); err != nil || c.PasswordHash != "h" || !slices.Equal(c.Connectors, []int{1, 2}) {
		t.Fatalf("charger after reopen: %+v %v", c, err)
	}
	if tr, err := e.s.GetTariff(e.ctx, "default"); err != nil || tr.Periods[0].EnergyFenPerKWh != 1 {
		t.Fatalf("tariff after reopen: %+v %v", tr, err)
	}
	if p, err := e.s.ListAnomalies(e.ctx, 10, ""); err != nil || len(p.Anomalies) != 1 || string(p.Anomalies[0].Payload) != "{" {
		t.Fatalf("anomalies after reopen: %+v %v", p, err)
	}
	if _, created, err := e.s.PutIdempotency(e.ctx, "k1", "h1", time.Hour); err != nil || created {
		t.Fatalf("idempotency after reopen: created=%v %v", created, err)
	}
	if first, err := e.s.MarkProcessed(e.ctx, "txn", "e1", time.Hour); err != nil || first {
		t.Fatalf("processed mark after reopen: first=%v %v", first, err)
	}
	after, err := e.s.ReadChanges(e.ctx, "", 100, 0)
	must(t, err)
	if len(after) != len(before) || len(before) != 2 {
		t.Fatalf("feed after reopen: %d changes, before %d", len(after), len(before))
	}
}

func testIdempotency(e *env) {
	t := e.t
	rec, created, err := e.s.PutIdempotency(e.ctx, "key-1", "hash-a", time.Minute)
	must(t, err)
	if !created || rec.RequestHash != "hash-a" || rec.Status != 0 {
		t.Fatalf("first put: %+v %v", rec, created)
	}
	rec, created, err = e.s.PutIdempotency(e.ctx, "key-1", "hash-b", time.Minute)
	must(t, err)
	if created || rec.RequestHash != "hash-a" || rec.Status != 0 {
		t.Fatalf("second put (in flight): %+v %v", rec, created)
	}
	wantErr(t, e.s.SaveIdempotentResponse(e.ctx, "key-1", store.IdemRecord{RequestHash: "hash-b", Status: 201}), store.ErrConflict)
	wantErr(t, e.s.SaveIdempotentResponse(e.ctx, "key-404", store.IdemRecord{RequestHash: "hash-a", Status: 201}), store.ErrNotFound)
	must(t, e.s.SaveIdempotentResponse(e.ctx, "key-1", store.IdemRecord{RequestHash: "hash-a", Status: 201, Body: []byte(`{"id":"s1"}`), SessionID: "s1"}))
	e.clock.Add(30 * time.Second)
	rec, created, err = e.s.PutIdempotency(e.ctx, "key-1", "hash-a", time.Minute)
	must(t, err)
	if created || rec.Status != 201 || string(rec.Body) != `{"id":"s1"}` || rec.SessionID != "s1" || !rec.ExpiresAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("replay: %+v %v", rec, created)
	}
	// after the ttl the key is free again
	e.clock.Add(31 * time.Second)
	wantErr(t, e.s.SaveIdempotentResponse(e.ctx, "key-1", store.IdemRecord{RequestHash: "hash-a", Status: 200}), store.ErrNotFound)
	rec, created, err = e.s.PutIdempotency(e.ctx, "key-1", "hash-b", time.Minute)
	must(t, err)
	if !created || rec.RequestHash != "hash-b" || rec.Status != 0 {
		t.Fatalf("put after expiry: %+v %v", rec, created)
	}
	must(t, e.s.DeleteIdempotency(e.ctx, "key-1"))
	must(t, e.s.DeleteIdempotency(e.ctx, "key-1"))
	if _, created, err := e.s.PutIdempotency(e.ctx, "key-1", "hash-c", time.Minute); err != nil || !created {
		t.Fatalf("put after delete: %v %v", created, err)
	}

	for i, want := range []bool{true, false, false} {
		first, err := e.s.MarkProcessed(e.ctx, "txn", "ev-1", time.Hour)
		must(t, err)
		if first != want {
			t.Fatalf("mark %d: first=%v", i, first)
		}
	}
	if first, _ := e.s.MarkProcessed(e.ctx, "meter", "ev-1", time.Hour); !first {
		t.Fatal("scopes are separate")
	}
	e.clock.Add(time.Hour + time.Millisecond)
	if first, _ := e.s.MarkProcessed(e.ctx, "txn", "ev-1", time.Hour); !first {
		t.Fatal("mark did not expire")
	}
}

func testPaging(e *env) {
	t := e.t
	// 23 sessions on 3 chargers; some share a creation time (ties)
	var all []fsm.Session
	for i := range 23 {
		at := T0.Add(time.Duration(i/2) * time.Second)
		s := Session(fmt.Sprintf("p%02d", i), fmt.Sprintf("CP%d", i%3), i, at)
		if i%4 == 0 {
			s.Flags = []fsm.Flag{fsm.FlagMeterAnomaly}
		}
		s = e.create(s)
		if i%5 == 0 {
			var err error
			s, err = e.move(s, fsm.Cancelled, at.Add(time.Minute))
			must(t, err)
		}
		all = append(all, s)
	}
	newestFirst := func(f store.Filter) []string {
		var out []string
		for i := len(all) - 1; i >= 0; i-- {
			if f.Matches(all[i]) {
				out = append(out, all[i].ID)
			}
		}
		return out
	}
	walk := func(f store.Filter) []string {
		var out []string
		for pages := 0; ; pages++ {
			if pages > 50 {
				t.Fatalf("paging does not end: %+v", f)
			}
			p, err := e.s.ListSessions(e.ctx, f)
			must(t, err)
			if len(p.Sessions) > f.Limit {
				t.Fatalf("page of %d > limit %d", len(p.Sessions), f.Limit)
			}
			for _, s := range p.Sessions {
				out = append(out, s.ID)
			}
			if p.NextCursor == "" {
				return out
			}
			f.Cursor = p.NextCursor
		}
	}
	for _, f := range []store.Filter{
		{Limit: 5},
		{Limit: 1},
		{Limit: 100},
		{State: fsm.Cancelled, Limit: 2},
		{State: fsm.Created, Limit: 4},
		{ChargerID: "CP1", Limit: 3},
		{Flag: fsm.FlagMeterAnomaly, Limit: 2},
		{Flag: fsm.FlagMeterAnomaly, State: fsm.Cancelled, Limit: 2},
		{ChargerID: "CP2", State: fsm.Created, Limit: 2},
		{State: fsm.Paid, Limit: 2},
	} {
		got, want := walk(f), newestFirst(f)
		if !slices.Equal(got, want) {
			t.Errorf("filter %+v:\n got %v\nwant %v", f, got, want)
		}
	}
	counts, err := e.s.CountByState(e.ctx)
	must(t, err)
	if counts[fsm.Cancelled] != 5 || counts[fsm.Created] != 18 || counts[fsm.Paid] != 0 {
		t.Fatalf("counts %v", counts)
	}
	if _, err := e.s.ListSessions(e.ctx, store.Filter{Cursor: "%%%"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
	if _, err := e.s.ListSessions(e.ctx, store.Filter{Limit: store.MaxPage + 1}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad limit: %v", err)
	}
	// the default page
	p, err := e.s.ListSessions(e.ctx, store.Filter{})
	must(t, err)
	if len(p.Sessions) != 23 || p.NextCursor != "" {
		t.Fatalf("default page: %d %q", len(p.Sessions), p.NextCursor)
	}
}

func changeIDs(cs []store.Change) []string {
	var out []string
	for _, c := range cs {
		if c.Kind == store.ChangeCharger {
			out = append(out, c.ChargerID+"@"+fmt.Sprint(c.Version))
		} else {
			out = append(out, c.SessionID+"@"+fmt.Sprint(c.Version))
		}
	}
	return out
}

func testChangeFeed(e *env) {
	t := e.t
	if id, err := e.s.LatestChangeID(e.ctx); err != nil || id != "" {
		t.Fatalf("latest of an empty feed: %q %v", id, err)
	}
	a := e.create(Session("a", "CP1", 1, T0))
	b := e.create(Session("b", "CP2", 1, T0))
	a, err := e.move(a, fsm.UserConfirmed, T0.Add(time.Second))
	must(t, err)
	// a commit without Publish adds nothing
	n := b.Clone()
	n.Seq = 9
	must(t, e.s.Commit(e.ctx, store.Commit{ExpectedVersion: 1, Session: n}))
	must(t, e.s.PutCharger(e.ctx, store.Charger{ID: "CP1", Connectors: []int{1}}))
	c, err := e.s.UpdateCharger(e.ctx, "CP1", func(c *store.Charger) ([]byte, error) {
		c.Online, c.LastHeardAt, c.UpdatedAt = true, T0.Add(2*time.Second), T0.Add(2*time.Second)
		return []byte(`{"id":"CP1","online":true}`), nil
	})
	must(t, err)
	if !c.Online || c.ID != "CP1" {
		t.Fatalf("updated charger %+v", c)
	}
	_, err = e.move(a, fsm.Charging, T0.Add(3*time.Second))
	must(t, err)

	all, err := e.s.ReadChanges(e.ctx, "", 100, 0)
	must(t, err)
	want := []string{"a@1", "b@1", "a@2", "CP1@0", "a@3"}
	if !slices.Equal(changeIDs(all), want) {
		t.Fatalf("feed %v, want %v", changeIDs(all), want)
	}
	if all[3].Kind != store.ChangeCharger || string(all[3].Data) != `{"id":"CP1","online":true}` ||
		all[2].Kind != store.ChangeSession || string(all[2].Data) != `{"id":"a","state":"user_confirmed"}` ||
		!all[2].At.Equal(T0.Add(time.Second)) || all[2].ChargerID != "CP1" {
		t.Fatalf("changes %+v", all)
	}
	seen := map[string]bool{}
	for _, c := range all {
		if c.ID == "" || seen[c.ID] {
			t.Fatalf("change ids not unique: %+v", all)
		}
		seen[c.ID] = true
	}
	// resume after each id, in small batches
	for i := range all {
		rest, err := e.s.ReadChanges(e.ctx, all[i].ID, 2, 0)
		must(t, err)
		wantN := min(2, len(all)-i-1)
		if len(rest) != wantN || (wantN > 0 && rest[0].ID != all[i+1].ID) {
			t.Fatalf("after %s: %v", all[i].ID, changeIDs(rest))
		}
	}
	latest, err := e.s.LatestChangeID(e.ctx)
	must(t, err)
	if latest != all[len(all)-1].ID {
		t.Fatalf("latest %q, want %q", latest, all[len(all)-1].ID)
	}
	if _, err := e.s.UpdateCharger(e.ctx, "nope", func(*store.Charger) ([]byte, error) { return nil, nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing charger: %v", err)
	}

	// across a reopen, ids keep increasing and resume works
	e.reopen()
	a, err = e.s.GetSession(e.ctx, "a")
	must(t, err)
	_, err = e.move(a, fsm.Stopping, T0.Add(4*time.Second))
	must(t, err)
	rest, err := e.s.ReadChanges(e.ctx, latest, 10, 0)
	must(t, err)
	if !slices.Equal(changeIDs(rest), []string{"a@4"}) {
		t.Fatalf("resume across reopen: %v", changeIDs(rest))
	}
	all2, err := e.s.ReadChanges(e.ctx, "", 100, 0)
	must(t, err)
	if len(all2) != 6 || all2[5].ID != rest[0].ID {
		t.Fatalf("feed after reopen %v", changeIDs(all2))
	}
	if _, err := e.s.ReadChanges(e.ctx, "not-an-id", 10, 0); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
}

func testChangeFeedWait(e *env) {
	t := e.t
	e.create(Session("a", "CP1", 1, T0))
	last, err := e.s.LatestChangeID(e.ctx)
	must(t, err)
	// nothing new: a short wait returns empty
	got, err := e.s.ReadChanges(e.ctx, last, 10, 50*time.Millisecond)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("got %v", changeIDs(got))
	}
	// a waiting reader returns when a change arrives (the wait is only an
	// upper bound: nothing here depends on how long it takes)
	type result struct {
		cs  []store.Change
		err error
	}
	done := make(chan result, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		var out []store.Change
		var err error
		for len(out) == 0 && err == nil {
			out, err = e.s.ReadChanges(e.ctx, last, 10, 20*time.Second)
		}
		done <- result{out, err}
	}()
	<-started
	e.create(Session("b", "CP2", 1, T0))
	r := <-done
	must(t, r.err)
	if !slices.Equal(changeIDs(r.cs), []string{"b@1"}) {
		t.Fatalf("waiter got %v", changeIDs(r.cs))
	}
	// a cancelled context ends the wait
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if _, err := e.s.ReadChanges(ctx, r.cs[0].ID, 10, 20*time.Second); err == nil {
		t.Fatal("wait with a cancelled context returned no error")
	}
}

func testChargers(e *env) {
	t := e.t
	for _, id := range []string{"CP2", "CP1", "CP3"} {
		must(t, e.s.PutCharger(e.ctx, store.Charger{ID: id, Connectors: []int{1, 2}, TariffID: "default",
			ConnectorStatus: map[int]string{1: "available"}}))
	}
	cs, err := e.s.ListChargers(e.ctx)
	must(t, err)
	if len(cs) != 3 || cs[0].ID != "CP1" || cs[2].ID != "CP3" || cs[1].ConnectorStatus[1] != "available" {
		t.Fatalf("chargers %+v", cs)
	}
	_, err = e.s.GetCharger(e.ctx, "CP9")
	wantErr(t, err, store.ErrNotFound)
	boom := errors.New("boom")
	_, err = e.s.UpdateCharger(e.ctx, "CP1", func(c *store.Charger) ([]byte, error) { c.Online = true; return nil, boom })
	wantErr(t, err, boom)
	if c, _ := e.s.GetCharger(e.ctx, "CP1"); c.Online {
		t.Fatal("failed update was stored")
	}
	// concurrent presence updates are not lost
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.s.UpdateCharger(e.ctx, "CP1", func(c *store.Charger) ([]byte, error) {
				if c.ConnectorStatus == nil {
					c.ConnectorStatus = map[int]string{}
				}
				c.ConnectorStatus[100+i] = "seen"
				return nil, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	c, err := e.s.GetCharger(e.ctx, "CP1")
	must(t, err)
	if len(c.ConnectorStatus) != 11 {
		t.Fatalf("lost updates: %v", c.ConnectorStatus)
	}

	for _, id := range []string{"peak", "default"} {
		must(t, e.s.PutTariff(e.ctx, money.Tariff{ID: id, Periods: []money.Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 70, ServiceFenPerKWh: 30}}}))
	}
	ts, err := e.s.ListTariffs(e.ctx)
	must(t, err)
	if len(ts) != 2 || ts[0].ID != "default" || ts[1].Periods[0].ServiceFenPerKWh != 30 {
		t.Fatalf("tariffs %+v", ts)
	}
	_, err = e.s.GetTariff(e.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)

	var added []string
	for i := range 7 {
		id, err := e.s.AddAnomaly(e.ctx, store.Anomaly{At: T0.Add(time.Duration(i) * time.Second), ChargerID: "CP1",
			Topic: "ev/v1/CP1/meter", Payload: fmt.Appendf(nil, "raw-%d", i), Reason: "unknown session"})
		must(t, err)
		added = append(added, id)
	}
	var got []string
	cursor := ""
	for {
		p, err := e.s.ListAnomalies(e.ctx, 3, cursor)
		must(t, err)
		for _, a := range p.Anomalies {
			got = append(got, a.ID)
			if !strings.HasPrefix(string(a.Payload), "raw-") || a.Reason != "unknown session" {
				t.Fatalf("anomaly %+v", a)
			}
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	slices.Reverse(added)
	if !slices.Equal(got, added) {
		t.Fatalf("anomalies newest first: %v, want %v", got, added)
	}
}

func testCorrupt(e *env) {
	t := e.t
	e.create(Session("bad", "CP1", 1, T0))
	e.create(Session("odd", "CP2", 1, T0))
	e.op.CorruptSession(t, "bad", []byte("{not json"))
	odd := Session("odd", "CP2", 1, T0)
	odd.Version, odd.State = 1, "exploded"
	raw, err := store.MarshalSession(odd)
	must(t, err)
	e.op.CorruptSession(t, "odd", raw)

	for _, id := range []string{"bad", "odd"} {
		_, err := e.s.GetSession(e.ctx, id)
		wantErr(t, err, store.ErrCorrupt)
		if !strings.Contains(err.Error(), id) {
			t.Fatalf("error does not name the key: %v", err)
		}
	}
	_, err = e.s.ActiveSession(e.ctx, "CP1", 1)
	wantErr(t, err, store.ErrCorrupt)
	_, err = e.s.SessionByOutOrderNo(e.ctx, "OONodd")
	wantErr(t, err, store.ErrCorrupt)
	if _, err := e.s.ListSessions(e.ctx, store.Filter{}); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("list over corrupt data: %v", err)
	}
}
