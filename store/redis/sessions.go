package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// CreateSession implements store.Store.
func (s *Store) CreateSession(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, true)
	if err != nil {
		return err
	}
	var connVal string
	if rec.State.Active() {
		if connVal, err = s.takeConnector(ctx, rec); err != nil {
			return err
		}
	}
	err = s.apply(ctx, "create", c, rec)
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
	return s.apply(ctx, "commit", c, rec)
}

// apply runs the write-ahead, the session script and the follow-up.
func (s *Store) apply(ctx context.Context, mode string, c store.Commit, rec fsm.Session) error {
	data, err := store.MarshalSession(rec)
	if err != nil {
		return err
	}
	args := []any{mode, c.ExpectedVersion, rec.Version, data, len(c.History)}
	for _, h := range c.History {
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		args = append(args, b)
	}
	args = append(args, len(c.Effects))
	due := map[string]float64{} // task → score, for the index
	for _, e := range c.Effects {
		if e.Kind == fsm.EffDisarmTimer {
			args = append(args, "d", e.TimerID)
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		m, score := leasedMeta(c.Lease, e, store.Millis(store.TaskDue(e, rec))) // outbox.go
		args = append(args, "a", e.ID, b, m)
		due[e.ID] = score
	}

	deliveries, err := store.NewDeliveries(rec.ID, rec.Version, c.Webhooks)
	if err != nil {
		return err
	}
	if args, err = appendDeliveries(args, deliveries); err != nil {
		return err
	}
	if err := s.deliveriesAhead(ctx, rec.ID, deliveries); err != nil {
		return err
	}

	// write-ahead of the derived indexes
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id, score := range due {
			// LT: an effect already pending keeps its (earlier) entry
			p.ZAddLT(ctx, s.dueKey(), redis.Z{Score: score, Member: member(rec.ID, id)})
		}
		for _, k := range s.lists(rec) {
			p.ZAdd(ctx, k, redis.Z{Member: store.SortKey(rec)})
		}
		if rec.OutOrderNo != "" {
			p.Set(ctx, s.oonKey(rec.OutOrderNo), rec.ID, 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("session %s: index write-ahead: %w", rec.ID, mapErr(err))
	}

	res, err := commitScript.Run(ctx, s.c, []string{s.recKey(rec.ID), s.histKey(rec.ID), s.tasksKey(rec.ID),
		s.whKey(rec.ID), s.whQueueKey(rec.ID)}, args...).Slice()
	if err != nil {
		return fmt.Errorf("session %s: commit: %w", rec.ID, mapErr(err))
	}
	if len(deliveries) > 0 {
		defer s.deliveriesAfter(context.WithoutCancel(ctx), rec.ID, deliveries, res[0] == "ok")
	}
	switch res[0] {
	case "exists":
		return fmt.Errorf("session %s: %w", rec.ID, store.ErrExists)
	case "notfound":
		return fmt.Errorf("session %s: %w", rec.ID, store.ErrNotFound)
	case "conflict":
		return fmt.Errorf("session %s at version %v, not %d: %w", rec.ID, res[1], c.ExpectedVersion, store.ErrVersionConflict)
	}
	oldJSON, _ := res[1].(string)
	added, removed := strs(res[2]), strs(res[3])
	grantAdded(c.Lease, rec, c.Effects, added) // outbox.go

	// The transition is committed: what follows only tidies derived data, so
	// it runs even if the caller's context ends now.
	ctx = context.WithoutCancel(ctx)
	var old *fsm.Session
	if oldJSON != "" {
		o, err := store.DecodeSession(s.recKey(rec.ID), []byte(oldJSON))
		if err != nil {
			s.opts.Logger.Warn("redisstore: previous record unreadable; its index entries stay (readers skip them)", "session", rec.ID, "err", err)
		} else {
			old = &o
		}
	}
	var stale []string
	if old != nil {
		now := s.lists(rec)
		for _, k := range s.lists(*old) {
			if !slices.Contains(now, k) {
				stale = append(stale, k)
			}
		}
	}
	var change store.Change
	var feedCmd *redis.Cmd
	if c.Publish {
		change = store.Change{Kind: store.ChangeSession, SessionID: rec.ID, Version: rec.Version,
			ChargerID: rec.ChargerID, At: rec.UpdatedAt, Data: c.ChangeData}
	}
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if c.Publish {
			// EVALSHA in a pipeline does not fall back to EVAL: a NOSCRIPT
			// (server restarted) is retried below with Script.Run.
			keys, args := s.feedArgs(change)
			feedCmd = feedScript.EvalSha(ctx, p, keys, args...)
		}
		for _, id := range added {
			p.ZAdd(ctx, s.dueKey(), redis.Z{Score: due[id], Member: member(rec.ID, id)})
		}
		for _, id := range removed {
			p.ZRem(ctx, s.dueKey(), member(rec.ID, id))
		}
		for _, k := range stale {
			p.ZRem(ctx, k, store.SortKey(rec))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		s.opts.Logger.Warn("redisstore: index follow-up", "session", rec.ID, "err", err)
	}
	if len(stale) > 0 {
		s.reverify(ctx, rec.ID, stale)
	}
	if !rec.State.Active() && (old == nil || old.State.Active()) {
		key := s.connKey(rec.ChargerID, rec.Connector)
		if cur, err := s.c.Get(ctx, key).Result(); err == nil && strings.HasPrefix(cur, rec.ID+"|") {
			_ = casScript.Run(ctx, s.c, []string{key}, cur, "").Err()
		}
	}
	if old != nil && old.OutOrderNo != "" && old.OutOrderNo != rec.OutOrderNo {
		_ = casScript.Run(ctx, s.c, []string{s.oonKey(old.OutOrderNo)}, rec.ID, "").Err()
	}
	if feedCmd != nil && feedCmd.Err() != nil && !errors.Is(feedCmd.Err(), redis.Nil) {
		if err := s.publish(ctx, change); err != nil {
			s.opts.Logger.Warn("redisstore: feed append lost", "session", rec.ID, "version", rec.Version, "err", err)
		}
	}
	return nil
}

// reverify re-adds list entries just removed that the current record (a
// later commit's) needs after all.
func (s *Store) reverify(ctx context.Context, id string, removed []string) {
	cur, err := s.GetSession(ctx, id)
	if err != nil {
		return
	}
	need := s.lists(cur)
	for _, k := range removed {
		if slices.Contains(need, k) {
			_ = s.c.ZAdd(ctx, k, redis.Z{Member: store.SortKey(cur)}).Err()
		}
	}
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
