package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/chargeflow/chargeflow/store"
)

// PutIdempotency implements store.Store.
func (s *Store) PutIdempotency(ctx context.Context, key, requestHash string, ttl time.Duration) (store.IdemRecord, bool, error) {
	if key == "" || ttl <= 0 {
		return store.IdemRecord{}, false, fmt.Errorf("%w: idempotency needs a key and a ttl", store.ErrInvalid)
	}
	now := s.opts.Now()
	exp := store.Millis(now.Add(ttl))
	res, err := idemPutScript.Run(ctx, s.c, []string{s.idemKey(key)}, store.Millis(now), exp, requestHash, max(ttl.Milliseconds(), 1)).Slice()
	if err != nil {
		return store.IdemRecord{}, false, mapErr(err)
	}
	if n, _ := res[0].(int64); n == 1 {
		return store.IdemRecord{RequestHash: requestHash, ExpiresAt: store.FromMillis(exp)}, true, nil
	}
	str := func(i int) string { v, _ := res[i].(string); return v }
	status, _ := strconv.Atoi(str(2))
	e, _ := strconv.ParseInt(str(5), 10, 64)
	rec := store.IdemRecord{RequestHash: str(1), Status: status, SessionID: str(4), ExpiresAt: store.FromMillis(e)}
	if b := str(3); b != "" {
		rec.Body = []byte(b)
	}
	return rec, false, nil
}

// SaveIdempotentResponse implements store.Store.
func (s *Store) SaveIdempotentResponse(ctx context.Context, key string, rec store.IdemRecord) error {
	r, err := idemSaveScript.Run(ctx, s.c, []string{s.idemKey(key)}, store.Millis(s.opts.Now()), rec.RequestHash,
		rec.Status, rec.Body, rec.SessionID).Text()
	if err != nil {
		return mapErr(err)
	}
	switch r {
	case "notfound":
		return fmt.Errorf("idempotency key %s: %w", key, store.ErrNotFound)
	case "conflict":
		return fmt.Errorf("idempotency key %s: other request: %w", key, store.ErrConflict)
	}
	return nil
}

// DeleteIdempotency implements store.Store.
func (s *Store) DeleteIdempotency(ctx context.Context, key string) error {
	return mapErr(s.c.Del(ctx, s.idemKey(key)).Err())
}

// MarkProcessed implements store.Store.
func (s *Store) MarkProcessed(ctx context.Context, scope, key string, ttl time.Duration) (bool, error) {
	if key == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: processed mark needs a key and a ttl", store.ErrInvalid)
	}
	now := store.Millis(s.opts.Now())
	n, err := markScript.Run(ctx, s.c, []string{s.doneKey(scope, key)}, now, now+ttl.Milliseconds(), max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, mapErr(err)
	}
	return n == 1, nil
}
