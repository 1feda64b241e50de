package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// The group commit (write.go): writes of concurrent callers share one
// transaction, and every caller still gets the answer it would get alone.
// Each race below holds bbolt's write lock until all its calls are handed to
// the writer, so they do share transactions.

func openAt(t *testing.T, dir string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(dir, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// race runs fn(0..n-1) at once, each making one write, and returns their
// errors by index. It checks that the writes that succeeded were committed in
// at most two transactions (the one the writer took before the lock was
// released, and the rest).
func race(t *testing.T, s *boltstore.Store, n int, fn func(i int) error) []error {
	t.Helper()
	writes0, commits0 := s.WriteStats()
	release := boltstore.HoldWrites(s)
	errs := make([]error, n)
	var wg sync.WaitGroup
	var returned atomic.Int64 // answered without the writer (a read sufficed)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
			returned.Add(1)
		}()
	}
	for boltstore.Waiting(s)+returned.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	writes, commits := s.WriteStats()
	if writes-writes0 != uint64(ok) || commits-commits0 > 2 {
		t.Fatalf("%d writes succeeded: counted %d writes in %d commits", ok, writes-writes0, commits-commits0)
	}
	return errs
}

// winner returns the one index of errs with no error, and checks that all
// the others are want.
func winner(t *testing.T, what string, errs []error, idx []int, want error) int {
	t.Helper()
	w := -1
	for _, i := range idx {
		switch {
		case errs[i] == nil && w < 0:
			w = i
		case errs[i] == nil:
			t.Fatalf("%s: both %d and %d succeeded", what, w, i)
		case !errors.Is(errs[i], want):
			t.Fatalf("%s: caller %d: %v, want %v", what, i, errs[i], want)
		}
	}
	if w < 0 {
		t.Fatalf("%s: nobody succeeded", what)
	}
	return w
}

