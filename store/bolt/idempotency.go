package boltstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/store"
)

type idemRec struct {
	Hash      string `json:"h"`
	Status    int    `json:"s,omitempty"`
	Body      []byte `json:"b,omitempty"`
	SessionID string `json:"sid,omitempty"`
	Exp       int64  `json:"exp"`
}

func (r idemRec) record() store.IdemRecord {
	return store.IdemRecord{RequestHash: r.Hash, Status: r.Status, Body: r.Body, SessionID: r.SessionID, ExpiresAt: store.FromMillis(r.Exp)}
}

func expiryKey(exp int64, kind byte, key []byte) []byte {
	return append(append(msKey(exp), kind), key...)
}

// PutIdempotency implements store.Store.
func (s *Store) PutIdempotency(ctx context.Context, key, requestHash string, ttl time.Duration) (rec store.IdemRecord, created bool, err error) {
	if key == "" || ttl <= 0 {
		return rec, false, fmt.Errorf("%w: idempotency needs a key and a ttl", store.ErrInvalid)
	}
	now := s.opts.Now()
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bIdem)
		if v := b.Get([]byte(key)); v != nil {
			var r idemRec
			if err := store.DecodeJSON("idem/"+key, v, &r); err != nil {
				return err
			}
			if r.Exp > store.Millis(now) {
				rec, created = r.record(), false
				return nil
			}
		}
		r := idemRec{Hash: requestHash, Exp: store.Millis(now.Add(ttl))}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(key), v); err != nil {
			return err
		}
		rec, created = r.record(), true
		return tx.Bucket(bExpiry).Put(expiryKey(r.Exp, 'i', []byte(key)), nil)
	})
	return rec, created, err
}

// SaveIdempotentResponse implements store.Store.
func (s *Store) SaveIdempotentResponse(ctx context.Context, key string, rec store.IdemRecord) error {
	now := s.opts.Now()
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bIdem)
		v := b.Get([]byte(key))
		if v == nil {
			return fmt.Errorf("idempotency key %s: %w", key, store.ErrNotFound)
		}
		var r idemRec
		if err := store.DecodeJSON("idem/"+key, v, &r); err != nil {
			return err
		}
		if r.Exp <= store.Millis(now) {
			return fmt.Errorf("idempotency key %s expired: %w", key, store.ErrNotFound)
		}
		if r.Hash != rec.RequestHash {
			return fmt.Errorf("idempotency key %s: other request: %w", key, store.ErrConflict)
		}
		r.Status, r.Body, r.SessionID = rec.Status, rec.Body, rec.SessionID
		nv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), nv)
	})
}

// DeleteIdempotency implements store.Store.
func (s *Store) DeleteIdempotency(ctx context.Context, key string) error {
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		return tx.Bucket(bIdem).Delete([]byte(key))
	})
}

// MarkProcessed implements store.Store.
func (s *Store) MarkProcessed(ctx context.Context, scope, key string, ttl time.Duration) (first bool, err error) {
	if key == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: processed mark needs a key and a ttl", store.ErrInvalid)
	}
	now := store.Millis(s.opts.Now())
	k := join(scope, key)
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bDone)
		if v := b.Get(k); len(v) == 8 && msFromKey(v) > now {
			first = false
			return nil
		}
		exp := now + ttl.Milliseconds()
		first = true
		if err := b.Put(k, msKey(exp)); err != nil {
			return err
		}
		return tx.Bucket(bExpiry).Put(expiryKey(exp, 'd', k), nil)
	})
	return first, err
}

func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if n, err := s.Sweep(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
				s.opts.Logger.Warn("boltstore: sweep expired records", "err", err)
			} else if n > 0 {
				s.opts.Logger.Debug("boltstore: swept expired records", "n", n)
			}
		}
	}
}

// Sweep deletes expired idempotency records and processed marks now (the
// sweeper does it periodically; expired records are treated as absent
// either way) and returns how many it deleted.
func (s *Store) Sweep(ctx context.Context) (n int, err error) {
	now := store.Millis(s.opts.Now())
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		n = 0
		exp, idem, done := tx.Bucket(bExpiry), tx.Bucket(bIdem), tx.Bucket(bDone)
		var keys [][]byte
		cur := exp.Cursor()
		for k, _ := cur.First(); k != nil && msFromKey(k) <= now && len(keys) < 10000; k, _ = cur.Next() {
			keys = append(keys, copyBytes(k))
		}
		for _, k := range keys {
			if err := exp.Delete(k); err != nil {
				return err
			}
			at, kind, key := msFromKey(k), k[8], k[9:]
			switch kind {
			case 'i':
				if v := idem.Get(key); v != nil {
					var r idemRec
					if json.Unmarshal(v, &r) != nil || r.Exp == at {
						if err := idem.Delete(key); err != nil {
							return err
						}
						n++
					}
				}
			case 'd':
				if v := done.Get(key); len(v) == 8 && msFromKey(v) == at {
					if err := done.Delete(key); err != nil {
						return err
					}
					n++
				}
			}
		}
		return nil
	})
	return n, err
}
