package redisstore_test

import (
	"context"
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// BenchmarkCommitWait is the cost of the durability policy: a commit on a
// primary with one replica (the Sentinel set-up's), then Durable after it
// (a write and `WAIT 1` on one connection, durable.go), timed apart:
// commits/s, waits/s and waits/commit (a Durable's latency against a whole
// commit's). A commit followed by Durable costs 1 + 1/(waits/commit)
// commits' time.
func BenchmarkCommitWait(b *testing.B) {
	primary := testenv.SharedRedisSentinel(b).Primary(b)
	s, err := redisstore.New(context.Background(), primary.URL+"/0", redisstore.Options{Prefix: testenv.Namespace(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	storetest.BenchCommit(b, s, &storetest.Baseline{Name: "waits", Do: func(ctx context.Context) error {
		return s.Durable(ctx, "bench")
	}})
}
