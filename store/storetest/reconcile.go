package storetest

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chargeflow/chargeflow/store"
)

// testReconciliations: reports are stored, replaced, listed newest first and
// survive a reopen; StartReconciliation lets exactly one of many racing
// instances run a day, and lets a stale running or failed run be retried.
func testReconciliations(e *env) {
	t, ctx, now := e.t, e.ctx, e.clock.Now()
	if _, err := e.s.GetReconciliation(ctx, "2026-12-01"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent report: %v", err)
	}
	for _, bad := range []string{"", "20261201", "2026-13-01", "2026-12-1"} {
		wantErr(t, e.s.PutReconciliation(ctx, store.Reconciliation{Date: bad}), store.ErrInvalid)
		_, err := e.s.StartReconciliation(ctx, bad, "a", now, time.Minute)
		wantErr(t, err, store.ErrInvalid)
	}
	_, err := e.s.ListReconciliations(ctx, 0)
	wantErr(t, err, store.ErrInvalid)
	if l, err := e.s.ListReconciliations(ctx, 10); err != nil || len(l) != 0 {
		t.Fatalf("empty list: %v %v", l, err)
	}

	// Eight instances race for one day: one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := e.s.StartReconciliation(ctx, "2026-12-02", "inst-"+string(rune('a'+i)), now, 10*time.Minute)
			if err != nil {
				t.Errorf("start: %v", err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d instances started one day", wins.Load())
	}
	r, err := e.s.GetReconciliation(ctx, "2026-12-02")
	must(t, err)
	if r.Status != store.ReconcileRunning || !r.RanAt.Equal(now) || r.Owner == "" {
		t.Fatalf("running report %+v", r)
	}
	// Running and fresh: no; stale: yes.
	if ok, err := e.s.StartReconciliation(ctx, "2026-12-02", "x", now.Add(time.Minute), 10*time.Minute); ok || err != nil {
		t.Fatalf("fresh running run restarted: %v %v", ok, err)
	}
	if ok, err := e.s.StartReconciliation(ctx, "2026-12-02", "x", now.Add(10*time.Minute), 10*time.Minute); !ok || err != nil {
		t.Fatalf("stale running run not restarted: %v %v", ok, err)
	}

	done := store.Reconciliation{Date: "2026-12-02", Status: store.ReconcileDifferences, Matched: 3, Differences: 1, OurLines: 4,
		HuifuLines: 3, RanAt: now.Add(11 * time.Minute), Owner: "x",
		Lines: []store.ReconcileLine{{Outcome: "missing_at_huifu", Kind: "debit", SessionID: "s1", ReqSeqID: "DB1", HfSeqID: "HF1", OurAmountFen: 100, OurStatus: "S"}}}
	must(t, e.s.PutReconciliation(ctx, done))
	if ok, err := e.s.StartReconciliation(ctx, "2026-12-02", "y", now.Add(48*time.Hour), time.Minute); ok || err != nil {
		t.Fatalf("finished run restarted: %v %v", ok, err)
	}
	must(t, e.s.PutReconciliation(ctx, store.Reconciliation{Date: "2026-12-01", Status: store.ReconcileMatched, Matched: 5, RanAt: now}))
	must(t, e.s.PutReconciliation(ctx, store.Reconciliation{Date: "2026-12-03", Status: store.ReconcileFailed, Error: "bill not ready", RanAt: now}))
	if ok, err := e.s.StartReconciliation(ctx, "2026-12-03", "y", now.Add(time.Hour), time.Hour); !ok || err != nil {
		t.Fatalf("failed run not retried: %v %v", ok, err)
	}

	e.reopen()
	got, err := e.s.GetReconciliation(ctx, "2026-12-02")
	must(t, err)
	if got.Status != done.Status || got.Matched != 3 || got.Differences != 1 || len(got.Lines) != 1 || got.Lines[0] != done.Lines[0] || !got.RanAt.Equal(done.RanAt) {
		t.Fatalf("after reopen %+v", got)
	}
	list, err := e.s.ListReconciliations(ctx, 2)
	must(t, err)
	if len(list) != 2 || list[0].Date != "2026-12-03" || list[1].Date != "2026-12-02" {
		t.Fatalf("list %+v", list)
	}
	all, err := e.s.ListReconciliations(ctx, store.MaxReconciliations)
	must(t, err)
	if len(all) != 3 || all[2].Date != "2026-12-01" {
		t.Fatalf("all %+v", all)
	}
}
