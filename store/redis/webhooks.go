package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/store"
)

// The webhook deliveries (store.Webhooks).
//
// A session's deliveries live in its slot, written by the commit script with
// the transition:
//
//	P:{s:<id>}:w    hash  d:<seq> delivery JSON, n:<seq> next attempt ms,
//	                      l / lu the queue's lease token and its end (ms)
//	P:{s:<id>}:wq   zset  the pending seqs (score = seq): the queue; its
//	                      first member is the head
//
// The derived indexes live in other slots:
//
//	P:{wdue}        zset  member session id, score = when its queue next
//	                      needs a look (the head's next attempt, or the lease's end)
//	P:{wdue}:c      hash  session → stamp of the last touch (P:{wdue}:n counts them)
//	P:{wdue}:g      hash  session → the stamp its queue was first found empty at
//	P:wh:log, P:wh:pend, P:wh:fail   zsets of LogKeys (score 0, read BYLEX
//	                REV): every delivery, the pending ones, the given-up ones
//
// The due index follows the outbox's rules: a commit touches its session's
// entry (only ever earlier) before its script and again after it, so a crash
// between the two leaves an early entry, never a missing one. A claim reads
// the entry's stamp before it asks the session's slot, and only moves the
// entry later (or removes it) if no touch came in between; otherwise it only
// moves it earlier; a settle touches the entry too. An entry whose queue is found empty is removed only when
// it is found empty a second time GoneGrace later with no touch in between:
// a commit whose write-ahead came before that claim has landed by then. The
// list indexes are written ahead and verified against the record by readers.

func (s *Store) whKey(id string) string      { return s.p + ":{s:" + id + "}:w" }
func (s *Store) whQueueKey(id string) string { return s.p + ":{s:" + id + "}:wq" }
func (s *Store) whDueKey() string            { return s.p + ":{wdue}" }
func (s *Store) whStampKey() string          { return s.p + ":{wdue}:c" }
func (s *Store) whEmptyKey() string          { return s.p + ":{wdue}:g" }
func (s *Store) whCounterKey() string        { return s.p + ":{wdue}:n" }
func (s *Store) whLogKey() string            { return s.p + ":wh:log" }
func (s *Store) whPendKey() string           { return s.p + ":wh:pend" }
func (s *Store) whFailKey() string           { return s.p + ":wh:fail" }

// wclaimScript: KEYS w, wq. ARGV now, token, lease until. Returns
// {"claimed", deliveryJSON} | {"later", ms} | {"empty"}.
var wclaimScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local lu = redis.call('HGET', KEYS[1], 'lu')
if lu and tonumber(lu) > now then return {'later', lu} end
local h = redis.call('ZRANGE', KEYS[2], 0, 0)
if #h == 0 then return {'empty'} end
local n = redis.call('HGET', KEYS[1], 'n:'..h[1]) or '0'
if tonumber(n) > now then return {'later', n} end
redis.call('HSET', KEYS[1], 'l', ARGV[2], 'lu', ARGV[3])
return {'claimed', redis.call('HGET', KEYS[1], 'd:'..h[1]) or ''}
`)

// wsettleScript: KEYS w, wq. ARGV token, seq, delivery JSON, still pending
// ("1"|"0"), next ms. Returns {"ok", next ms of the new head or ""} | {"lost"}.
var wsettleScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'l') ~= ARGV[1] then return {'lost'} end
redis.call('HDEL', KEYS[1], 'l', 'lu')
redis.call('HSET', KEYS[1], 'd:'..ARGV[2], ARGV[3], 'n:'..ARGV[2], ARGV[5])
if ARGV[4] == '0' then redis.call('ZREM', KEYS[2], ARGV[2]) end
local h = redis.call('ZRANGE', KEYS[2], 0, 0)
if #h == 0 then return {'ok', ''} end
return {'ok', redis.call('HGET', KEYS[1], 'n:'..h[1]) or '0'}
`)

// wretryScript: KEYS w, wq. ARGV seq, delivery JSON, now ms. Returns
// "ok" | "notfound".
var wretryScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'd:'..ARGV[1]) == 0 then return 'notfound' end
redis.call('HSET', KEYS[1], 'd:'..ARGV[1], ARGV[2], 'n:'..ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
return 'ok'
`)

// wtrimScript: KEYS w. ARGV seq, the delivery JSON read. Deletes the
// delivery if it is still exactly that record. Returns 1 when deleted.
var wtrimScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'd:'..ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'd:'..ARGV[1], 'n:'..ARGV[1])
return 1
`)

