package boltstore_test

import (
	"fmt"
	"testing"

	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	"github.com/chargeflow/chargeflow/store/storetest"
)

func openBench(b *testing.B, opts boltstore.Options) *boltstore.Store {
	s, err := boltstore.Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkCommit: one transition at a time, so every write transaction
// (and fsync) carries one: the latency of a lone writer.
func BenchmarkCommit(b *testing.B) { storetest.BenchCommit(b, openBench(b, boltstore.Options{}), nil) }

// BenchmarkCommitParallel: GOMAXPROCS×p goroutines commit to sessions of
// their own; the writer commits the writes waiting together (group commit),
// unbatched does one transaction per write (MaxBatch 1), as before group
// commit. writes/fsync is how many writes a transaction carried.
func BenchmarkCommitParallel(b *testing.B) {
	for _, p := range []int{4, 64} {
		for _, batch := range []int{0, 1} {
			name := fmt.Sprintf("goroutines=%dxGOMAXPROCS", p)
			if batch == 1 {
				name += "/unbatched"
			}
			b.Run(name, func(b *testing.B) {
				s := openBench(b, boltstore.Options{MaxBatch: batch})
				w0, c0 := s.WriteStats()
				storetest.BenchCommitParallelN(b, s, p)
				w, c := s.WriteStats()
				b.ReportMetric(float64(w-w0)/float64(max(c-c0, 1)), "writes/fsync")
			})
		}
	}
}
