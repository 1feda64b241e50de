package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// CreateSession implements store.Store. On one server the create script
// takes the connector in the same step (commitTake); on a Cluster the
// connector's key is in another slot, so takeConnector claims it first.
func (s *Store) CreateSession(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, true)
	if err != nil {
		return err
	}
	cm, err := s.newCommit("create", c, rec)
	if err != nil {
		return err
	}
	if rec.State.Active() && !s.cluster() {
		cm.claim = rec.ID + "|" + strconv.FormatInt(store.Millis(s.opts.Now()), 10)
		if err := s.apply(ctx, cm); !errors.Is(err, errLegacyClaim) {
			return err
		}
		cm.claim = ""
	}
	var connVal string
	if rec.State.Active() {
		if connVal, err = s.takeConnector(ctx, rec); err != nil {
			return err
		}
	}
	err = s.apply(ctx, cm)
	if err != nil && connVal != "" {
		// release our claim (only if it is still ours)
		if e := casScript.Run(context.WithoutCancel(ctx), s.c, []string{s.connKey(rec.ChargerID, rec.Connector)}, connVal, "").Err(); e != nil {
			s.opts.Logger.Warn("redisstore: release connector claim", "session", rec.ID, "err", e)
		}
	}
	return err
}

// takeConnector claims the connector for rec (see the package doc) and
// returns the value written.
func (s *Store) takeConnector(ctx context.Context, rec fsm.Session) (string, error) {
	key := s.connKey(rec.ChargerID, rec.Connector)
	now := s.opts.Now()
	mine := rec.ID + "|" + strconv.FormatInt(store.Millis(now), 10)
	for range 5 {
		cur, err := s.c.Get(ctx, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return "", mapErr(err)
		}
		if cur != "" {
			id, at, _ := strings.Cut(cur, "|")
			if id == rec.ID {
				return cur, nil // our own earlier attempt
			}
			other, err := s.GetSession(ctx, id)
			switch {
			case err == nil:
				if other.State.Active() && other.ChargerID == rec.ChargerID && other.Connector == rec.Connector {
					return "", fmt.Errorf("charger %s connector %d has session %s: %w", rec.ChargerID, rec.Connector, id, store.ErrConnectorBusy)
				}
			case errors.Is(err, store.ErrNotFound):
				ms, _ := strconv.ParseInt(at, 10, 64)
				if store.FromMillis(ms).Add(s.opts.ConnectorGrace).After(now) {
					return "", fmt.Errorf("charger %s connector %d: session %s being created: %w", rec.ChargerID, rec.Connector, id, store.ErrConnectorBusy)
				}
			default:
				return "", err
			}
		}
		ok, err := casScript.Run(ctx, s.c, []string{key}, cur, mine).Int()
		if err != nil {
			return "", mapErr(err)
		}
		if ok == 1 {
			return mine, nil
		}
	}
	return "", fmt.Errorf("charger %s connector %d: contended: %w", rec.ChargerID, rec.Connector, store.ErrConnectorBusy)
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, false)
	if err != nil {
		return err
	}
	cm, err := s.newCommit("commit", c, rec)
	if err != nil {
		return err
	}
	return s.apply(ctx, cm)
}

