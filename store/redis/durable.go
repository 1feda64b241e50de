package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/store"
)

// The durability policy (docs/operations.md, "What survives a lost write").
// Redis replicates asynchronously: a replica promoted by Sentinel or by the
// cluster may lack the last writes its primary acknowledged. Durable makes
// them safe when it matters: it writes a small key in the session's slot
// (P:{s:<id>}:sync, the time in ms, expiring after a minute) and sends
// `WAIT 1 <timeout>` after it on the SAME connection to the primary that
// holds the session. A primary replicates its writes in one ordered stream,
// so once a replica has acknowledged that write it holds every earlier one:
// the session's record, history and outbox as committed so far (and
// whatever else that primary wrote before). The write is needed because
// WAIT waits for the writes of the connection it is sent on, and a pooled
// connection may have written nothing.
//
// Whom to wait for: one replica, when the primary has one connected (ROLE,
// looked at most once a second per primary, and again after a WAIT that
// failed). A primary without a connected replica has nobody to be replaced
// by with our writes missing (a replica cut off from it for longer than
// its failover settings allow is not promoted), so nothing is waited for —
// a single Redis behaves as before. Operators who want a write refused
// outright when no replica is connected set Redis's own
// min-replicas-to-write; the store then reports NOREPLICAS as unavailable.

// DefaultWaitTimeout bounds a durability WAIT (Options.WaitTimeout).
const DefaultWaitTimeout = 200 * time.Millisecond

// roleEvery is how long a primary's replica count is trusted.
const roleEvery = time.Second

// errNoReplica: no replica acknowledged within the timeout.
var errNoReplica = errors.New("no replica acknowledged the session's writes in time")

func (s *Store) syncKey(id string) string { return s.p + ":{s:" + id + "}:sync" }

// Durable implements store.Store (see the policy above).
func (s *Store) Durable(ctx context.Context, id string) error {
	if s.opts.WaitTimeout < 0 {
		return nil
	}
	if id == "" {
		return fmt.Errorf("%w: durable without a session id", store.ErrInvalid)
	}
	key := s.syncKey(id)
	node, err := s.nodeFor(ctx, key)
	if err != nil {
		return fmt.Errorf("session %s: durable: %w", id, mapErr(err))
	}
	n, err := s.replicas.of(ctx, node)
	if err != nil {
		return fmt.Errorf("session %s: durable: %w", id, mapErr(err))
	}
	if n == 0 {
		return nil
	}
	var wait *redis.IntCmd
	_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, strconv.FormatInt(s.opts.Now().UnixMilli(), 10), time.Minute)
		wait = redis.NewIntCmd(ctx, "wait", 1, s.opts.WaitTimeout.Milliseconds())
		_ = p.Process(ctx, wait)
		return nil
	})
	if err != nil {
		return fmt.Errorf("session %s: durable: %w", id, mapErr(err))
	}
	if wait.Val() < 1 {
		s.replicas.forget(node)
		if f := s.observe.Load(); f != nil {
			(*f)(KindNoReplicas)
		}
		return fmt.Errorf("session %s: %w: %w (WAIT 1 %s)", id, store.ErrUnavailable, errNoReplica, s.opts.WaitTimeout)
	}
	return nil
}

// nodeFor returns the client of the primary that holds key: on Cluster
// that node's own client, so that a pipeline on it is one connection;
// otherwise the client itself (one server, or Sentinel's current primary).
func (s *Store) nodeFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := s.c.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Client:
		return c, nil
	}
	return nil, fmt.Errorf("%w: a %T cannot wait for replicas", store.ErrInvalid, s.c)
}

// replicaCounts remembers how many replicas each primary had connected.
type replicaCounts struct {
	mu sync.Mutex
	by map[*redis.Client]replicaCount
}

type replicaCount struct {
	n  int
	at time.Time
}

func (r *replicaCounts) of(ctx context.Context, node *redis.Client) (int, error) {
	r.mu.Lock()
	c, ok := r.by[node]
	r.mu.Unlock()
	if ok && time.Since(c.at) < roleEvery {
		return c.n, nil
	}
	role, err := node.Do(ctx, "ROLE").Slice()
	if err != nil {
		return 0, err
	}
	n := 0
	if len(role) >= 3 && role[0] == "master" {
		replicas, _ := role[2].([]any)
		n = len(replicas)
	}
	r.mu.Lock()
	if r.by == nil {
		r.by = map[*redis.Client]replicaCount{}
	}
	r.by[node] = replicaCount{n: n, at: time.Now()}
	r.mu.Unlock()
	return n, nil
}

func (r *replicaCounts) forget(node *redis.Client) {
	r.mu.Lock()
	delete(r.by, node)
	r.mu.Unlock()
}