func TestGroupCommitAnswersEachCaller(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	defer func() { s.Close() }()
	ctx := t.Context()
	const sessions, racers = 16, 4
	id := func(i int) string { return fmt.Sprintf("s%02d", i%sessions) }
	byID := func(i int) []int { // the racers on session i
		var out []int
		for r := range racers {
			out = append(out, r*sessions+i)
		}
		return out
	}

	// Creations: racers of each id, each with its own effect; plus sessions
	// of their own ids on one connector.
	errs := race(t, s, sessions*racers, func(i int) error {
		return s.CreateSession(ctx, store.Commit{Session: storetest.Session(id(i), "CP"+id(i), 1, storetest.T0),
			Effects: []fsm.Effect{{ID: fmt.Sprintf("create/%d", i), Kind: fsm.EffQueryOrder, Session: id(i), DueAt: storetest.T0}}})
	})
	created := map[string]int{}
	for i := range sessions {
		created[id(i)] = winner(t, "create "+id(i), errs, byID(i), store.ErrExists)
	}
	const busy = 6
	errs = race(t, s, busy, func(i int) error {
		return s.CreateSession(ctx, store.Commit{Session: storetest.Session(fmt.Sprintf("busy%d", i), "CPB", 1, storetest.T0)})
	})
	all := make([]int, busy)
	for i := range all {
		all[i] = i
	}
	w := winner(t, "one connector", errs, all, store.ErrConnectorBusy)
	if a, err := s.ActiveSession(ctx, "CPB", 1); err != nil || a.ID != fmt.Sprintf("busy%d", w) {
		t.Fatalf("active on CPB: %v %v, want busy%d", a.ID, err, w)
	}

	// Commits: racers of each session from version 1, each with its own
	// effect and history note; one wins per session, the others conflict.
	errs = race(t, s, sessions*racers, func(i int) error {
		n := storetest.Session(id(i), "CP"+id(i), 1, storetest.T0)
		n.Version, n.Seq, n.ConfirmedBy = 1, int64(i+1), fmt.Sprint(i)
		return s.Commit(ctx, store.Commit{ExpectedVersion: 1, Session: n,
			History: []fsm.HistoryEntry{{At: storetest.T0, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger, Note: fmt.Sprint(i)}},
			Effects: []fsm.Effect{{ID: fmt.Sprintf("commit/%d", i), Kind: fsm.EffQueryOrder, Session: id(i), DueAt: storetest.T0}}})
	})
	committed := map[string]int{}
	for i := range sessions {
		committed[id(i)] = winner(t, "commit "+id(i), errs, byID(i), store.ErrVersionConflict)
	}
	checkSessions := func(s store.Store) {
		t.Helper()
		for sid, w := range committed {
			got, err := s.GetSession(ctx, sid)
			if err != nil || got.Version != 2 || got.Seq != int64(w+1) {
				t.Fatalf("%s: version %d seq %d (%v), want 2 and %d", sid, got.Version, got.Seq, err, w+1)
			}
			h, err := s.History(ctx, sid)
			if err != nil || len(h) != 1 || h[0].Note != fmt.Sprint(w) {
				t.Fatalf("%s: history %+v (%v), want only caller %d's", sid, h, err, w)
			}
		}
	}
	checkSessions(s)
	for sid := range committed {
		tasks, err := s.PendingTasks(ctx, sid)
		if err != nil || len(tasks) != 2 {
			t.Fatalf("%s: tasks %+v (%v), want the winners' two", sid, tasks, err)
		}
		for _, task := range tasks {
			if task.ID != fmt.Sprintf("create/%d", created[sid]) && task.ID != fmt.Sprintf("commit/%d", committed[sid]) {
				t.Fatalf("%s: task %s of a caller that lost", sid, task.ID)
			}
		}
	}

	// Claims: owners claim at once until every task is claimed, each once.
	now := storetest.T0.Add(time.Minute)
	var claimed []store.Task
	seen := map[string]bool{}
	for len(claimed) < 2*sessions {
		var mu sync.Mutex
		var round []store.Task
		errs := race(t, s, 6, func(i int) error {
			got, err := s.Claim(ctx, now, fmt.Sprintf("owner%d", i), time.Minute, 5)
			mu.Lock()
			round = append(round, got...)
			mu.Unlock()
			return err
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(round) == 0 {
			t.Fatalf("claimed %d of %d tasks, then nothing", len(claimed), 2*sessions)
		}
		for _, task := range round {
			if seen[task.SessionID+"/"+task.ID] {
				t.Fatalf("task %s/%s claimed twice", task.SessionID, task.ID)
			}
			seen[task.SessionID+"/"+task.ID] = true
		}
		claimed = append(claimed, round...)
	}
	if len(claimed) != 2*sessions {
		t.Fatalf("claimed %d tasks, want %d", len(claimed), 2*sessions)
	}
	if more, err := s.Claim(ctx, now, "late", time.Minute, 5); err != nil || len(more) > 0 {
		t.Fatalf("claimed again: %+v %v", more, err)
	}

	// Settling: per task two callers with its lease (complete or retry,
	// complete) and one with a stale lease; one of the first two wins.
	errs = race(t, s, 3*len(claimed), func(i int) error {
		task := claimed[i/3]
		switch i % 3 {
		case 0:
			if i/3%2 == 1 {
				return s.Retry(ctx, task, now.Add(time.Hour), "again")
			}
			return s.Complete(ctx, task)
		case 1:
			return s.Complete(ctx, task)
		default:
			task.Lease += "x"
			return s.Complete(ctx, task)
		}
	})
	retried := map[string]bool{}
	for j, task := range claimed {
		w := winner(t, "settle "+task.ID, errs, []int{3 * j, 3*j + 1}, store.ErrLeaseLost)
		if !errors.Is(errs[3*j+2], store.ErrLeaseLost) {
			t.Fatalf("stale lease on %s: %v", task.ID, errs[3*j+2])
		}
		if w == 3*j && j%2 == 1 {
			retried[task.SessionID+"/"+task.ID] = true
		}
	}
	checkTasks := func(s store.Store) {
		t.Helper()
		n := 0
		for sid := range committed {
			tasks, err := s.PendingTasks(ctx, sid)
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range tasks {
				if !retried[sid+"/"+task.ID] || task.Tries != 1 || task.Lease != "" {
					t.Fatalf("task %s/%s left: %+v", sid, task.ID, task)
				}
				n++
			}
		}
		if n != len(retried) {
			t.Fatalf("%d tasks left, want the %d retried", n, len(retried))
		}
	}
	checkTasks(s)

	// Processed marks and idempotency records: one first per key.
	const keys = 5
	var marked [10 * keys]bool
	var idem [10]store.IdemRecord
	var createdIdem [10]bool
	errs = race(t, s, 10*keys+10, func(i int) error {
		var err error
		if i >= 10*keys {
			idem[i-10*keys], createdIdem[i-10*keys], err = s.PutIdempotency(ctx, "idem", fmt.Sprintf("hash%d", i), time.Hour)
		} else {
			marked[i], err = s.MarkProcessed(ctx, "txn", fmt.Sprintf("k%d", i%keys), time.Hour)
		}
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	for k := range keys {
		n := 0
		for r := range 10 {
			if marked[r*keys+k] {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("mark k%d: first for %d callers", k, n)
		}
	}
	firstIdem := -1
	for i, c := range createdIdem {
		if c {
			if firstIdem >= 0 {
				t.Fatalf("idempotency key created by %d and %d", firstIdem, i)
			}
			firstIdem = i
		}
	}
	for i, r := range idem {
		if firstIdem < 0 || r.RequestHash != fmt.Sprintf("hash%d", 10*keys+firstIdem) {
			t.Fatalf("caller %d saw %q, first %d", i, r.RequestHash, firstIdem)
		}
	}

	// Every answer given was durable: the same after a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	checkSessions(s)
	checkTasks(s)
	for k := range keys {
		if first, err := s.MarkProcessed(ctx, "txn", fmt.Sprintf("k%d", k), time.Hour); err != nil || first {
			t.Fatalf("mark k%d after reopen: first %v (%v)", k, first, err)
		}
	}
}

// A write whose function panics panics in its caller's goroutine, and the
// writes that shared its batch are made.
func TestGroupCommitPanicStaysWithItsCaller(t *testing.T) {
	s := openAt(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	if err := s.PutCharger(ctx, store.Charger{ID: "CP0", Connectors: []int{1}}); err != nil {
		t.Fatal(err)
	}
	var recovered any
	errPanicked := errors.New("panicked")
	race(t, s, 6, func(i int) (err error) {
		if i > 0 {
			return s.PutCharger(ctx, store.Charger{ID: fmt.Sprintf("CP%d", i), Connectors: []int{1}})
		}
		defer func() {
			if recovered = recover(); recovered != nil {
				err = errPanicked
			}
		}()
		_, err = s.UpdateCharger(ctx, "CP0", func(c *store.Charger) ([]byte, error) {
			c.Connectors = []int{1, 2}
			panic("boom")
		})
		return err
	})
	if recovered != "boom" {
		t.Fatalf("recovered %v", recovered)
	}
	for i := range 6 {
		c, err := s.GetCharger(ctx, fmt.Sprintf("CP%d", i))
		if err != nil || len(c.Connectors) != 1 {
			t.Fatalf("CP%d: %+v %v", i, c, err)
		}
	}
}

// A write whose context ends while it waits for the writer is not made, and
// its caller is told so.
func TestGroupCommitCancelledWhileWaiting(t *testing.T) {
	s := openAt(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	release := boltstore.HoldWrites(s)
	first := make(chan error, 1)
	go func() { first <- s.PutCharger(ctx, store.Charger{ID: "first"}) }()
	for boltstore.Waiting(s) < 1 || boltstore.Queued(s) > 0 { // the writer took it, and waits for the lock
		time.Sleep(time.Millisecond)
	}
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() { second <- s.PutCharger(cctx, store.Charger{ID: "second"}) }()
	for boltstore.Queued(s) < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v", err)
	}
	if _, err := s.GetCharger(ctx, "second"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancelled write made: %v", err)
	}
	if _, err := s.GetCharger(ctx, "first"); err != nil {
		t.Fatal(err)
	}
}

// Polls of an outbox or webhook queue with nothing due are reads: they
// commit (and fsync) nothing.
func TestEmptyClaimWritesNothing(t *testing.T) {
	s := openAt(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	if err := s.CreateSession(ctx, store.Commit{Session: storetest.Session("s", "CP", 1, storetest.T0),
		Effects: []fsm.Effect{{ID: "later", Kind: fsm.EffQueryOrder, Session: "s", DueAt: storetest.T0.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	w0, c0 := s.WriteStats()
	if got, err := s.Claim(ctx, storetest.T0, "w", time.Minute, 8); err != nil || len(got) > 0 {
		t.Fatalf("claim: %+v %v", got, err)
	}
	if got, err := s.ClaimDeliveries(ctx, storetest.T0, "w", time.Minute, 8); err != nil || len(got) > 0 {
		t.Fatalf("claim deliveries: %+v %v", got, err)
	}
	if w, c := s.WriteStats(); w != w0 || c != c0 {
		t.Fatalf("empty claims wrote: %d writes %d commits, were %d %d", w, c, w0, c0)
	}
	got, err := s.Claim(ctx, storetest.T0.Add(time.Hour), "w", time.Minute, 8)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim when due: %+v %v", got, err)
	}
	if w, c := s.WriteStats(); w != w0+1 || c != c0+1 {
		t.Fatalf("claim when due: %d writes %d commits, were %d %d", w, c, w0, c0)
	}
}

// A refusal decided before a call writes (a stale version, a lost lease, a
// taken id) costs the batch nothing: the others commit in the same
// transaction, with no rollback and no run again, and the refused callers
// get their refusal.
func TestRefusalsDoNotRollBackTheBatch(t *testing.T) {
	s := openAt(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	const n = 12
	for i := range n {
		if err := s.CreateSession(ctx, store.Commit{Session: storetest.Session(fmt.Sprintf("r%02d", i), fmt.Sprintf("CPR%02d", i), 1, storetest.T0)}); err != nil {
			t.Fatal(err)
		}
	}
	r0 := boltstore.Rollbacks(s)
	// Even racers commit their own session from version 1; odd racers
	// commit from a version that never was, or create an id that exists:
	// refused, interleaved with the good ones in one batch.
	errs := race(t, s, 3*n, func(i int) error {
		id := fmt.Sprintf("r%02d", i%n)
		switch i / n {
		case 0:
			next := storetest.Session(id, fmt.Sprintf("CPR%02d", i%n), 2, storetest.T0)
			return s.Commit(ctx, store.Commit{ExpectedVersion: 1, Session: next})
		case 1:
			next := storetest.Session(id, fmt.Sprintf("CPR%02d", i%n), 9, storetest.T0)
			return s.Commit(ctx, store.Commit{ExpectedVersion: 8, Session: next})
		default:
			return s.CreateSession(ctx, store.Commit{Session: storetest.Session(id, "CPX", 1, storetest.T0)})
		}
	})
	for i, err := range errs {
		want := []error{nil, store.ErrVersionConflict, store.ErrExists}[i/n]
		if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
			t.Fatalf("racer %d: %v, want %v", i, err, want)
		}
	}
	if r := boltstore.Rollbacks(s) - r0; r != 0 {
		t.Fatalf("%d batches rolled back for refusals", r)
	}
	for i := range n {
		got, err := s.GetSession(ctx, fmt.Sprintf("r%02d", i))
		if err != nil || got.Version != 2 {
			t.Fatalf("r%02d: version %d, %v", i, got.Version, err)
		}
	}
}
