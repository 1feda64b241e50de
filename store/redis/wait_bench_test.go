package redisstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// BenchmarkCommitWait is the cost of the durability policy's WAIT: a
// commit on a primary with one replica (the Sentinel set-up's, addressed
// directly with ONE connection, since WAIT waits for the writes of the
// connection it is sent on), then `WAIT 1 1000` after it, timed apart:
// commits/s, waits/s and waits/commit (a WAIT's latency against a whole
// commit's). A commit followed by its WAIT costs 1 + 1/(waits/commit)
// commits' time.
func BenchmarkCommitWait(b *testing.B) {
	primary := testenv.SharedRedisSentinel(b).Primary(b)
	s, err := redisstore.New(context.Background(), primary.URL+"/0?pool_size=1", redisstore.Options{Prefix: testenv.Namespace(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	storetest.BenchCommit(b, s, &storetest.Baseline{Name: "waits", Do: func(ctx context.Context) error {
		n, err := s.Client().Do(ctx, "WAIT", 1, 1000).Int()
		if err == nil && n < 1 {
			err = fmt.Errorf("WAIT: %d replicas acknowledged", n)
		}
		return err
	}})
}
