package redisstore_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/internal/testenv"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

func openBench(b *testing.B) *redisstore.Store {
	s, err := redisstore.New(context.Background(), testenv.Redis(b), redisstore.Options{Prefix: testenv.Namespace(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// pingRate measures PINGs/s from 4*GOMAXPROCS goroutines on the client.
func pingRate(b *testing.B, s *redisstore.Store) float64 {
	ctx := context.Background()
	workers := 4 * runtime.GOMAXPROCS(0)
	const each = 500
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if err := s.Client().Ping(ctx).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(workers*each) / time.Since(start).Seconds()
}

// BenchmarkCommit reports commits/s and, in the same run, a PING on the
// same client after each commit (timed apart): pings/s and pings/commit, the
// number of raw round trips one commit costs (write-ahead pipeline, commit
// script, follow-up pipeline with the feed append: about 3 plus Lua work).
func BenchmarkCommit(b *testing.B) {
	s := openBench(b)
	storetest.BenchCommit(b, s, &storetest.Baseline{Name: "pings",
		Do: func(ctx context.Context) error { return s.Client().Ping(ctx).Err() }})
}

// BenchmarkCommitParallel: many sessions committed at once, beside the
// PING rate of as many goroutines measured just before.
func BenchmarkCommitParallel(b *testing.B) {
	s := openBench(b)
	pings := pingRate(b, s)
	commits := storetest.BenchCommitParallel(b, s)
	b.ReportMetric(pings, "pings/s")
	b.ReportMetric(pings/commits, "pings/commit")
}

// BenchmarkPing is the raw round trip alone.
func BenchmarkPing(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if err := s.Client().Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
