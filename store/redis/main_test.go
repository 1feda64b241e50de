package redisstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestMain stops the shared Redis Cluster and Sentinel set-up after the
// tests, then checks no goroutine outlived them. A client's pool whose
// server was killed (the failover tests) may still sleep out its last
// background re-dial for up to a second after Close: that goroutine ends by
// itself.
func TestMain(m *testing.M) {
	testenv.Main(m, func() error {
		return goleak.Find(goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
	})
}
