package redisstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/store"
)

// The re-index sweep. On Cluster a failover loses writes of ONE primary: a
// session's own keys (one slot) may go back to an earlier commit while the
// global indexes on other primaries keep what later commits wrote. The
// session's outbox then holds tasks (the earlier commit's timers, say) whose
// P:{due} entries a later commit had removed: nothing would ever claim them
// and the session would wait forever. The same holds for its list entries
// and its P:oon key.
//
// So the index is rebuilt from the sessions themselves, a little at a time:
// every ReindexEvery, one Claim call (whichever comes first, on any
// instance) also takes one step of a SCAN over the keys P:{s:*}:t on every
// primary — the outbox hashes, which exist only while a session has tasks
// pending, so what is walked is the live sessions plus the keyspace's other
// keys the SCAN passes over — and, for each outbox found, puts every task's
// entry back into P:{due} at the time the task needs a look (ZADD LT: an
// entry present keeps an earlier score; a missing one is added) and the
// record back into its lists and P:oon. All of it is idempotent and only ever
// adds what the record needs, so instances sweeping at once, or a sweep
// racing a commit, cost a look (an entry for a task just completed is
// dropped as gone), never a lost timer. A step costs one SCAN of
// reindexCount keys per primary and one round trip per outbox found; a full
// pass over a keyspace of K keys takes K/reindexCount steps.

// DefaultReindexEvery is the default pace of the sweep (Options.ReindexEvery).
const DefaultReindexEvery = 5 * time.Second

// reindexCount is the COUNT of one SCAN step.
const reindexCount = 1000

type reindexer struct {
	mu      sync.Mutex // held by the one step running
	next    time.Time
	cursors map[string]uint64 // primary address → SCAN cursor
}

// reindexStep runs one step of the sweep if one is due and none is running.
// Errors are logged: the sweep is repair work, the claim goes on.
func (s *Store) reindexStep(ctx context.Context) {
	r := &s.reindex
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	now := s.opts.Now()
	if now.Before(r.next) {
		return
	}
	r.next = now.Add(s.opts.ReindexEvery)
	if r.cursors == nil {
		r.cursors = map[string]uint64{}
	}
	step := func(ctx context.Context, node *redis.Client) error {
		addr := node.Options().Addr
		next, err := s.reindexNode(ctx, node, r.cursors[addr])
		if err != nil {
			return err
		}
		r.cursors[addr] = next
		return nil
	}
	var err error
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		var mu sync.Mutex // ForEachMaster runs the nodes concurrently
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return step(ctx, node)
		})
	} else if c, ok := s.c.(*redis.Client); ok {
		err = step(ctx, c)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.opts.Logger.Warn("redisstore: re-index sweep step", "err", err)
	}
}

// reindexNode scans one step of node's outbox hashes from cursor, repairs
// their sessions' index entries and returns the next cursor (0: the pass is
// complete, the next step starts again).
func (s *Store) reindexNode(ctx context.Context, node *redis.Client, cursor uint64) (uint64, error) {
	keys, next, err := node.Scan(ctx, cursor, globEscape(s.p)+":{s:*}:t", reindexCount).Result()
	if err != nil || len(keys) == 0 {
		return next, mapErr(err)
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(k, s.p+":{s:"), "}:t"); ok && id != "" && s.tasksKey(id) == k {
			ids = append(ids, id)
		}
	}
	tasks := make([]*redis.MapStringStringCmd, len(ids))
	recs := make([]*redis.StringCmd, len(ids))
	_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			tasks[i] = p.HGetAll(ctx, s.tasksKey(id))
			recs[i] = p.HGet(ctx, s.recKey(id), "d")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return cursor, mapErr(err)
	}
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			for f, m := range tasks[i].Val() {
				tid, ok := strings.CutPrefix(f, "m:")
				if !ok {
					continue
				}
				if at, ok := lookAt(m); ok {
					p.ZAddLT(ctx, s.dueKey(), redis.Z{Score: float64(at), Member: member(id, tid)})
				}
			}
			b, err := recs[i].Bytes()
			if err != nil {
				continue // no record (yet): its entries would point at nothing
			}
			rec, err := store.DecodeSession(s.recKey(id), b)
			if err != nil {
				continue
			}
			for _, k := range s.lists(rec) {
				p.ZAdd(ctx, k, redis.Z{Member: store.SortKey(rec)})
			}
			if rec.OutOrderNo != "" {
				p.Set(ctx, s.oonKey(rec.OutOrderNo), rec.ID, 0)
			}
		}
		return nil
	})
	if err != nil {
		return cursor, mapErr(err)
	}
	return next, nil
}

// lookAt is when a task's entry must be looked at, from its metadata
// "due ms\nlease-until ms\ntries\nlease token": the lease's end while a
// lease runs past the due time, else the due time.
func lookAt(meta string) (int64, bool) {
	parts := strings.SplitN(meta, "\n", 4)
	if len(parts) < 4 {
		return 0, false
	}
	due, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return 0, false
	}
	if lu, err := strconv.ParseInt(parts[1], 10, 64); err == nil && parts[3] != "" && lu > due {
		return lu, true
	}
	return due, true
}

// globEscape quotes the characters SCAN's MATCH treats as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
