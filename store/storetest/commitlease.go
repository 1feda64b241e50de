package storetest

import (
	"slices"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// testCommitLease: a commit with a lease leases the tasks it adds that are
// due by DueBy, as a claim by the lease's owner would, and reports them;
// a task not due, a disarm, and an effect already pending are not granted.
func testCommitLease(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	lease := func(owner string, until time.Duration) *store.CommitLease {
		return &store.CommitLease{Token: store.LeaseToken(owner, []byte{1, 2, 3}), Until: now.Add(until), DueBy: now}
	}
	granted := func(l *store.CommitLease, want ...string) {
		t.Helper()
		if got := ids(l.Granted); !slices.Equal(got, want) {
			t.Fatalf("granted %v, want %v", got, want)
		}
		for _, g := range l.Granted {
			if g.Lease != l.Token || g.Owner != store.LeaseOwner(l.Token) || !g.LeaseUntil.Equal(l.Until) || g.Tries != 0 || g.SessionID == "" {
				t.Fatalf("granted task %+v under %+v", g, l)
			}
		}
	}
	claim := func(at time.Time, want ...string) []store.Task {
		t.Helper()
		got, err := e.s.Claim(e.ctx, at, "B/0", 30*time.Second, 10)
		must(t, err)
		if !slices.Equal(ids(got), want) {
			t.Fatalf("B claimed %v at %v, want %v", ids(got), at.Sub(now), want)
		}
		return got
	}

	// CreateSession leases what is due by DueBy, not the timer due later.
	l := lease("A/now", 30*time.Second)
	s := Session("s1", "CP1", 1, now)
	must(t, e.s.CreateSession(e.ctx, store.Commit{Session: s,
		History: []fsm.HistoryEntry{{At: now, To: fsm.Created, Event: fsm.EvCreate, By: fsm.ByApp}},
		Effects: []fsm.Effect{
			{ID: "s1/1", Kind: fsm.EffSendStart, Session: "s1", DueAt: now, CmdID: "c1"},
			{ID: "s1/2", Kind: fsm.EffQueryOrder, Session: "s1"}, // due at the commit's time
			{ID: "s1/t3", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerConfirm, DueAt: now.Add(5 * time.Minute)},
		}, Lease: l}))
	s.Version = 1
	granted(l, "s1/1", "s1/2")
	if g := l.Granted[0]; g.Effect.CmdID != "c1" || !g.DueAt.Equal(now) {
		t.Fatalf("granted %+v", g)
	}
	// nobody claims them while the lease lives
	claim(now)
	claim(now.Add(29 * time.Second))
	pend, err := e.s.PendingTasks(e.ctx, "s1")
	must(t, err)
	if r := taskByID(t, pend, "s1/1"); r.Lease != l.Token || !r.LeaseUntil.Equal(l.Until) {
		t.Fatalf("pending leased task %+v", r)
	}
	// Complete and Retry work under the granted token
	must(t, e.s.Complete(e.ctx, l.Granted[0]))
	must(t, e.s.Retry(e.ctx, l.Granted[1], now.Add(10*time.Second), "again"))
	wantErr(t, e.s.Complete(e.ctx, l.Granted[0]), store.ErrLeaseLost)
	wantErr(t, e.s.Complete(e.ctx, l.Granted[1]), store.ErrLeaseLost) // retried: the token is spent
	got := claim(now.Add(10*time.Second), "s1/2")
	if got[0].Tries != 1 || got[0].LastError != "again" {
		t.Fatalf("retried granted task %+v", got[0])
	}
	must(t, e.s.Complete(e.ctx, got[0]))

	// A commit repeating a pending effect (s1/t3) and a disarm: only the new
	// task due now is granted; the pending one keeps its due time, unleased.
	l = lease("A/now", 30*time.Second)
	n := s.Clone()
	n.State, n.UpdatedAt = fsm.UserConfirmed, now
	must(t, e.s.Commit(e.ctx, store.Commit{ExpectedVersion: 1, Session: n, Effects: []fsm.Effect{
		{ID: "s1/t3", Kind: fsm.EffArmTimer, Session: "s1", Timer: fsm.TimerConfirm, DueAt: now},
		{ID: "s1/x", Kind: fsm.EffDisarmTimer, Session: "s1", TimerID: "s1/nope"},
		{ID: "s1/4", Kind: fsm.EffSendStop, Session: "s1", CmdID: "c4"},
		{ID: "s1/5", Kind: fsm.EffQueryOrder, Session: "s1", DueAt: now.Add(time.Millisecond)},
	}, Lease: l}))
	n.Version = 2
	granted(l, "s1/4")
	pend, err = e.s.PendingTasks(e.ctx, "s1")
	must(t, err)
	if r := taskByID(t, pend, "s1/t3"); r.Lease != "" || !r.DueAt.Equal(now.Add(5*time.Minute)) {
		t.Fatalf("pending task repeated under a lease: %+v", r)
	}
	// the lease runs out: B's claim takes it; A's late Complete is refused
	for _, x := range claim(now.Add(30*time.Second), "s1/4", "s1/5") {
		must(t, e.s.Complete(e.ctx, x))
	}
	wantErr(t, e.s.Complete(e.ctx, l.Granted[0]), store.ErrLeaseLost)

	// ReleaseLeases gives a granted task back by the token's owner prefix.
	l = lease("A/now", time.Hour)
	m := n.Clone()
	m.UpdatedAt = now
	must(t, e.s.Commit(e.ctx, store.Commit{ExpectedVersion: 2, Session: m, Effects: []fsm.Effect{
		{ID: "s1/6", Kind: fsm.EffQueryOrder, Session: "s1"},
	}, Lease: l}))
	granted(l, "s1/6")
	claim(now.Add(time.Minute))
	released, err := e.s.ReleaseLeases(e.ctx, "A/", now.Add(time.Minute))
	must(t, err)
	if released != 1 {
		t.Fatalf("released %d, want 1", released)
	}
	claim(now.Add(time.Minute), "s1/6")
	wantErr(t, e.s.Complete(e.ctx, l.Granted[0]), store.ErrLeaseLost)

	// A commit that fails grants nothing and leases nothing.
	l = lease("A/now", time.Hour)
	err = e.s.Commit(e.ctx, store.Commit{ExpectedVersion: 1, Session: m, Effects: []fsm.Effect{
		{ID: "s1/7", Kind: fsm.EffQueryOrder, Session: "s1"},
	}, Lease: l})
	wantErr(t, err, store.ErrVersionConflict)
	granted(l)
	// A lease without a token is refused.
	wantErr(t, e.s.Commit(e.ctx, store.Commit{ExpectedVersion: 3, Session: m, Lease: &store.CommitLease{Until: now.Add(time.Minute), DueBy: now}}),
		store.ErrInvalid)
}
