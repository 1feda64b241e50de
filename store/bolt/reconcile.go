package boltstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/store"
)

// bReconciliations holds the reconciliation reports: date → JSON (dates
// sort as bytes). It is created on first write.
var bReconciliations = []byte("reconciliations")

func getReconciliation(tx *bolt.Tx, date string) (*store.Reconciliation, error) {
	b := tx.Bucket(bReconciliations)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(date))
	if v == nil {
		return nil, nil
	}
	var r store.Reconciliation
	if err := store.DecodeJSON("reconciliations/"+date, v, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func putReconciliation(tx *bolt.Tx, r store.Reconciliation) error {
	b, err := tx.CreateBucketIfNotExists(bReconciliations)
	if err != nil {
		return err
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(r.Date), v)
}

// StartReconciliation implements store.Store.
func (s *Store) StartReconciliation(ctx context.Context, date, owner string, now time.Time, retryAfter time.Duration) (started bool, err error) {
	if err := store.CheckReconcileDate(date); err != nil {
		return false, err
	}
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		cur, err := getReconciliation(tx, date)
		if err != nil {
			return err
		}
		started = store.MayStartReconciliation(cur, now, retryAfter)
		if !started {
			return nil
		}
		return putReconciliation(tx, store.Reconciliation{Date: date, Status: store.ReconcileRunning, RanAt: now, Owner: owner})
	})
	return started, err
}

// PutReconciliation implements store.Store.
func (s *Store) PutReconciliation(ctx context.Context, r store.Reconciliation) error {
	if err := store.CheckReconcileDate(r.Date); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error { return putReconciliation(tx, r) })
}

// GetReconciliation implements store.Store.
func (s *Store) GetReconciliation(ctx context.Context, date string) (r store.Reconciliation, err error) {
	if err := store.CheckReconcileDate(date); err != nil {
		return r, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		cur, err := getReconciliation(tx, date)
		if err != nil {
			return err
		}
		if cur == nil {
			return fmt.Errorf("reconciliation %s: %w", date, store.ErrNotFound)
		}
		r = *cur
		return nil
	})
	return r, err
}

// ListReconciliations implements store.Store.
func (s *Store) ListReconciliations(ctx context.Context, limit int) (out []store.Reconciliation, err error) {
	if limit < 1 || limit > store.MaxReconciliations {
		return nil, fmt.Errorf("%w: limit %d not in 1..%d", store.ErrInvalid, limit, store.MaxReconciliations)
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		b := tx.Bucket(bReconciliations)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var r store.Reconciliation
			if err := store.DecodeJSON("reconciliations/"+string(bytes.Clone(k)), v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
