package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

// parallelWriters is how many sessions commit at once in the
// store.bolt.parallel row (as many confirmations arriving together).
const parallelWriters = 64

// parallelCommits is one bbolt store with a commit loop per writer.
type parallelCommits struct {
	st    *boltstore.Store
	loops []*commitLoop
}

func openParallelCommits(ctx context.Context, b *bench, dir string, maxBatch int) (*parallelCommits, error) {
	st, err := boltstore.Open(dir, boltstore.Options{Logger: b.log, MaxBatch: maxBatch})
	if err != nil {
		return nil, err
	}
	p := &parallelCommits{st: st}
	for i := range parallelWriters {
		cl, err := newCommitLoopOn(ctx, st, fmt.Sprintf("boltpar%d", i), fmt.Sprintf("BENCHCP%d", i))
		if err != nil {
			st.Close()
			return nil, err
		}
		p.loops = append(p.loops, cl)
	}
	return p, nil
}

// round commits one transition on every loop, all at once.
func (p *parallelCommits) round(ctx context.Context) error {
	errs := make([]error, len(p.loops))
	var wg sync.WaitGroup
	for i, cl := range p.loops {
		wg.Go(func() { errs[i] = cl.commit(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// emitStoreBoltParallel: rounds of parallelWriters commits made at once,
// each to a session of its own, on a store whose writer shares one
// transaction (one fsync) among the writes waiting (group commit), beside
// the same rounds on a store that commits every write alone (MaxBatch 1).
func (b *bench) emitStoreBoltParallel(ctx context.Context) {
	const name = "store.bolt.parallel"
	dir, err := os.MkdirTemp("", "chargeflow-bench-")
	if err != nil {
		b.fail(name, err)
		return
	}
	defer os.RemoveAll(dir)
	grouped, err := openParallelCommits(ctx, b, filepath.Join(dir, "grouped"), 0)
	if err != nil {
		b.fail(name, err)
		return
	}
	defer grouped.st.Close()
	alone, err := openParallelCommits(ctx, b, filepath.Join(dir, "alone"), 1)
	if err != nil {
		b.fail(name, err)
		return
	}
	defer alone.st.Close()
	w0, c0 := grouped.st.WriteStats()
	f, base, err := alternate(ctx, b.duration,
		func() error { return grouped.round(ctx) },
		func() error { return alone.round(ctx) })
	if err != nil {
		b.fail(name, err)
		return
	}
	w, c := grouped.st.WriteStats()
	perFsync := float64(w-w0) / float64(max(c-c0, 1))
	b.emit(benchRow{Scenario: name, Figure: f.rate() * parallelWriters, Unit: "commits/s", Ops: f.ops * parallelWriters,
		Baseline: base.rate() * parallelWriters, BaselineUnit: "commits/s, one fsync each (MaxBatch 1)", BaselineOps: base.ops * parallelWriters,
		Extra: map[string]float64{"writes_per_fsync": perFsync},
		Notes: fmt.Sprintf("%d sessions commit at once, each round waited for; group commit: %.1f writes per fsync", parallelWriters, perFsync)})
}
