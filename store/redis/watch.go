package redisstore

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// errorHook is a go-redis hook that hands every failed command, and every
// distinct kind of failure of a pipeline, to onErr. It changes nothing.
type errorHook struct {
	onErr func(err error)
}

func (h errorHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h errorHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil {
			h.onErr(err)
		}
		return err
	}
}

func (h errorHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		// one round trip that failed is one error of each kind it showed,
		// however many commands it carried
		var seen [8]string
		n := 0
		report := func(e error) {
			k := ErrorKind(e)
			if k == "" {
				return
			}
			for _, s := range seen[:n] {
				if s == k {
					return
				}
			}
			if n < len(seen) {
				seen[n] = k
				n++
			}
			h.onErr(e)
		}
		if err != nil {
			report(err)
		}
		for _, c := range cmds {
			if e := c.Err(); e != nil && e != err {
				report(e)
			}
		}
		return err
	}
}

// hookNodes adds h where it sees what each server answered: on a Cluster
// client, on every node's client (the cluster client follows MOVED and ASK
// by itself, so only its nodes see them), nodes created later included;
// otherwise on the client itself. existing also hooks the nodes the cluster
// client already has (ones created before this call).
func hookNodes(c redis.UniversalClient, h redis.Hook, existing bool) {
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		c.AddHook(h)
		return
	}
	var hooked sync.Map // *redis.Client → struct{}: each node once
	add := func(n *redis.Client) {
		if _, dup := hooked.LoadOrStore(n, struct{}{}); !dup {
			n.AddHook(h)
		}
	}
	cc.OnNewNode(add)
	if existing {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = cc.ForEachShard(ctx, func(_ context.Context, n *redis.Client) error { add(n); return nil })
	}
}

// followTopology makes a Cluster client reload the slot map as soon as a
// node fails to answer (refused, reset, timed out) or says the cluster is
// down. go-redis reloads it by itself on MOVED and READONLY only, and
// otherwise every 60 s: a primary killed outright sends neither, so without
// this every command for its slots kept going to the dead address for up
// to a minute after its replica had taken over (a few seconds). A reload is
// one CLUSTER SLOTS, at most one every 200 ms however many commands fail.
// Other clients are left alone (the Sentinel client asks the sentinels
// again when it reconnects).
func (s *Store) followTopology() {
	cc, ok := s.c.(*redis.ClusterClient)
	if !ok {
		return
	}
	hookNodes(cc, errorHook{onErr: func(err error) {
		switch ErrorKind(err) {
		case KindConnection, KindTimeout, KindClusterDown:
			cc.ReloadState(context.Background())
		}
	}}, true)
}

// ObserveErrors hands the kind (ErrorKind) of every error a Redis server or
// the connection to it gave to fn, as it happens: one per failed command or
// pipeline round trip, per node on Cluster (a MOVED the client follows
// counts, the command then succeeds), after the client's own retries
// elsewhere. fn must be quick and safe for concurrent use. Call it once;
// metrics.WatchStore calls it when it watches this store.
func (s *Store) ObserveErrors(fn func(kind string)) {
	s.observe.Store(&fn) // Durable's own noreplicas
	hookNodes(s.c, errorHook{onErr: func(err error) {
		if k := ErrorKind(err); k != "" {
			fn(k)
		}
	}}, true)
}
