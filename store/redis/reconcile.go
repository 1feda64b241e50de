package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/store"
)

// reconcileKey is the hash of reconciliation reports: date → JSON.
func (s *Store) reconcileKey() string { return s.p + ":reconciliations" }

func (s *Store) getReconciliation(ctx context.Context, date string) (*store.Reconciliation, string, error) {
	raw, err := s.c.HGet(ctx, s.reconcileKey(), date).Result()
	if errors.Is(err, redis.Nil) {
		return nil, "", nil
	} else if err != nil {
		return nil, "", mapErr(err)
	}
	var r store.Reconciliation
	if err := store.DecodeJSON(s.reconcileKey()+" "+date, []byte(raw), &r); err != nil {
		return nil, "", err
	}
	return &r, raw, nil
}

// StartReconciliation implements store.Store: read, decide, then a
// compare-and-set of the field, so of two instances racing one wins.
func (s *Store) StartReconciliation(ctx context.Context, date, owner string, now time.Time, retryAfter time.Duration) (bool, error) {
	if err := store.CheckReconcileDate(date); err != nil {
		return false, err
	}
	cur, raw, err := s.getReconciliation(ctx, date)
	if err != nil || !store.MayStartReconciliation(cur, now, retryAfter) {
		return false, err
	}
	b, err := json.Marshal(store.Reconciliation{Date: date, Status: store.ReconcileRunning, RanAt: now, Owner: owner})
	if err != nil {
		return false, err
	}
	ok, err := hcasScript.Run(ctx, s.c, []string{s.reconcileKey()}, date, raw, b).Int()
	if err != nil {
		return false, mapErr(err)
	}
	return ok == 1, nil
}

// PutReconciliation implements store.Store.
func (s *Store) PutReconciliation(ctx context.Context, r store.Reconciliation) error {
	if err := store.CheckReconcileDate(r.Date); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return mapErr(s.c.HSet(ctx, s.reconcileKey(), r.Date, b).Err())
}

// GetReconciliation implements store.Store.
func (s *Store) GetReconciliation(ctx context.Context, date string) (store.Reconciliation, error) {
	if err := store.CheckReconcileDate(date); err != nil {
		return store.Reconciliation{}, err
	}
	r, _, err := s.getReconciliation(ctx, date)
	if err != nil {
		return store.Reconciliation{}, err
	}
	if r == nil {
		return store.Reconciliation{}, fmt.Errorf("reconciliation %s: %w", date, store.ErrNotFound)
	}
	return *r, nil
}

// ListReconciliations implements store.Store.
func (s *Store) ListReconciliations(ctx context.Context, limit int) ([]store.Reconciliation, error) {
	if limit < 1 || limit > store.MaxReconciliations {
		return nil, fmt.Errorf("%w: limit %d not in 1..%d", store.ErrInvalid, limit, store.MaxReconciliations)
	}
	h, err := s.c.HGetAll(ctx, s.reconcileKey()).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	dates := make([]string, 0, len(h))
	for d := range h {
		dates = append(dates, d)
	}
	slices.SortFunc(dates, func(a, b string) int { return strings.Compare(b, a) })
	out := make([]store.Reconciliation, 0, min(limit, len(dates)))
	for _, d := range dates[:min(limit, len(dates))] {
		var r store.Reconciliation
		if err := store.DecodeJSON(s.reconcileKey()+" "+d, []byte(h[d]), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
