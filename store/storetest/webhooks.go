package storetest

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// webhookEvents makes the events of the commit that creates version of
// session, one per type.
func webhookEvents(session string, version int64, at time.Time, types ...string) []store.WebhookEvent {
	var out []store.WebhookEvent
	for n, typ := range types {
		id := store.EventID(session, version, n)
		out = append(out, store.WebhookEvent{ID: id, Type: typ, CreatedAt: at,
			Body: fmt.Appendf(nil, `{"id":%q,"type":%q,"n":12345678901234567}`, id, typ)})
	}
	return out
}

// createWith creates s with webhook events of the given types.
func (e *env) createWith(s fsm.Session, types ...string) fsm.Session {
	e.t.Helper()
	c := store.Commit{Session: s, History: []fsm.HistoryEntry{{At: s.CreatedAt, To: fsm.Created, Event: fsm.EvCreate, By: fsm.ByApp}},
		Publish: true, ChangeData: []byte(`{"id":"` + s.ID + `"}`), Webhooks: webhookEvents(s.ID, 1, s.CreatedAt, types...)}
	must(e.t, e.s.CreateSession(e.ctx, c))
	s.Version = 1
	return s
}

// moveWith commits a transition of s to state to with webhook events.
func (e *env) moveWith(s fsm.Session, to fsm.State, at time.Time, types ...string) (fsm.Session, error) {
	n := s.Clone()
	n.State, n.UpdatedAt = to, at
	err := e.s.Commit(e.ctx, store.Commit{ExpectedVersion: s.Version, Session: n,
		History:  []fsm.HistoryEntry{{At: at, From: s.State, To: to, Event: fsm.EvTimer, By: fsm.ByTimer}},
		Webhooks: webhookEvents(s.ID, s.Version+1, at, types...)})
	n.Version = s.Version + 1
	return n, err
}

