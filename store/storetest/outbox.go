package storetest

import (
	"errors"
	"slices"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

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
	if len(got) != 1 || got[0].Tries != 1 || got[0].LastError != "huifu: timeout" || !got[0].DueAt.Equal(now.Add(2*time.Minute)) {
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
