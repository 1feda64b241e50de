package main

import (
	"os"
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestMain stops the shared Redis Cluster and Sentinel set-up after the
// tests. Started by the scale bench as its service (scaleChildEnv, see
// bench_scale_child.go), the test binary is chargeflow itself instead.
func TestMain(m *testing.M) {
	if os.Getenv(scaleChildEnv) != "" {
		main()
		os.Exit(0)
	}
	testenv.Main(m, nil)
}
