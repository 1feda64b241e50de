package redisstore_test

import (
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// The conformance suite on a real Redis Cluster of three primaries with a
// replica each: every subtest has its own key prefix, so the sessions, the
// global indexes ({due}, {feed}) and the lists of one run land on different
// primaries, and every cross-slot step goes through the client's routing.
func TestConformanceRedisCluster(t *testing.T) {
	storetest.Run(t, opener(testenv.RedisClusterURL(t)))
}

// The conformance suite through Sentinel: the client asks the sentinels for
// the primary and talks to it.
func TestConformanceRedisSentinel(t *testing.T) {
	storetest.Run(t, opener(testenv.RedisSentinelURL(t)))
}
