package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// Baseline is an operation timed beside each commit (Redis: a PING on the
// same client), so the ratio of the two is measured under the same load.
type Baseline struct {
	Name string // the metric's unit prefix, e.g. "pings"
	Do   func(ctx context.Context) error
}

// BenchCommit commits b.N transitions, one after another, to one session
// (each with a history entry, an effect and a feed entry: what a real
// transition writes) and reports commits/s. With a baseline it runs one
// baseline operation after each commit, timed apart, and reports its rate
// and how many baseline operations one commit costs.
func BenchCommit(b *testing.B, s store.Store, base *Baseline) {
	ctx := context.Background()
	sess := Session("bench", "CP1", 1, T0)
	if err := s.CreateSession(ctx, store.Commit{Session: sess}); err != nil {
		b.Fatal(err)
	}
	sess.Version = 1
	var commitTime, baseTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		n := sess.Clone()
		n.Seq = int64(i + 1)
		n.UpdatedAt = T0.Add(time.Duration(i) * time.Millisecond)
		t0 := time.Now()
		err := s.Commit(ctx, store.Commit{ExpectedVersion: sess.Version, Session: n,
			History: []fsm.HistoryEntry{{At: n.UpdatedAt, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger}},
			Effects: []fsm.Effect{{ID: fmt.Sprintf("bench/%d", i), Kind: fsm.EffQueryOrder, Session: "bench", DueAt: n.UpdatedAt}},
			Publish: true, ChangeData: []byte(`{"id":"bench"}`)})
		commitTime += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		sess = n
		sess.Version++
		if base != nil {
			t1 := time.Now()
			if err := base.Do(ctx); err != nil {
				b.Fatal(err)
			}
			baseTime += time.Since(t1)
		}
	}
	b.ReportMetric(float64(b.N)/commitTime.Seconds(), "commits/s")
	if base != nil {
		b.ReportMetric(float64(b.N)/baseTime.Seconds(), base.Name+"/s")
		b.ReportMetric(commitTime.Seconds()/baseTime.Seconds(), base.Name+"/commit")
	}
}

// BenchCommitParallel commits from GOMAXPROCS*4 goroutines, each to its own
// session, and reports the aggregate commits/s.
func BenchCommitParallel(b *testing.B, s store.Store) float64 { return BenchCommitParallelN(b, s, 4) }

// BenchCommitParallelN is BenchCommitParallel from GOMAXPROCS*p goroutines.
func BenchCommitParallelN(b *testing.B, s store.Store, p int) float64 {
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(p)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		g := next.Add(1)
		sess := Session(fmt.Sprintf("pb%d", g), fmt.Sprintf("CP%d", g), 1, T0)
		if err := s.CreateSession(ctx, store.Commit{Session: sess}); err != nil {
			b.Error(err)
			return
		}
		sess.Version = 1
		for i := 0; pb.Next(); i++ {
			n := sess.Clone()
			n.Seq++
			err := s.Commit(ctx, store.Commit{ExpectedVersion: sess.Version, Session: n,
				History: []fsm.HistoryEntry{{At: T0, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger}},
				Effects: []fsm.Effect{{ID: fmt.Sprintf("%s/%d", sess.ID, i), Kind: fsm.EffQueryOrder, Session: sess.ID, DueAt: T0}},
				Publish: true, ChangeData: []byte(`{}`)})
			if err != nil {
				b.Error(err)
				return
			}
			sess = n
			sess.Version++
		}
	})
	rate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "commits/s")
	return rate
}