func deliveryIDs(ds []store.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func (e *env) claimDeliveries(now time.Time, owner string, max int) []store.Delivery {
	e.t.Helper()
	ds, err := e.s.ClaimDeliveries(e.ctx, now, owner, time.Minute, max)
	must(e.t, err)
	return ds
}

func (e *env) settle(d store.Delivery, o store.DeliveryOutcome) {
	e.t.Helper()
	must(e.t, e.s.SettleDelivery(e.ctx, d, o))
}

// testWebhooksInOrder: a commit's events are queued with it, in commit
// order; only a session's head is handed out, and only while nothing of the
// session is leased; a retry keeps the head; delivered or failed moves on.
func testWebhooksInOrder(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	s := e.createWith(Session("w1", "CPW", 1, now), "session.created", "extra.one")
	s, err := e.moveWith(s, fsm.UserConfirmed, now.Add(time.Second), "session.user_confirmed")
	must(t, err)
	// a commit refused by the compare-and-set queues nothing
	stale := s
	stale.Version = 1
	_, err = e.moveWith(stale, fsm.Cancelled, now.Add(time.Second), "session.cancelled")
	wantErr(t, err, store.ErrVersionConflict)
	// a malformed event id refuses the whole commit
	bad := s.Clone()
	bad.UpdatedAt = now.Add(2 * time.Second)
	err = e.s.Commit(e.ctx, store.Commit{ExpectedVersion: s.Version, Session: bad,
		Webhooks: []store.WebhookEvent{{ID: "evt_w1_9_0", Type: "x", CreatedAt: now, Body: []byte(`{}`)}}})
	wantErr(t, err, store.ErrInvalid)
	if got, _ := e.s.GetSession(e.ctx, "w1"); got.Version != s.Version {
		t.Fatalf("refused commit wrote version %d", got.Version)
	}

	if ds := e.claimDeliveries(now.Add(-time.Millisecond), "A", 10); len(ds) != 0 {
		t.Fatalf("claimed before due: %v", deliveryIDs(ds))
	}
	want := []string{store.EventID("w1", 1, 0), store.EventID("w1", 1, 1), store.EventID("w1", 2, 0)}
	var got []string
	at := now.Add(5 * time.Second)
	for i := range 3 {
		ds := e.claimDeliveries(at, "A", 10)
		if len(ds) != 1 {
			t.Fatalf("step %d: claimed %v, want the head only", i, deliveryIDs(ds))
		}
		d := ds[0]
		if d.Status != store.DeliveryPending || d.SessionID != "w1" || d.Lease == "" || !d.CreatedAt.Equal(now.Add(time.Duration(i/2)*time.Second)) {
			t.Fatalf("step %d: claimed %+v", i, d)
		}
		if string(d.Body) != fmt.Sprintf(`{"id":%q,"type":%q,"n":12345678901234567}`, d.ID, d.Type) {
			t.Fatalf("body changed in the store: %s", d.Body)
		}
		// the queue is leased: nothing more of w1 meanwhile
		if more := e.claimDeliveries(at, "B", 10); len(more) != 0 {
			t.Fatalf("step %d: claimed %v while the head is leased", i, deliveryIDs(more))
		}
		if i == 0 {
			// a failed attempt keeps it at the head, due later
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryPending, At: at, NextAt: at.Add(time.Minute), HTTPStatus: 503, Error: "503 Service Unavailable"})
			if more := e.claimDeliveries(at.Add(30*time.Second), "B", 10); len(more) != 0 {
				t.Fatalf("claimed %v before the retry is due", deliveryIDs(more))
			}
			at = at.Add(time.Minute)
			ds = e.claimDeliveries(at, "B", 10)
			if len(ds) != 1 || ds[0].ID != d.ID || ds[0].Attempts != 1 || ds[0].LastStatus != 503 || ds[0].LastError == "" {
				t.Fatalf("after a retry claimed %+v", ds)
			}
			d = ds[0]
		}
		e.settle(d, store.DeliveryOutcome{Status: store.DeliveryDelivered, At: at, HTTPStatus: 204})
		got = append(got, d.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if ds := e.claimDeliveries(at.Add(time.Hour), "A", 10); len(ds) != 0 {
		t.Fatalf("claimed %v after all were delivered", deliveryIDs(ds))
	}
	d, err := e.s.GetDelivery(e.ctx, want[0])
	must(t, err)
	if d.Status != store.DeliveryDelivered || d.Attempts != 2 || d.DoneAt.IsZero() || d.LastStatus != 204 || !d.NextAt.IsZero() {
		t.Fatalf("delivered record %+v", d)
	}
	// a new event after an empty queue is due again
	s, err = e.moveWith(s, fsm.Cancelled, at.Add(2*time.Hour), "session.cancelled")
	must(t, err)
	if ds := e.claimDeliveries(at.Add(2*time.Hour), "A", 10); len(ds) != 1 || ds[0].ID != store.EventID("w1", 3, 0) {
		t.Fatalf("after a later commit claimed %v", deliveryIDs(ds))
	}
}

// testWebhookLeases: sessions are claimed side by side; a lease that runs
// out lets another claim the head, and the first holder's settle is refused.
func testWebhookLeases(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	e.createWith(Session("l1", "CPL", 1, now), "session.created")
	e.createWith(Session("l2", "CPL", 2, now), "session.created")
	e.createWith(Session("l3", "CPL", 3, now), "session.created")
	a, err := e.s.ClaimDeliveries(e.ctx, now, "A", time.Minute, 2)
	must(t, err)
	if len(a) != 2 {
		t.Fatalf("claimed %v with max 2", deliveryIDs(a))
	}
	b := e.claimDeliveries(now, "B", 10)
	if len(b) != 1 || slices.Contains(deliveryIDs(a), b[0].ID) {
		t.Fatalf("then claimed %v after %v", deliveryIDs(b), deliveryIDs(a))
	}
	later := now.Add(time.Minute + time.Millisecond)
	c := e.claimDeliveries(later, "C", 10)
	if len(c) != 3 {
		t.Fatalf("after the leases ran out claimed %v", deliveryIDs(c))
	}
	err = e.s.SettleDelivery(e.ctx, a[0], store.DeliveryOutcome{Status: store.DeliveryDelivered, At: later})
	wantErr(t, err, store.ErrLeaseLost)
	err = e.s.SettleDelivery(e.ctx, a[0], store.DeliveryOutcome{Status: "bogus", At: later})
	wantErr(t, err, store.ErrInvalid)
	for _, d := range c {
		e.settle(d, store.DeliveryOutcome{Status: store.DeliveryDelivered, At: later})
	}
	_, err = e.s.ClaimDeliveries(e.ctx, now, "", time.Minute, 1)
	wantErr(t, err, store.ErrInvalid)
}

// testWebhookLog: given up, listed, counted, retried by an operator, paged;
// the queue and its lease survive a reopen.
func testWebhookLog(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	s := e.createWith(Session("g1", "CPG", 1, now), "session.created")
	_, err := e.moveWith(s, fsm.Cancelled, now.Add(time.Second), "session.cancelled")
	must(t, err)
	e.createWith(Session("g2", "CPG", 2, now.Add(2*time.Second)), "session.created")

	st, err := e.s.DeliveryStats(e.ctx)
	must(t, err)
	if st.Pending != 3 || st.Failed != 0 {
		t.Fatalf("stats %+v, want 3 pending", st)
	}
	at := now.Add(time.Hour)
	ds := e.claimDeliveries(at, "A", 10)
	if len(ds) != 2 {
		t.Fatalf("claimed %v", deliveryIDs(ds))
	}
	for _, d := range ds {
		if d.SessionID == "g1" {
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryFailed, At: at, Error: "connection refused"})
		} else {
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryDelivered, At: at, HTTPStatus: 200})
		}
	}
	// given up: the next of g1 goes; its lease survives a reopen
	ds = e.claimDeliveries(at, "A", 10)
	if len(ds) != 1 || ds[0].ID != store.EventID("g1", 2, 0) {
		t.Fatalf("after giving up claimed %v", deliveryIDs(ds))
	}
	e.reopen()
	if more := e.claimDeliveries(at, "B", 10); len(more) != 0 {
		t.Fatalf("after a reopen claimed %v under a live lease", deliveryIDs(more))
	}
	e.settle(ds[0], store.DeliveryOutcome{Status: store.DeliveryDelivered, At: at})

	st, err = e.s.DeliveryStats(e.ctx)
	must(t, err)
	if st.Pending != 0 || st.Failed != 1 {
		t.Fatalf("stats %+v, want 1 failed", st)
	}
	list := func(f store.DeliveryFilter) []string {
		t.Helper()
		p, err := e.s.ListDeliveries(e.ctx, f)
		must(t, err)
		return deliveryIDs(p.Deliveries)
	}
	first := store.EventID("g1", 1, 0)
	if got := list(store.DeliveryFilter{Status: store.DeliveryFailed}); !slices.Equal(got, []string{first}) {
		t.Fatalf("failed: %v", got)
	}
	if got := list(store.DeliveryFilter{}); !slices.Equal(got, []string{store.EventID("g2", 1, 0), store.EventID("g1", 2, 0), first}) {
		t.Fatalf("all, newest first: %v", got)
	}
	if got := list(store.DeliveryFilter{SessionID: "g1"}); !slices.Equal(got, []string{store.EventID("g1", 2, 0), first}) {
		t.Fatalf("g1: %v", got)
	}
	if got := list(store.DeliveryFilter{SessionID: "g1", Status: store.DeliveryDelivered}); !slices.Equal(got, []string{store.EventID("g1", 2, 0)}) {
		t.Fatalf("g1 delivered: %v", got)
	}
	// paging
	var paged []string
	cursor := ""
	for range 10 {
		p, err := e.s.ListDeliveries(e.ctx, store.DeliveryFilter{Limit: 1, Cursor: cursor})
		must(t, err)
		paged = append(paged, deliveryIDs(p.Deliveries)...)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if len(paged) != 3 || paged[2] != first {
		t.Fatalf("paged %v", paged)
	}
	// one session's pages, by its order
	paged, cursor = nil, ""
	for range 10 {
		p, err := e.s.ListDeliveries(e.ctx, store.DeliveryFilter{SessionID: "g1", Limit: 1, Cursor: cursor})
		must(t, err)
		paged = append(paged, deliveryIDs(p.Deliveries)...)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(paged, []string{store.EventID("g1", 2, 0), first}) {
		t.Fatalf("g1 paged %v", paged)
	}
	_, err = e.s.ListDeliveries(e.ctx, store.DeliveryFilter{Status: "lost"})
	wantErr(t, err, store.ErrInvalid)

	// the operator's retry: pending again, due now, a new window
	retryAt := at.Add(time.Hour)
	d, err := e.s.RetryDelivery(e.ctx, first, retryAt)
	must(t, err)
	if d.Status != store.DeliveryPending || !d.Since.Equal(retryAt) || !d.DoneAt.IsZero() {
		t.Fatalf("retried %+v", d)
	}
	if got := list(store.DeliveryFilter{Status: store.DeliveryFailed}); len(got) != 0 {
		t.Fatalf("failed after the retry: %v", got)
	}
	ds = e.claimDeliveries(retryAt, "A", 10)
	if len(ds) != 1 || ds[0].ID != first || ds[0].Attempts != 1 {
		t.Fatalf("after the retry claimed %+v", ds)
	}
	e.settle(ds[0], store.DeliveryOutcome{Status: store.DeliveryDelivered, At: retryAt})
	// a delivered one can be sent again too
	_, err = e.s.RetryDelivery(e.ctx, store.EventID("g2", 1, 0), retryAt)
	must(t, err)
	if ds = e.claimDeliveries(retryAt, "A", 10); len(ds) != 1 || ds[0].ID != store.EventID("g2", 1, 0) {
		t.Fatalf("a delivered one retried: claimed %v", deliveryIDs(ds))
	}

	_, err = e.s.GetDelivery(e.ctx, store.EventID("nope", 1, 0))
	wantErr(t, err, store.ErrNotFound)
	_, err = e.s.RetryDelivery(e.ctx, store.EventID("g1", 7, 0), retryAt)
	wantErr(t, err, store.ErrNotFound)
	_, err = e.s.GetDelivery(e.ctx, "not-an-event")
	wantErr(t, err, store.ErrInvalid)
	_, err = e.s.GetDelivery(e.ctx, store.EventID("g1", 1, 0)+"_rzz")
	wantErr(t, err, store.ErrInvalid)
	// another event at the same place (a commit made again after a lost one)
	_, err = e.s.GetDelivery(e.ctx, store.EventID("g1", 1, 0, "beef"))
	wantErr(t, err, store.ErrNotFound)
	_, err = e.s.RetryDelivery(e.ctx, store.EventID("g1", 1, 0, "beef"), retryAt)
	wantErr(t, err, store.ErrNotFound)
}

// testWebhooksConcurrent: workers claiming and delivering many sessions'
// events at once deliver each exactly once (no lease runs out), in order
// per session.
func testWebhooksConcurrent(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	const sessions, transitions = 8, 4
	for i := range sessions {
		id := fmt.Sprintf("c%d", i)
		s := e.createWith(Session(id, "CPC", i+1, now), "session.created")
		for range transitions {
			var err error
			s, err = e.moveWith(s, s.State, now, "session.x", "session.y")
			must(t, err)
		}
	}
	var mu sync.Mutex
	seen := map[string][]int64{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idle := 0; idle < 3; {
				ds, err := e.s.ClaimDeliveries(e.ctx, now, fmt.Sprintf("w%d", w), time.Hour, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 0 {
					idle++
					time.Sleep(5 * time.Millisecond)
					continue
				}
				idle = 0
				for _, d := range ds {
					mu.Lock()
					seen[d.SessionID] = append(seen[d.SessionID], d.Seq)
					mu.Unlock()
					if err := e.s.SettleDelivery(e.ctx, d, store.DeliveryOutcome{Status: store.DeliveryDelivered, At: now}); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	for i := range sessions {
		got := seen[fmt.Sprintf("c%d", i)]
		if len(got) != 1+2*transitions || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("session c%d delivered seqs %v", i, got)
		}
	}
}

// testWebhookTrim: the log's retention deletes delivered and failed
// deliveries done before the limit, never pending ones.
func testWebhookTrim(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	e.createWith(Session("t1", "CPT", 1, now), "session.created")
	e.createWith(Session("t2", "CPT", 2, now.Add(time.Millisecond)), "session.created")
	e.createWith(Session("t3", "CPT", 3, now.Add(2*time.Millisecond)), "session.created")
	e.createWith(Session("t4", "CPT", 4, now.Add(3*time.Millisecond)), "session.created")
	at := now.Add(time.Hour)
	for _, d := range e.claimDeliveries(at, "A", 10) {
		switch d.SessionID {
		case "t1":
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryDelivered, At: at})
		case "t2":
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryFailed, At: at, Error: "gone"})
		case "t3":
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryDelivered, At: at.Add(time.Hour)}) // done later
		case "t4":
			e.settle(d, store.DeliveryOutcome{Status: store.DeliveryPending, At: at, NextAt: at.Add(time.Minute)})
		}
	}
	n, err := e.s.TrimDeliveries(e.ctx, at.Add(time.Minute), 1)
	must(t, err)
	if n != 1 {
		t.Fatalf("trimmed %d with max 1", n)
	}
	n, err = e.s.TrimDeliveries(e.ctx, at.Add(time.Minute), 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("then trimmed %d, want the other one done before the limit", n)
	}
	for id, gone := range map[string]bool{"t1": true, "t2": true, "t3": false, "t4": false} {
		_, err := e.s.GetDelivery(e.ctx, store.EventID(id, 1, 0))
		if gone {
			wantErr(t, err, store.ErrNotFound)
		} else {
			must(t, err)
		}
	}
	p, err := e.s.ListDeliveries(e.ctx, store.DeliveryFilter{})
	must(t, err)
	if got := deliveryIDs(p.Deliveries); !slices.Equal(got, []string{store.EventID("t4", 1, 0), store.EventID("t3", 1, 0)}) {
		t.Fatalf("left %v", got)
	}
	st, err := e.s.DeliveryStats(e.ctx)
	must(t, err)
	if st.Failed != 0 || st.Pending != 1 {
		t.Fatalf("stats after the trim %+v", st)
	}
	// far in the future: the pending one stays
	n, err = e.s.TrimDeliveries(e.ctx, at.Add(1000*time.Hour), 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("trimmed %d, want t3 only", n)
	}
	_, err = e.s.TrimDeliveries(e.ctx, at, 0)
	wantErr(t, err, store.ErrInvalid)
}

