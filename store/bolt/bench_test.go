package boltstore_test

import (
	"testing"

	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	"github.com/chargeflow/chargeflow/store/storetest"
)

func openBench(b *testing.B) *boltstore.Store {
	s, err := boltstore.Open(b.TempDir(), boltstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkCommit: one transition per bbolt write transaction (each fsyncs).
func BenchmarkCommit(b *testing.B) { storetest.BenchCommit(b, openBench(b), nil) }

// BenchmarkCommitParallel: bbolt has one writer, so this shows the ceiling.
func BenchmarkCommitParallel(b *testing.B) { storetest.BenchCommitParallel(b, openBench(b)) }
