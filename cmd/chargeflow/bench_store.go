package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// commitLoop commits transitions one after another to one session, each
// with a history entry, an effect and a feed entry (what a real transition
// writes), as store/storetest.BenchCommit does.
type commitLoop struct {
	st   store.Store
	sess fsm.Session
	i    int
}

func newCommitLoop(ctx context.Context, st store.Store, id string) (*commitLoop, error) {
	return newCommitLoopOn(ctx, st, id, "BENCHCP")
}

// newCommitLoopOn is newCommitLoop with the session on chargerID's connector 1.
func newCommitLoopOn(ctx context.Context, st store.Store, id, chargerID string) (*commitLoop, error) {
	m, err := fsm.New(fsm.DefaultConfig())
	if err != nil {
		return nil, err
	}
	s, _, err := benchSession(m, id, chargerID)
	if err != nil {
		return nil, err
	}
	if err := st.CreateSession(ctx, store.Commit{Session: s}); err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	s.Version = 1
	return &commitLoop{st: st, sess: s}, nil
}

func (c *commitLoop) commit(ctx context.Context) error {
	c.i++
	n := c.sess.Clone()
	n.Seq = int64(c.i)
	n.UpdatedAt = c.sess.UpdatedAt.Add(time.Millisecond)
	err := c.st.Commit(ctx, store.Commit{ExpectedVersion: c.sess.Version, Session: n,
		History: []fsm.HistoryEntry{{At: n.UpdatedAt, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger}},
		Effects: []fsm.Effect{{ID: fmt.Sprintf("bench/%d", c.i), Kind: fsm.EffQueryOrder, Session: n.ID, DueAt: n.UpdatedAt.Add(time.Hour)}},
		Publish: true, ChangeData: []byte(`{"id":"bench"}`)})
	if err != nil {
		return fmt.Errorf("commit %d: %w", c.i, err)
	}
	n.Version = c.sess.Version + 1
	c.sess = n
	return nil
}

// benchStore: transition commits beside the raw operation of the same
// backend: a bbolt Update that puts the same record bytes (fsync included
// on both sides), and a Redis PING on the same client.
func benchStore(ctx context.Context, b *bench) {
	b.emitStoreBolt(ctx)
	b.emitStoreBoltParallel(ctx) // bench_store_parallel.go: group commit
	if b.redisURL == "" {
		b.skip("store.redis.commit", "no --redis (or CHARGEFLOW_REDIS_URL)")
	} else {
		b.emitStoreRedis(ctx)
	}
	b.emitStoreWait(ctx) // bench_wait.go: the durability policy's cost
}

func (b *bench) emitStoreBolt(ctx context.Context) {
	const name = "store.bolt.commit"
	dir, err := os.MkdirTemp("", "chargeflow-bench-")
	if err != nil {
		b.fail(name, err)
		return
	}
	defer os.RemoveAll(dir)
	st, err := boltstore.Open(filepath.Join(dir, "store"), boltstore.Options{Logger: b.log})
	if err != nil {
		b.fail(name, err)
		return
	}
	defer st.Close()
	cl, err := newCommitLoop(ctx, st, "boltbench")
	if err != nil {
		b.fail(name, err)
		return
	}
	record, err := store.MarshalSession(cl.sess)
	if err != nil {
		b.fail(name, err)
		return
	}
	// The raw side: bbolt opened as boltstore opens it, one bucket, one key.
	if err := os.MkdirAll(filepath.Join(dir, "raw"), 0o700); err != nil {
		b.fail(name, err)
		return
	}
	db, err := bolt.Open(filepath.Join(dir, "raw", "raw.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		b.fail(name, err)
		return
	}
	defer db.Close()
	bucket, key := []byte("sessions"), []byte("boltbench")
	f, base, err := alternate(ctx, b.duration,
		func() error { return cl.commit(ctx) },
		func() error {
			return db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists(bucket)
				if err != nil {
					return err
				}
				return bk.Put(key, record)
			})
		})
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "commits/s", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "raw bbolt Update/s (put same bytes)", BaselineOps: base.ops,
		Notes: fmt.Sprintf("one session; record %d bytes + history + effect + feed entry; both fsync", len(record))})
}

func (b *bench) emitStoreRedis(ctx context.Context) {
	const name = "store.redis.commit"
	prefix := b.runID
	st, cl, done, err := b.redisCommitLoop(ctx, b.redisURL, prefix, "redisbench")
	if err != nil {
		b.fail(name, err)
		return
	}
	defer done()
	f, base, err := alternate(ctx, b.duration,
		func() error { return cl.commit(ctx) },
		func() error { return st.Client().Ping(ctx).Err() })
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "commits/s", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "PING/s (same client)", BaselineOps: base.ops,
		Extra: map[string]float64{"pings_per_commit": base.rate() / f.rate()},
		Notes: fmt.Sprintf("one commit costs the time of %.1f PINGs; keys under %s: removed after", base.rate()/f.rate(), prefix)})
}

// redisCommitLoop opens a Redis store under prefix at url and a commit loop
// on it; done closes the store and removes the run's keys.
func (b *bench) redisCommitLoop(ctx context.Context, url, prefix, id string) (*redisstore.Store, *commitLoop, func(), error) {
	st, err := redisstore.New(ctx, url, redisstore.Options{Prefix: prefix, Logger: b.log})
	if err != nil {
		return nil, nil, nil, err
	}
	done := func() {
		if err := deleteRedisPrefix(context.WithoutCancel(ctx), st, prefix); err != nil {
			fmt.Fprintf(b.stderr, "chargeflow bench: could not remove Redis keys %s:*: %v\n", prefix, err)
		}
		st.Close()
	}
	cl, err := newCommitLoop(ctx, st, id)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return st, cl, done, nil
}

// deleteRedisPrefix removes the keys this run created, and only those: every
// key of the store starts with "<prefix>:". Never FLUSH a shared Redis.
func deleteRedisPrefix(ctx context.Context, st *redisstore.Store, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if cc, ok := st.Client().(*redis.ClusterClient); ok {
		// A SCAN sees one node's keys: scan every primary.
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return deletePrefixOn(ctx, node, cc, prefix)
		})
	}
	return deletePrefixOn(ctx, st.Client(), st.Client(), prefix)
}

// deletePrefixOn scans one node (scan) for the run's keys and unlinks them
// through del (the cluster client routes each key to its slot's node).
func deletePrefixOn(ctx context.Context, scan, del redis.Cmdable, prefix string) error {
	var cursor uint64
	for {
		keys, next, err := scan.Scan(ctx, cursor, prefix+":*", 500).Result()
		if err != nil {
			return err
		}
		// One UNLINK per key, pipelined: on a Cluster one batch's keys lie in
		// many slots (the cluster client splits the pipeline by node).
		if _, err := del.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Unlink(ctx, k)
			}
			return nil
		}); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}