// testWebhookReleaseLeases: a restarted instance gives back its previous
// life's claims at once; others' claims stay; a released claim's settle is
// refused.
func testWebhookReleaseLeases(e *env) {
	t := e.t
	now := T0.Add(time.Minute)
	e.createWith(Session("r1", "CPR", 1, now), "session.created")
	e.createWith(Session("r2", "CPR", 2, now), "session.created")
	e.createWith(Session("r3", "CPR", 3, now), "session.created")
	mine := e.claimDeliveries(now, "inst-7/webhook-0", 2)
	other := e.claimDeliveries(now, "inst-70/webhook-0", 1)
	if len(mine) != 2 || len(other) != 1 {
		t.Fatalf("claimed %v and %v", deliveryIDs(mine), deliveryIDs(other))
	}
	e.reopen()
	n, err := e.s.ReleaseDeliveryLeases(e.ctx, "inst-7/", now.Add(time.Second))
	must(t, err)
	if n != 2 {
		t.Fatalf("released %d, want 2", n)
	}
	again := e.claimDeliveries(now.Add(time.Second), "inst-7/webhook-1", 10)
	if !slices.Equal(ids2(again), ids2(mine)) {
		t.Fatalf("claimed again %v, want %v", deliveryIDs(again), deliveryIDs(mine))
	}
	wantErr(t, e.s.SettleDelivery(e.ctx, mine[0], store.DeliveryOutcome{Status: store.DeliveryDelivered, At: now}), store.ErrLeaseLost)
	e.settle(other[0], store.DeliveryOutcome{Status: store.DeliveryDelivered, At: now})
	_, err = e.s.ReleaseDeliveryLeases(e.ctx, "", now)
	wantErr(t, err, store.ErrInvalid)
}

func ids2(ds []store.Delivery) []string {
	out := deliveryIDs(ds)
	slices.Sort(out)
	return out
}
