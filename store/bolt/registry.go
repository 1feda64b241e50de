package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// PutCharger implements store.Store.
func (s *Store) PutCharger(ctx context.Context, c store.Charger) error {
	if c.ID == "" {
		return fmt.Errorf("%w: charger without id", store.ErrInvalid)
	}
	return s.putJSON(ctx, bChargers, c.ID, c)
}

// putJSON stores v as JSON under key in bucket.
func (s *Store) putJSON(ctx context.Context, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		return tx.Bucket(bucket).Put([]byte(key), b)
	})
}

func getCharger(tx *bolt.Tx, id string) (store.Charger, error) {
	var c store.Charger
	v := tx.Bucket(bChargers).Get([]byte(id))
	if v == nil {
		return c, fmt.Errorf("charger %s: %w", id, store.ErrNotFound)
	}
	err := store.DecodeJSON("chargers/"+id, v, &c)
	return c, err
}

// GetCharger implements store.Store.
func (s *Store) GetCharger(ctx context.Context, id string) (c store.Charger, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		c, err = getCharger(tx, id)
		return err
	})
	return c, err
}

// ListChargers implements store.Store.
func (s *Store) ListChargers(ctx context.Context) (out []store.Charger, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		return tx.Bucket(bChargers).ForEach(func(k, v []byte) error {
			var c store.Charger
			if err := store.DecodeJSON("chargers/"+string(k), v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// UpdateCharger implements store.Store. fn may run more than once: a write
// sharing its transaction may be refused, and the batch runs again (write.go).
func (s *Store) UpdateCharger(ctx context.Context, id string, fn func(c *store.Charger) ([]byte, error)) (out store.Charger, err error) {
	err = s.update(ctx, func(tx *bolt.Tx, w *writeState) error {
		c, err := getCharger(tx, id)
		if err != nil {
			return err
		}
		data, err := fn(&c)
		if err != nil {
			return err
		}
		c.ID = id
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bChargers).Put([]byte(id), b); err != nil {
			return err
		}
		out = c
		if data != nil {
			return s.appendChange(tx, w, store.Change{Kind: store.ChangeCharger, ChargerID: id, At: c.UpdatedAt, Data: data})
		}
		return nil
	})
	return out, err
}

// PutTariff implements store.Store.
func (s *Store) PutTariff(ctx context.Context, t money.Tariff) error {
	if t.ID == "" {
		return fmt.Errorf("%w: tariff without id", store.ErrInvalid)
	}
	return s.putJSON(ctx, bTariffs, t.ID, t)
}

// GetTariff implements store.Store.
func (s *Store) GetTariff(ctx context.Context, id string) (t money.Tariff, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bTariffs).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("tariff %s: %w", id, store.ErrNotFound)
		}
		return store.DecodeJSON("tariffs/"+id, v, &t)
	})
	return t, err
}

// ListTariffs implements store.Store.
func (s *Store) ListTariffs(ctx context.Context) (out []money.Tariff, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		return tx.Bucket(bTariffs).ForEach(func(k, v []byte) error {
			var t money.Tariff
			if err := store.DecodeJSON("tariffs/"+string(k), v, &t); err != nil {
				return err
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// AddAnomaly implements store.Store. IDs are the bucket's sequence, 16
// decimal digits, so they sort as they were added.
func (s *Store) AddAnomaly(ctx context.Context, a store.Anomaly) (id string, err error) {
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bAnomalies)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		a.ID = fmt.Sprintf("%016d", seq)
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		if err := b.Put(be64(seq), v); err != nil {
			return err
		}
		id = a.ID
		return trim(b, seq, s.opts.MaxAnomalies)
	})
	return id, err
}

// trim deletes the entries of a sequence bucket older than the newest max.
func trim(b *bolt.Bucket, last uint64, max int) error {
	if last <= uint64(max) {
		return nil
	}
	limit := last - uint64(max) // delete keys <= limit
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil && binary.BigEndian.Uint64(k) <= limit; k, _ = cur.First() {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ListAnomalies implements store.Store.
func (s *Store) ListAnomalies(ctx context.Context, limit int, cursor string) (p store.AnomalyPage, err error) {
	if limit <= 0 || limit > store.MaxPage {
		return p, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	var before uint64 = 1<<64 - 1
	if cursor != "" {
		if before, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return p, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
		}
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		p = store.AnomalyPage{}
		cur := tx.Bucket(bAnomalies).Cursor()
		k, v := cur.Seek(be64(before))
		if k == nil {
			k, v = cur.Last()
		}
		for ; k != nil; k, v = cur.Prev() {
			if binary.BigEndian.Uint64(k) >= before {
				continue
			}
			if len(p.Anomalies) == limit {
				p.NextCursor = p.Anomalies[limit-1].ID
				return nil
			}
			var a store.Anomaly
			if err := store.DecodeJSON("anomalies/"+strconv.FormatUint(binary.BigEndian.Uint64(k), 10), v, &a); err != nil {
				return err
			}
			p.Anomalies = append(p.Anomalies, a)
		}
		return nil
	})
	return p, err
}
