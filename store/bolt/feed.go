package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/store"
)

// appendChange adds c to the feed inside tx; waiters are woken after commit.
func (s *Store) appendChange(tx *bolt.Tx, w *writeState, c store.Change) error {
	b := tx.Bucket(bChanges)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.Put(be64(seq), v); err != nil {
		return err
	}
	w.published = true
	return trim(b, seq, s.opts.MaxChanges)
}

func parseChangeID(id string) (uint64, error) {
	if id == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: change id %q", store.ErrInvalid, id)
	}
	return n, nil
}

// ReadChanges implements store.Store.
func (s *Store) ReadChanges(ctx context.Context, afterID string, max int, wait time.Duration) ([]store.Change, error) {
	after, err := parseChangeID(afterID)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, fmt.Errorf("%w: max %d", store.ErrInvalid, max)
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// Take the channel before reading, so a change committed after the
		// read closes the channel we wait on.
		s.mu.Lock()
		changed, closed := s.changed, s.closed
		s.mu.Unlock()
		if closed {
			return nil, store.ErrClosed
		}
		var out []store.Change
		err := s.view(ctx, func(tx *bolt.Tx) error {
			out = nil
			cur := tx.Bucket(bChanges).Cursor()
			for k, v := cur.Seek(be64(after + 1)); k != nil && len(out) < max; k, v = cur.Next() {
				var c store.Change
				seq := binary.BigEndian.Uint64(k)
				if err := store.DecodeJSON("changes/"+strconv.FormatUint(seq, 10), v, &c); err != nil {
					return err
				}
				c.ID = strconv.FormatUint(seq, 10)
				out = append(out, c)
			}
			return nil
		})
		if err != nil || len(out) > 0 || wait <= 0 {
			return out, err
		}
		select {
		case <-changed:
		case <-timeout:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// LatestChangeID implements store.Store.
func (s *Store) LatestChangeID(ctx context.Context) (id string, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bChanges).Cursor().Last(); k != nil {
			id = strconv.FormatUint(binary.BigEndian.Uint64(k), 10)
		}
		return nil
	})
	return id, err
}
