package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

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
	if r := taskByID(t, pend, "s1/1"); r.Owner != "" || r.Lease != "" || !r.LeaseUntil.IsZero() || r.Tries != 1 ||
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
	if r := taskByID(t, got, "s1/1"); r.Tries != 1 || r.LastError != "boom" || !r.DueAt.Equal(now.Add(-4*time.Second)) {
		t.Fatalf("re-claimed task %+v", r)
	}
	if r := taskByID(t, got, "s3/1"); r.Tries != 0 || r.Owner != "c/1" || r.Effect.Kind != fsm.EffSendStop {
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
	if !d[0].DueAt.Equal(later) || d[0].Tries != 0 {
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
		if x.SessionID == "s0" || strings.Contains(x.ID, "/t") || x.Tries != 0 {
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
