package main

import (
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// The end-to-end happy path on a Redis Cluster (three primaries with a
// replica each) and through Sentinel: the service as deployed beyond one
// Redis, with Mosquitto, the sandbox and a simulated charger.
func TestEndToEndMultiNodeRedis(t *testing.T) {
	for _, c := range []struct{ name, url string }{
		{"cluster", testenv.RedisClusterURL(t)},
		{"sentinel", testenv.RedisSentinelURL(t)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStackWith(t, "external", 2, "", "CHARGEFLOW_REDIS_URL", c.url, "CHARGEFLOW_INSTANCE_ID", "e2e-"+c.name)
			t.Run("happy path to paid", func(t *testing.T) { s.t = t; happyPath(t, s, "CP-1") })
			t.Run("refund", func(t *testing.T) { s.t = t; refund(t, s, "CP-2") })
			s.t = t
			s.mustDo("GET", "/readyz", "", nil, 200)
		})
	}
}