// wreleaseScript: KEYS w, wq. ARGV lease token. Clears the queue's lease if
// it is still that one. Returns the head's next ms, "" when the queue is
// empty, or false when the lease is another.
var wreleaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'l') ~= ARGV[1] then return false end
redis.call('HDEL', KEYS[1], 'l', 'lu')
local h = redis.call('ZRANGE', KEYS[2], 0, 0)
if #h == 0 then return '' end
return redis.call('HGET', KEYS[1], 'n:'..h[1]) or '0'
`)

// wdueTouchScript: KEYS due, stamps, counter. ARGV session, ms. Stamps the
// session's entry and moves it to ms unless it is earlier already.
var wdueTouchScript = redis.NewScript(`
local v = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], ARGV[1], v)
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) > tonumber(ARGV[2]) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
return v
`)

// wdueSetScript: KEYS due, stamps, empties. ARGV session, stamp read before
// the slot was asked ("" for none), mode ("set"|"empty"), ms, grace ms.
// When the stamp changed meanwhile, "set" only moves the entry earlier and
// "empty" does nothing. Else "set" moves it to ms; "empty" removes it if it
// was found empty at this stamp before, else notes that and looks again at
// grace ms.
var wdueSetScript = redis.NewScript(`
local c = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if c ~= ARGV[2] then
  if ARGV[3] == 'set' then
    local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
    if not cur or tonumber(cur) > tonumber(ARGV[4]) then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) end
  end
  return 0
