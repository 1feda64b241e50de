package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// emitStoreWait measures the durability policy's cost (docs/operations.md,
// "What survives a lost write"): a commit followed by Durable (a write and
// WAIT 1 on the session's primary) against a plain commit, on a primary
// with one replica. Like the other Redis row it needs --redis: the --redis
// primary when it has a replica connected, else a primary and a replica
// this row starts itself on loopback (redis-server on PATH).
func (b *bench) emitStoreWait(ctx context.Context) {
	const name = "store.redis.commit_wait"
	if b.redisURL == "" {
		b.skip(name, "no --redis (or CHARGEFLOW_REDIS_URL)")
		return
	}
	url, where := "", ""
	ok, err := hasReplica(ctx, b.redisURL)
	if err != nil {
		b.fail(name, fmt.Errorf("redis: %w", err))
		return
	}
	if ok {
		url, where = b.redisURL, "the --redis primary and its replica"
	} else {
		pair, err := startReplicaPair(ctx)
		if errors.Is(err, exec.ErrNotFound) {
			b.skip(name, "no replica behind --redis and no redis-server on PATH to start a pair")
			return
		} else if err != nil {
			b.fail(name, err)
			return
		}
		defer pair.stop()
		url, where = pair.url, "a private primary and replica on loopback"
	}
	prefix := b.runID + "w"
	st, cl, done, err := b.redisCommitLoop(ctx, url, prefix, "waitbench")
	if err != nil {
		b.fail(name, err)
		return
	}
	defer done()
	f, base, err := alternate(ctx, b.duration,
		func() error {
			if err := cl.commit(ctx); err != nil {
				return err
			}
			return st.Durable(ctx, cl.sess.ID)
		},
		func() error { return cl.commit(ctx) })
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "commit+WAIT/s", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "commits/s (same store)", BaselineOps: base.ops,
		Extra: map[string]float64{"wait_ms": 1000/f.rate() - 1000/base.rate()},
		Notes: "one session, WAIT 1 after each commit, on " + where})
}

// hasReplica reports whether the primary behind a single-node URL has a
// replica connected (Sentinel and Cluster URLs answer false: give the
// primary's own address).
func hasReplica(ctx context.Context, url string) (bool, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return false, err
	}
	c := redis.NewClient(o)
	defer c.Close()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return false, err
	}
	if len(role) != 3 || role[0] != "master" {
		return false, nil
	}
	replicas, _ := role[2].([]any)
	return len(replicas) > 0, nil
}

// replicaPair is a primary and its replica run by the bench.
type replicaPair struct {
	url   string
	procs []*exec.Cmd
	dirs  []string
}

func (p *replicaPair) stop() {
	for _, c := range p.procs {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	for _, d := range p.dirs {
		_ = os.RemoveAll(d)
	}
}

// startReplicaPair starts redis-server twice on free loopback ports, the
// second a replica of the first, and waits until the replica is in sync.
func startReplicaPair(ctx context.Context) (*replicaPair, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	p := &replicaPair{}
	var ports [2]int
	for i := range ports {
		if ports[i], err = freeLoopbackPort(); err != nil {
			p.stop()
			return nil, err
		}
		dir, err := os.MkdirTemp("", "chargeflow-bench-redis-")
		if err != nil {
			p.stop()
			return nil, err
		}
		p.dirs = append(p.dirs, dir)
		args := []string{"--port", strconv.Itoa(ports[i]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--protected-mode", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
		if i == 1 {
			args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(ports[0]))
		}
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			p.stop()
			return nil, err
		}
		p.procs = append(p.procs, cmd)
	}
	p.url = fmt.Sprintf("redis://127.0.0.1:%d/0", ports[0])
	replica := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", ports[1])})
	defer replica.Close()
	for deadline := time.Now().Add(15 * time.Second); ; {
		info, _ := replica.Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, errors.New("the bench's replica did not come in sync within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
