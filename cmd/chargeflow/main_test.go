package main

import (
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestMain stops the shared Redis Cluster and Sentinel set-up after the
// tests.
func TestMain(m *testing.M) { testenv.Main(m, nil) }
