package boltstore

import bolt "go.etcd.io/bbolt"

// PutRaw writes v under key in bucket, bypassing the store (tests of bad
// stored data).
func PutRaw(s *Store, bucket, key string, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), v) })
}

// HoldWrites holds bbolt's one write lock, bypassing the writer, until
// release is called: writes made meanwhile wait, and then share batches.
func HoldWrites(s *Store) (release func()) {
	held, released, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = s.db.Update(func(*bolt.Tx) error {
			close(held)
			<-released
			return nil
		})
	}()
	<-held
	return func() {
		close(released)
		<-done
	}
}

// Waiting is how many calls have been handed to the writer and not yet
// answered; Queued how many of them it has not taken yet.
func Waiting(s *Store) int64 { return s.waiting.Load() }

func Queued(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Rollbacks counts the batches rolled back and run again without a failed call.
func Rollbacks(s *Store) uint64 { return s.rollbacks.Load() }
