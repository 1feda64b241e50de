package boltstore

import bolt "go.etcd.io/bbolt"

// PutRaw writes v under key in bucket, bypassing the store (tests of bad
// stored data).
func PutRaw(s *Store, bucket, key string, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), v) })
}
