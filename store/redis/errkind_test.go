package redisstore_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

func plain(t *testing.T, addr string, o redis.Options) *redis.Client {
	t.Helper()
	o.Addr = addr
	if o.MaxRetries == 0 {
		o.MaxRetries = -1
	}
	c := redis.NewClient(&o)
	t.Cleanup(func() { c.Close() })
	return c
}

// Every kind from a real server's reply: error replies as Redis sends them
// (a script can return any error line), the real MOVED of a cluster node,
// the real READONLY of a replica, a refused connection, a hung server; the
// same through the store's wrapping.
func TestErrorKind(t *testing.T) {
	ctx := t.Context()
	single := plain(t, testenv.RedisProcess(t).Addr, redis.Options{})
	replyOf := func(line string) error {
		return single.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, line).Err()
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"MOVED reply", replyOf("MOVED 3999 127.0.0.1:6381"), redisstore.KindMoved},
		{"ASK reply", replyOf("ASK 3999 127.0.0.1:6381"), redisstore.KindMoved},
		{"TRYAGAIN", replyOf("TRYAGAIN Multiple keys request during rehashing of slot"), redisstore.KindMoved},
		{"READONLY reply", replyOf("READONLY You can't write against a read only replica."), redisstore.KindReadOnly},
		{"CLUSTERDOWN", replyOf("CLUSTERDOWN The cluster is down"), redisstore.KindClusterDown},
		{"MASTERDOWN", replyOf("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), redisstore.KindClusterDown},
		{"LOADING", replyOf("LOADING Redis is loading the dataset in memory"), redisstore.KindLoading},
		{"NOREPLICAS", replyOf("NOREPLICAS Not enough good replicas to write."), redisstore.KindNoReplicas},
		{"setinfo on 7.0", replyOf("ERR unknown subcommand 'setinfo'. Try CLIENT HELP."), ""},
		{"maint_notifications", replyOf("ERR unknown subcommand 'maint_notifications'. Try CLIENT HELP."), ""},
		{"WRONGTYPE", replyOf("WRONGTYPE Operation against a key holding the wrong kind of value"), redisstore.KindOther},
		{"NOSCRIPT", single.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err(), ""},
		{"nil reply", single.Get(ctx, testenv.Namespace(t)).Err(), ""},
		{"no error", single.Ping(ctx).Err(), ""},
	}

	// a real MOVED: a cluster node asked for a key of another's slot
	cl := testenv.SharedRedisCluster(t)
	key := testenv.Namespace(t)
	owner := cl.PrimaryOf(t, testenv.KeySlot(key))
	for _, p := range cl.Primaries(t) {
		if p != owner {
			cases = append(cases, struct {
				name string
				err  error
				want string
			}{"real MOVED", plain(t, p.Addr, redis.Options{}).Set(ctx, key, 1, time.Minute).Err(), redisstore.KindMoved})
			break
		}
	}
	// a real READONLY: a write to the Sentinel set-up's replica
	sn := testenv.SharedRedisSentinel(t)
	primary := sn.Primary(t)
	for _, d := range sn.Servers {
		if d != primary {
			cases = append(cases, struct {
				name string
				err  error
				want string
			}{"real READONLY", plain(t, d.Addr, redis.Options{}).Set(ctx, key, 1, time.Minute).Err(), redisstore.KindReadOnly})
		}
	}
	// nothing listening
	refused := plain(t, "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)), redis.Options{DialerRetries: 1}).Ping(ctx).Err()
	cases = append(cases, struct {
		name string
		err  error
		want string
	}{"refused", refused, redisstore.KindConnection})
	// a server that accepts and never answers
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	hung := plain(t, ln.Addr().String(), redis.Options{ReadTimeout: 100 * time.Millisecond, Protocol: 2, DisableIdentity: true}).Ping(ctx).Err()
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	deadline := plain(t, single.Options().Addr, redis.Options{ContextTimeoutEnabled: true}).BLPop(dctx, 2*time.Second, testenv.Namespace(t)).Err()
	cctx, cancel2 := context.WithCancel(ctx)
	cancel2()
	closed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	closed.Close()
	cases = append(cases, []struct {
		name string
		err  error
		want string
	}{
		{"read timeout", hung, redisstore.KindTimeout},
		{"deadline", deadline, redisstore.KindTimeout},
		{"cancelled", single.Ping(cctx).Err(), ""},
		{"closed client", closed.Ping(ctx).Err(), ""},
	}...)

	seen := map[string]bool{}
	for _, c := range cases {
		seen[c.want] = true
		if c.want != "" && c.err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if got := redisstore.ErrorKind(c.err); got != c.want {
			t.Errorf("%s: ErrorKind(%v) = %q, want %q", c.name, c.err, got, c.want)
		}
		if c.err == nil {
			continue
		}
		// as the store returns it
		wrapped := fmt.Errorf("session s1: commit: %w: %w", store.ErrUnavailable, c.err)
		if got := redisstore.ErrorKind(wrapped); got != c.want {
			t.Errorf("%s wrapped: ErrorKind = %q, want %q", c.name, got, c.want)
		}
	}
	for _, k := range redisstore.ErrorKinds {
		if !seen[k] {
			t.Errorf("kind %q is not tested", k)
		}
	}
}
