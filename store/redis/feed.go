package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/store"
)

func (s *Store) feedArgs(c store.Change) ([]string, []any) {
	return []string{s.feedKey(), s.feedVerKey(c.SessionID)},
		[]any{c.Version, s.opts.MaxChanges, "k", string(c.Kind), "s", c.SessionID, "v", c.Version,
			"c", c.ChargerID, "at", c.At.Format(time.RFC3339Nano), "d", c.Data}
}

func (s *Store) publish(ctx context.Context, c store.Change) error {
	keys, args := s.feedArgs(c)
	err := feedScript.Run(ctx, s.c, keys, args...).Err()
	if errors.Is(err, redis.Nil) {
		return nil // a newer version of the session was already appended
	}
	return mapErr(err)
}

// maxBlock bounds one XREAD BLOCK, so a cancelled context is noticed soon.
const maxBlock = time.Second

// ReadChanges implements store.Store with XREAD and a finite BLOCK, in a
// loop until wait has passed.
func (s *Store) ReadChanges(ctx context.Context, afterID string, max int, wait time.Duration) ([]store.Change, error) {
	if afterID == "" {
		afterID = "0-0"
	}
	if !streamID.MatchString(afterID) {
		return nil, fmt.Errorf("%w: change id %q", store.ErrInvalid, afterID)
	}
	if max <= 0 {
		return nil, fmt.Errorf("%w: max %d", store.ErrInvalid, max)
	}
	deadline := time.Now().Add(wait)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		block := time.Duration(-1) // no BLOCK
		if left := time.Until(deadline); wait > 0 && left > 0 {
			block = min(left, maxBlock)
			if block < time.Millisecond {
				block = time.Millisecond
			}
		}
		res, err := s.c.XRead(ctx, &redis.XReadArgs{Streams: []string{s.feedKey(), afterID}, Count: int64(max), Block: block}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, mapErr(err)
		}
		var out []store.Change
		for _, st := range res {
			for _, m := range st.Messages {
				c, err := s.decodeChange(m)
				if err != nil {
					return nil, err
				}
				out = append(out, c)
			}
		}
		if len(out) > 0 || block < 0 {
			return out, nil
		}
	}
}

func (s *Store) decodeChange(m redis.XMessage) (store.Change, error) {
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	c := store.Change{ID: m.ID, Kind: store.ChangeKind(str("k")), SessionID: str("s"), ChargerID: str("c"), Data: []byte(str("d"))}
	var err error
	if c.Version, err = strconv.ParseInt(str("v"), 10, 64); err != nil {
		return c, store.Corrupt(s.feedKey()+" "+m.ID, err)
	}
	if c.At, err = time.Parse(time.RFC3339Nano, str("at")); err != nil {
		return c, store.Corrupt(s.feedKey()+" "+m.ID, err)
	}
	return c, nil
}

// LatestChangeID implements store.Store.
func (s *Store) LatestChangeID(ctx context.Context) (string, error) {
	msgs, err := s.c.XRevRangeN(ctx, s.feedKey(), "+", "-", 1).Result()
	if err != nil {
		return "", mapErr(err)
	}
	if len(msgs) == 0 {
		return "", nil
	}
	return msgs[0].ID, nil
}