func strs(v any) []string {
	xs, _ := v.([]any)
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, id string) (fsm.Session, error) {
	b, err := s.c.HGet(ctx, s.recKey(id), "d").Bytes()
	if errors.Is(err, redis.Nil) {
		return fsm.Session{}, fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	} else if err != nil {
		return fsm.Session{}, fmt.Errorf("session %s: %w", id, mapErr(err))
	}
	return store.DecodeSession(s.recKey(id), b)
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, id string) ([]fsm.HistoryEntry, error) {
	raw, err := s.c.LRange(ctx, s.histKey(id), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", id, mapErr(err))
	}
	if len(raw) == 0 {
		if n, err := s.c.Exists(ctx, s.recKey(id)).Result(); err != nil {
			return nil, mapErr(err)
		} else if n == 0 {
			return nil, fmt.Errorf("session %s: %w", id, store.ErrNotFound)
		}
	}
	out := make([]fsm.HistoryEntry, len(raw))
	for i, r := range raw {
		if err := store.DecodeJSON(fmt.Sprintf("%s[%d]", s.histKey(id), i), []byte(r), &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SessionByOutOrderNo implements store.Store.
func (s *Store) SessionByOutOrderNo(ctx context.Context, no string) (fsm.Session, error) {
	id, err := s.c.Get(ctx, s.oonKey(no)).Result()
	if errors.Is(err, redis.Nil) {
		return fsm.Session{}, fmt.Errorf("out_order_no %s: %w", no, store.ErrNotFound)
	} else if err != nil {
		return fsm.Session{}, mapErr(err)
	}
	sess, err := s.GetSession(ctx, id)
	if err != nil {
		return sess, err
	}
	if sess.OutOrderNo != no { // a stale write-ahead
		return fsm.Session{}, fmt.Errorf("out_order_no %s: %w", no, store.ErrNotFound)
	}
	return sess, nil
}

// ActiveSession implements store.Store.
func (s *Store) ActiveSession(ctx context.Context, chargerID string, connector int) (fsm.Session, error) {
	v, err := s.c.Get(ctx, s.connKey(chargerID, connector)).Result()
	if errors.Is(err, redis.Nil) {
		return fsm.Session{}, fmt.Errorf("active session of %s/%d: %w", chargerID, connector, store.ErrNotFound)
	} else if err != nil {
		return fsm.Session{}, mapErr(err)
	}
	id, _, _ := strings.Cut(v, "|")
	sess, err := s.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!sess.State.Active() || sess.ChargerID != chargerID || sess.Connector != connector)) {
		return fsm.Session{}, fmt.Errorf("active session of %s/%d: %w", chargerID, connector, store.ErrNotFound)
	}
	return sess, err
}

const maxScan = 5000

// ListSessions implements store.Store: the most selective list given is read
// newest first; every hit is checked against its record.
func (s *Store) ListSessions(ctx context.Context, f store.Filter) (store.Page, error) {
	limit, err := f.PageLimit()
	if err != nil {
		return store.Page{}, err
	}
	after, err := store.DecodeCursor(f.Cursor)
	if err != nil {
		return store.Page{}, err
	}
	var page store.Page
	page.NextCursor, err = s.lexPage(ctx, s.listKey(f.Index()), after, limit,
		func(p redis.Pipeliner, k string) *redis.StringCmd {
			return p.HGet(ctx, s.recKey(store.SortKeyID(k)), "d")
		},
		func(k string, b []byte) (bool, error) {
			sess, err := store.DecodeSession(s.recKey(store.SortKeyID(k)), b)
			if err != nil {
				return false, err
			}
			if !f.Matches(sess) || store.SortKey(sess) != k {
				return false, nil
			}
			page.Sessions = append(page.Sessions, sess)
			return true, nil
		})
	if err != nil {
		return store.Page{}, err
	}
	return page, nil
}

// lexPage walks the sorted set key newest first (by member) from after,
// reading each member's record through get, one pipeline per batch, and
// hands every record found to take, which says whether it went on the page.
// It stops when the page holds limit entries, at the end of the set, or
// after maxScan members, and returns the cursor to go on from ("" at the
// end). Every hit is checked against its record by take: an index entry
// may be stale.
func (s *Store) lexPage(ctx context.Context, key, after string, limit int,
	get func(p redis.Pipeliner, member string) *redis.StringCmd, take func(member string, b []byte) (bool, error)) (string, error) {
	last, scanned, taken := after, 0, 0
	for scanned < maxScan {
		max := "+"
		if last != "" {
			max = "(" + last
		}
		batch := int64(min(limit+1, maxScan-scanned))
		keys, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: max, Stop: "-", ByLex: true, Rev: true, Count: batch}).Result()
		if err != nil {
			return "", mapErr(err)
		}
		cmds := make([]*redis.StringCmd, len(keys))
		if len(keys) > 0 {
			_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, k := range keys {
					cmds[i] = get(p, k)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return "", mapErr(err)
			}
		}
		for i, k := range keys {
			if taken == limit {
				return store.EncodeCursor(last), nil
			}
			last = k
			scanned++
			if cmds[i] == nil {
				continue
			}
			b, err := cmds[i].Bytes()
			if errors.Is(err, redis.Nil) {
				continue
			} else if err != nil {
				return "", mapErr(err)
			}
			ok, err := take(k, b)
			if err != nil {
				return "", err
			}
			if ok {
				taken++
			}
		}
		if int64(len(keys)) < batch {
			return "", nil // the end of the list
		}
	}
	return store.EncodeCursor(last), nil
}

// CountByState implements store.Store.
func (s *Store) CountByState(ctx context.Context) (map[fsm.State]int, error) {
	cmds := map[fsm.State]*redis.IntCmd{}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, st := range fsm.States {
			cmds[st] = p.ZCard(ctx, s.listKey("s", string(st)))
		}
		return nil
	})
	if err != nil {
		return nil, mapErr(err)
	}
	out := map[fsm.State]int{}
	for st, c := range cmds {
		out[st] = int(c.Val())
	}
	return out, nil
}
