package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

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
	// with no replica to wait for, a commit is as durable as it gets at once
	must(t, e.s.Durable(e.ctx, "s1"))
	must(t, e.s.Durable(e.ctx, "no-such-session"))
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
