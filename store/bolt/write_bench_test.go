package boltstore

import (
	"context"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkLoneWrite: what handing a write to the writer goroutine adds for
// a caller that is alone (no batch to share), against the same put in its
// own db.Update on the caller's goroutine, as before group commit. With
// nosync the fsync is left out, so the difference is all there is to see.
func BenchmarkLoneWrite(b *testing.B) {
	put := func(tx *bolt.Tx) error { return tx.Bucket(bChargers).Put([]byte("k"), []byte("v")) }
	for _, nosync := range []bool{false, true} {
		for _, via := range []string{"writer", "direct"} {
			name := via
			if nosync {
				name += "/nosync"
			}
			b.Run(name, func(b *testing.B) {
				s, err := Open(b.TempDir(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				s.db.NoSync = nosync
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if via == "writer" {
						err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error { return put(tx) })
					} else {
						err = s.db.Update(put)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
