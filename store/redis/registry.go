package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// PutCharger implements store.Store.
func (s *Store) PutCharger(ctx context.Context, c store.Charger) error {
	if c.ID == "" {
		return fmt.Errorf("%w: charger without id", store.ErrInvalid)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return mapErr(s.c.HSet(ctx, s.chargersKey(), c.ID, b).Err())
}

// GetCharger implements store.Store.
func (s *Store) GetCharger(ctx context.Context, id string) (store.Charger, error) {
	c, _, err := s.getCharger(ctx, id)
	return c, err
}

func (s *Store) getCharger(ctx context.Context, id string) (store.Charger, string, error) {
	var c store.Charger
	raw, err := s.c.HGet(ctx, s.chargersKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return c, "", fmt.Errorf("charger %s: %w", id, store.ErrNotFound)
	} else if err != nil {
		return c, "", mapErr(err)
	}
	err = store.DecodeJSON(s.chargersKey()+" "+id, []byte(raw), &c)
	return c, raw, err
}

// ListChargers implements store.Store.
func (s *Store) ListChargers(ctx context.Context) ([]store.Charger, error) {
	h, err := s.c.HGetAll(ctx, s.chargersKey()).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]store.Charger, 0, len(h))
	for id, raw := range h {
		var c store.Charger
		if err := store.DecodeJSON(s.chargersKey()+" "+id, []byte(raw), &c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b store.Charger) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// UpdateCharger implements store.Store: read, fn, compare-and-set, repeated
// while another writer got in between (fn may run more than once).
func (s *Store) UpdateCharger(ctx context.Context, id string, fn func(c *store.Charger) ([]byte, error)) (store.Charger, error) {
	for attempt := 0; ; attempt++ {
		c, raw, err := s.getCharger(ctx, id)
		if err != nil {
			return c, err
		}
		data, err := fn(&c)
		if err != nil {
			return c, err
		}
		c.ID = id
		b, err := json.Marshal(c)
		if err != nil {
			return c, err
		}
		ok, err := hcasScript.Run(ctx, s.c, []string{s.chargersKey()}, id, raw, b).Int()
		if err != nil {
			return c, mapErr(err)
		}
		if ok == 1 {
			if data != nil {
				if err := s.publish(context.WithoutCancel(ctx), store.Change{Kind: store.ChangeCharger, ChargerID: id, At: c.UpdatedAt, Data: data}); err != nil {
					s.opts.Logger.Warn("redisstore: feed append lost", "charger", id, "err", err)
				}
			}
			return c, nil
		}
		if attempt == 100 {
			return c, fmt.Errorf("charger %s: update contended: %w", id, store.ErrUnavailable)
		}
		if err := ctx.Err(); err != nil {
			return c, err
		}
	}
}

// PutTariff implements store.Store.
func (s *Store) PutTariff(ctx context.Context, t money.Tariff) error {
	if t.ID == "" {
		return fmt.Errorf("%w: tariff without id", store.ErrInvalid)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return mapErr(s.c.HSet(ctx, s.tariffsKey(), t.ID, b).Err())
}

// GetTariff implements store.Store.
func (s *Store) GetTariff(ctx context.Context, id string) (money.Tariff, error) {
	var t money.Tariff
	raw, err := s.c.HGet(ctx, s.tariffsKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return t, fmt.Errorf("tariff %s: %w", id, store.ErrNotFound)
	} else if err != nil {
		return t, mapErr(err)
	}
	err = store.DecodeJSON(s.tariffsKey()+" "+id, []byte(raw), &t)
	return t, err
}

// ListTariffs implements store.Store.
func (s *Store) ListTariffs(ctx context.Context) ([]money.Tariff, error) {
	h, err := s.c.HGetAll(ctx, s.tariffsKey()).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]money.Tariff, 0, len(h))
	for id, raw := range h {
		var t money.Tariff
		if err := store.DecodeJSON(s.tariffsKey()+" "+id, []byte(raw), &t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b money.Tariff) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

var streamID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// AddAnomaly implements store.Store; the ID is the stream entry's.
func (s *Store) AddAnomaly(ctx context.Context, a store.Anomaly) (string, error) {
	a.ID = ""
	b, err := json.Marshal(a)
	if err != nil {
		return "", err
	}
	id, err := s.c.XAdd(ctx, &redis.XAddArgs{Stream: s.anomaliesKey(), MaxLen: s.opts.MaxAnomalies, Approx: true,
		Values: []any{"j", b}}).Result()
	return id, mapErr(err)
}

// ListAnomalies implements store.Store.
func (s *Store) ListAnomalies(ctx context.Context, limit int, cursor string) (store.AnomalyPage, error) {
	var p store.AnomalyPage
	if limit <= 0 || limit > store.MaxPage {
		return p, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	start := "+"
	if cursor != "" {
		if !streamID.MatchString(cursor) {
			return p, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
		}
		start = "(" + cursor
	}
	msgs, err := s.c.XRevRangeN(ctx, s.anomaliesKey(), start, "-", int64(limit+1)).Result()
	if err != nil {
		return p, mapErr(err)
	}
	for i, m := range msgs {
		if i == limit {
			p.NextCursor = p.Anomalies[limit-1].ID
			break
		}
		var a store.Anomaly
		raw, _ := m.Values["j"].(string)
		if err := store.DecodeJSON(s.anomaliesKey()+" "+m.ID, []byte(raw), &a); err != nil {
			return p, err
		}
		a.ID = m.ID
		p.Anomalies = append(p.Anomalies, a)
	}
	return p, nil
}