end
if ARGV[3] == 'set' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
if redis.call('HGET', KEYS[3], ARGV[1]) == c then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 2
end
redis.call('HSET', KEYS[3], ARGV[1], c)
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
return 1
`)

func (s *Store) touchDue(ctx context.Context, session string, ms int64) error {
	err := wdueTouchScript.Run(ctx, s.c, []string{s.whDueKey(), s.whStampKey(), s.whCounterKey()}, session, ms).Err()
	return mapErr(err)
}

func (s *Store) setDue(ctx context.Context, session, stamp, mode string, ms, nowMs int64) {
	err := wdueSetScript.Run(ctx, s.c, []string{s.whDueKey(), s.whStampKey(), s.whEmptyKey()},
		session, stamp, mode, ms, nowMs+s.opts.GoneGrace.Milliseconds()).Err()
	if err != nil {
		// the entry stays where it was: an early look, or the lease's end
		s.opts.Logger.Warn("redisstore: webhook due index", "session", session, "err", err)
	}
}

// appendDeliveries adds a commit's deliveries to the commit script's ARGV
// (commitHead): seq, delivery JSON, next ms, log key.
func appendDeliveries(args []any, ds []store.Delivery) ([]any, error) {
	args = append(args, len(ds))
	for _, d := range ds {
		b, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		args = append(args, d.Seq, b, store.Millis(d.NextAt), d.LogKey())
	}
	return args, nil
}

// deliveriesAhead is the write-ahead of a commit's deliveries.
func (s *Store) deliveriesAhead(ctx context.Context, session string, ds []store.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range ds {
			p.ZAdd(ctx, s.whLogKey(), redis.Z{Member: d.LogKey()})
			p.ZAdd(ctx, s.whPendKey(), redis.Z{Member: d.LogKey()})
		}
		return nil
	})
	if err == nil {
		err = s.touchDue(ctx, session, store.Millis(ds[0].NextAt))
	}
	if err != nil {
		return fmt.Errorf("session %s: webhook index write-ahead: %w", session, mapErr(err))
	}
	return nil
}

// deliveriesAfter is the follow-up of a commit's deliveries: touch the due
// entry again when the commit went through; when it did not, drop the list
// entries written ahead that no delivery stands behind.
func (s *Store) deliveriesAfter(ctx context.Context, session string, ds []store.Delivery, committed bool) {
	if committed {
		if err := s.touchDue(ctx, session, store.Millis(ds[0].NextAt)); err != nil {
			s.opts.Logger.Warn("redisstore: webhook due follow-up", "session", session, "err", err)
		}
		return
	}
	for _, d := range ds {
		cur, err := s.loadDelivery(ctx, session, d.Seq)
		if errors.Is(err, store.ErrNotFound) || (err == nil && cur.LogKey() != d.LogKey()) {
			_ = s.c.ZRem(ctx, s.whLogKey(), d.LogKey()).Err()
			_ = s.c.ZRem(ctx, s.whPendKey(), d.LogKey()).Err()
		}
	}
}

func (s *Store) loadDelivery(ctx context.Context, session string, seq int64) (store.Delivery, error) {
	b, err := s.c.HGet(ctx, s.whKey(session), "d:"+strconv.FormatInt(seq, 10)).Bytes()
	if errors.Is(err, redis.Nil) {
		return store.Delivery{}, fmt.Errorf("delivery %s/%d: %w", session, seq, store.ErrNotFound)
	} else if err != nil {
		return store.Delivery{}, mapErr(err)
	}
	var d store.Delivery
	err = store.DecodeJSON(fmt.Sprintf("%s d:%d", s.whKey(session), seq), b, &d)
	return d, err
}

// ClaimDeliveries implements store.Store. It looks at up to 2*max due
// entries per call.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]store.Delivery, error) {
	if max <= 0 || lease <= 0 || owner == "" {
		return nil, fmt.Errorf("%w: claim needs an owner, a lease and max > 0", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	sessions, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.whDueKey(), Start: "-inf", Stop: strconv.FormatInt(nowMs, 10),
		ByScore: true, Count: int64(2 * max)}).Result()
	if err != nil || len(sessions) == 0 {
		return nil, mapErr(err)
	}
	stamps, err := s.c.HMGet(ctx, s.whStampKey(), sessions...).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	untilMs := store.Millis(now.Add(lease))
	var out []store.Delivery
	for i, sess := range sessions {
		if len(out) == max {
			break
		}
		stamp, _ := stamps[i].(string)
		token := store.LeaseToken(owner, randomBytes())
		res, err := wclaimScript.Run(ctx, s.c, []string{s.whKey(sess), s.whQueueKey(sess)}, nowMs, token, untilMs).Slice()
		if err != nil {
			return out, mapErr(err) // a lease taken so far comes back after the lease
		}
		switch res[0] {
		case "claimed":
			raw, _ := res[1].(string)
			var d store.Delivery
			if err := store.DecodeJSON(s.whKey(sess)+" head", []byte(raw), &d); err != nil {
				return out, err
			}
			d.Lease, d.LeaseUntil = token, store.FromMillis(untilMs)
			s.setDue(ctx, sess, stamp, "set", untilMs, nowMs)
			out = append(out, d)
		case "later":
			nx, _ := res[1].(string)
			ms, _ := strconv.ParseInt(nx, 10, 64)
			s.setDue(ctx, sess, stamp, "set", ms, nowMs)
		case "empty":
			s.setDue(ctx, sess, stamp, "empty", 0, nowMs)
		}
	}
	return out, nil
}

// SettleDelivery implements store.Store.
func (s *Store) SettleDelivery(ctx context.Context, d store.Delivery, o store.DeliveryOutcome) error {
	if !o.Status.Valid() {
		return fmt.Errorf("%w: delivery outcome %q", store.ErrInvalid, o.Status)
	}
	n := d.Settled(o)
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	pending := "0"
	if n.Status == store.DeliveryPending {
		pending = "1"
	}
	res, err := wsettleScript.Run(ctx, s.c, []string{s.whKey(d.SessionID), s.whQueueKey(d.SessionID)},
		d.Lease, d.Seq, b, pending, store.Millis(n.NextAt)).Slice()
	if err != nil {
		return fmt.Errorf("delivery %s: %w", d.ID, mapErr(err))
	}
	if res[0] != "ok" {
		return fmt.Errorf("delivery %s: %w", d.ID, store.ErrLeaseLost)
	}
	// The queue is free again: touch its entry (a claim that saw the lease
	// must not move it to the lease's end after this), at most at the new
	// head's time; a later head time is set by the next claim's look.
	ctx = context.WithoutCancel(ctx)
	ms := store.Millis(o.At)
	if next, _ := res[1].(string); next != "" {
		if n, _ := strconv.ParseInt(next, 10, 64); n < ms {
			ms = n
		}
	}
	if err := s.touchDue(ctx, d.SessionID, ms); err != nil {
		s.opts.Logger.Warn("redisstore: webhook due follow-up", "session", d.SessionID, "err", err)
	}
	if n.Status != store.DeliveryPending {
		_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, s.whPendKey(), n.LogKey())
			if n.Status == store.DeliveryFailed {
				p.ZAdd(ctx, s.whFailKey(), redis.Z{Member: n.LogKey()})
			}
			return nil
		})
		if err != nil {
			s.opts.Logger.Warn("redisstore: webhook list follow-up", "delivery", d.ID, "err", err)
		}
	}
	return nil
}

// GetDelivery implements store.Store.
func (s *Store) GetDelivery(ctx context.Context, id string) (store.Delivery, error) {
	sess, seq, err := store.ParseEventID(id)
	if err != nil {
		return store.Delivery{}, err
	}
	d, err := s.loadDelivery(ctx, sess, seq)
	if err == nil && d.ID != id { // another event at that place (a commit made again)
		return store.Delivery{}, fmt.Errorf("delivery %s: %w", id, store.ErrNotFound)
	}
	return d, err
}

// RetryDelivery implements store.Store.
func (s *Store) RetryDelivery(ctx context.Context, id string, now time.Time) (store.Delivery, error) {
	sess, seq, err := store.ParseEventID(id)
	if err != nil {
		return store.Delivery{}, err
	}
	cur, err := s.GetDelivery(ctx, id)
	if err != nil {
		return cur, err
	}
	d := cur.Requeued(now)
	b, err := json.Marshal(d)
	if err != nil {
		return d, err
	}
	nowMs := store.Millis(d.NextAt)
	if err := s.c.ZAdd(ctx, s.whPendKey(), redis.Z{Member: d.LogKey()}).Err(); err != nil {
		return d, mapErr(err)
	}
	if err := s.touchDue(ctx, sess, nowMs); err != nil {
		return d, err
	}
	r, err := wretryScript.Run(ctx, s.c, []string{s.whKey(sess), s.whQueueKey(sess)}, seq, b, nowMs).Text()
	if err != nil {
		return d, mapErr(err)
	}
	if r != "ok" {
		return d, fmt.Errorf("delivery %s: %w", id, store.ErrNotFound)
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.touchDue(ctx, sess, nowMs); err != nil {
		s.opts.Logger.Warn("redisstore: webhook due follow-up", "session", sess, "err", err)
	}
	if err := s.c.ZRem(ctx, s.whFailKey(), d.LogKey()).Err(); err != nil {
		s.opts.Logger.Warn("redisstore: webhook list follow-up", "delivery", id, "err", err)
	}
	return d, nil
}

// ListDeliveries implements store.Store: a session's own deliveries from its
// hash; otherwise the list index of the status (the log for all and for
// delivered) newest first, every hit checked against its record.
func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) (store.DeliveryPage, error) {
	limit, err := f.Check()
	if err != nil {
		return store.DeliveryPage{}, err
	}
	after, err := store.DecodeCursor(f.Cursor)
	if err != nil {
		return store.DeliveryPage{}, err
	}
	var page store.DeliveryPage
	if f.SessionID != "" {
		h, err := s.c.HGetAll(ctx, s.whKey(f.SessionID)).Result()
		if err != nil {
			return page, mapErr(err)
		}
		var all []store.Delivery
		for k, v := range h {
			if !strings.HasPrefix(k, "d:") {
				continue
			}
			var d store.Delivery
			if err := store.DecodeJSON(s.whKey(f.SessionID)+" "+k, []byte(v), &d); err != nil {
				return page, err
			}
			all = append(all, d)
		}
		return page, store.PageSessionDeliveries(all, f, limit, after, &page)
	}
	key := s.whLogKey()
	switch f.Status {
	case store.DeliveryPending:
		key = s.whPendKey()
	case store.DeliveryFailed:
		key = s.whFailKey()
	}
	page.NextCursor, err = s.lexPage(ctx, key, after, limit,
		func(p redis.Pipeliner, k string) *redis.StringCmd {
			sess, seq, err := store.ParseEventID(store.LogKeyID(k))
			if err != nil {
				return nil // not a delivery's entry: skipped
			}
			return p.HGet(ctx, s.whKey(sess), "d:"+strconv.FormatInt(seq, 10))
		},
		func(k string, b []byte) (bool, error) {
			var d store.Delivery
			if err := store.DecodeJSON(key+" "+k, b, &d); err != nil {
				return false, err
			}
			if !f.Matches(d) || d.LogKey() != k {
				return false, nil
			}
			page.Deliveries = append(page.Deliveries, d)
			return true, nil
		})
	if err != nil {
		return store.DeliveryPage{}, err
	}
	return page, nil
}

// DeliveryStats implements store.Store from the list indexes.
func (s *Store) DeliveryStats(ctx context.Context) (store.DeliveryStats, error) {
	var pend, fail *redis.IntCmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		pend = p.ZCard(ctx, s.whPendKey())
		fail = p.ZCard(ctx, s.whFailKey())
		return nil
	})
	if err != nil {
		return store.DeliveryStats{}, mapErr(err)
	}
	return store.DeliveryStats{Pending: int(pend.Val()), Failed: int(fail.Val())}, nil
}

// TrimDeliveries implements store.Store: the log's oldest entries (by
// creation, which comes before being done) up to 4*max of them; each
// delivery is deleted in its slot only if it is still the record read
// (wtrimScript), then its list entries.
func (s *Store) TrimDeliveries(ctx context.Context, doneBefore time.Time, max int) (int, error) {
	if max <= 0 {
		return 0, fmt.Errorf("%w: trim needs max > 0", store.ErrInvalid)
	}
	keys, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.whLogKey(), Start: "-", Stop: "(" + store.LogKeyBefore(doneBefore),
		ByLex: true, Count: int64(4 * max)}).Result()
	if err != nil {
		return 0, mapErr(err)
	}
	n := 0
	for _, k := range keys {
		if n == max {
			break
		}
		sess, seq, err := store.ParseEventID(store.LogKeyID(k))
		if err != nil {
			_ = s.c.ZRem(ctx, s.whLogKey(), k).Err() // not ours
			continue
		}
		raw, err := s.c.HGet(ctx, s.whKey(sess), "d:"+strconv.FormatInt(seq, 10)).Result()
		if errors.Is(err, redis.Nil) {
			_ = s.c.ZRem(ctx, s.whLogKey(), k).Err() // a write-ahead whose commit failed
			continue
		} else if err != nil {
			return n, mapErr(err)
		}
		var d store.Delivery
		if err := store.DecodeJSON(s.whKey(sess)+" d:"+strconv.FormatInt(seq, 10), []byte(raw), &d); err != nil {
			return n, err
		}
		if !d.Trimmable(doneBefore) || d.LogKey() != k {
			continue
		}
		ok, err := wtrimScript.Run(ctx, s.c, []string{s.whKey(sess)}, seq, raw).Int()
		if err != nil {
			return n, mapErr(err)
		}
		if ok != 1 {
			continue // changed meanwhile (retried)
		}
		_, err = s.c.Pipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
			p.ZRem(ctx, s.whLogKey(), k)
			p.ZRem(ctx, s.whFailKey(), k)
			p.ZRem(ctx, s.whPendKey(), k)
			return nil
		})
		if err != nil {
			s.opts.Logger.Warn("redisstore: webhook list follow-up", "delivery", d.ID, "err", err)
		}
		n++
	}
	return n, nil
}

// ReleaseDeliveryLeases implements store.Store: a leased queue's due entry
// sits at its lease's end, so only the entries after now are looked at (a
// page at a time); each live lease of ours is cleared in its slot
// (wreleaseScript) and the entry touched back to the head's time. Other
// processes moving entries meanwhile may make it miss one: that claim then
// comes back when its lease runs out, as without this call.
func (s *Store) ReleaseDeliveryLeases(ctx context.Context, ownerPrefix string, now time.Time) (int, error) {
	if ownerPrefix == "" {
		return 0, fmt.Errorf("%w: release leases needs an owner prefix", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	released := 0
	var offset int64
	for {
		sessions, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.whDueKey(), Start: "(" + strconv.FormatInt(nowMs, 10), Stop: "+inf",
			ByScore: true, Offset: offset, Count: releasePage}).Result()
		if err != nil {
			return released, mapErr(err)
		}
		// released entries leave the range (touched back to now or
		// earlier): the next page starts after the ones kept
		offset += int64(len(sessions))
		cmds := make([]*redis.SliceCmd, len(sessions))
		if len(sessions) > 0 {
			if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, sess := range sessions {
					cmds[i] = p.HMGet(ctx, s.whKey(sess), "l", "lu")
				}
				return nil
			}); err != nil {
				return released, mapErr(err)
			}
		}
		for i, sess := range sessions {
			v := cmds[i].Val()
			token, _ := v[0].(string)
			luS, _ := v[1].(string)
			lu, _ := strconv.ParseInt(luS, 10, 64)
			if token == "" || lu <= nowMs || !strings.HasPrefix(store.LeaseOwner(token), ownerPrefix) {
				continue
			}
			next, err := wreleaseScript.Run(ctx, s.c, []string{s.whKey(sess), s.whQueueKey(sess)}, token).Text()
			if errors.Is(err, redis.Nil) {
				continue // claimed again meanwhile
			} else if err != nil {
				return released, mapErr(err)
			}
			ms := nowMs
			if n, _ := strconv.ParseInt(next, 10, 64); next != "" && n < ms {
				ms = n
			}
			if err := s.touchDue(context.WithoutCancel(ctx), sess, ms); err != nil {
				return released, err
			}
			released++
			offset--
		}
		if len(sessions) < releasePage {
			return released, nil
		}
	}
}
