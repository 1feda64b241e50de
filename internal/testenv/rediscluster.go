package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ClusterNodeTimeout is the cluster-node-timeout of the clusters testenv
// starts: a primary that does not answer for this long is failed over to
// its replica (which then waits up to about a second more before it asks
// for the votes). Short, so failover tests are quick; long enough that a
// busy machine does not fail nodes over by itself.
const ClusterNodeTimeout = 2 * time.Second

// RedisCluster is a Redis Cluster of three primaries, each with one
// replica, on loopback ports, started by testenv (`redis-server
// --cluster-enabled yes` six times, then `redis-cli --cluster create …
// --cluster-replicas 1`).
type RedisCluster struct {
	// URL is the cluster for the store: the first node, the others as
	// `addr=` seeds (cluster mode).
	URL string
	// Nodes are the six servers; which of them are primaries changes with
	// failovers (see Topology).
	Nodes []*Process
}

// RedisClusterURL returns the URL of a Redis Cluster for the tests: the one
// CHARGEFLOW_TEST_REDIS_CLUSTER_URL names, else the package's shared private
// cluster (SharedRedisCluster). Tests sharing it must prefix their keys
// (Namespace).
func RedisClusterURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvRedisClusterURL); u != "" {
		return u
	}
	return SharedRedisCluster(t).URL
}

// SharedRedisCluster returns the private cluster shared by this test
// binary, starting it at the first call. Its nodes must not be killed (use
// NewRedisCluster for that). TestMain stops it (StopShared or Main).
func SharedRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	return sharedStart(t, "redis cluster", &shared.cluster, startCluster)
}

// NewRedisCluster starts a cluster for this test only (a failover test
// kills its nodes); the test's cleanup stops it.
func NewRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	cl := &cleanups{}
	t.Cleanup(cl.run)
	c, err := startCluster(cl)
	if err != nil {
		t.Fatalf("testenv: redis cluster: %v", err)
	}
	return c
}

func startCluster(cl *cleanups) (*RedisCluster, error) {
	bin, err := findBinary("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := findBinary("redis-cli")
	if err != nil {
		return nil, err
	}
	c := &RedisCluster{}
	for i := range 6 {
		p, err := startClusterNode(cl, bin, i)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, p)
	}
	args := []string{"--cluster", "create"}
	for _, p := range c.Nodes {
		args = append(args, p.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitHealthy(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	c.URL = "redis://" + c.Nodes[0].Addr + "?addr=" + c.Nodes[1].Addr + "&addr=" + c.Nodes[2].Addr
	return c, nil
}

// startClusterNode starts one cluster-enabled server on two free ports
// (clients, cluster bus).
func startClusterNode(cl *cleanups, bin string, i int) (*Process, error) {
	dir, err := cl.tempDir(fmt.Sprintf("chargeflow-cluster-%d-", i))
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		bus, err := freePort()
		if err != nil {
			return nil, err
		}
		args := append(redisArgs(bin, port, dir), "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10))
		p := &Process{Name: fmt.Sprintf("redis-cluster-%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", port),
			URL: fmt.Sprintf("redis://127.0.0.1:%d", port), args: args, dir: dir}
		if lastErr = p.launch(); lastErr == nil {
			cl.add(p.Stop)
			return p, nil
		}
	}
	return nil, fmt.Errorf("start cluster node %d: %w", i, lastErr)
}

// ClusterNode is one node as CLUSTER NODES describes it.
type ClusterNode struct {
	ID, Addr  string
	Primary   bool
	PrimaryID string   // a replica's primary
	Failed    bool     // flagged fail (or fail?) by the node asked
	Slots     [][2]int // ranges served (primaries), inclusive
	Process   *Process // the server, when it is one of the cluster's Nodes
}

// Topology returns the cluster's nodes as a running node sees them.
func (c *RedisCluster) Topology(t testing.TB) []ClusterNode {
	t.Helper()
	nodes, err := c.topology(t.Context())
	if err != nil {
		t.Fatalf("testenv: cluster topology: %v", err)
	}
	return nodes
}

func (c *RedisCluster) topology(ctx context.Context) ([]ClusterNode, error) {
	var lastErr error = errors.New("no node running")
	for _, p := range c.Nodes {
		if !p.Running() {
			continue
		}
		nodes, err := c.nodesOf(ctx, p)
		if err == nil {
			return nodes, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// nodesOf parses CLUSTER NODES as p sees it.
func (c *RedisCluster) nodesOf(ctx context.Context, p *Process) ([]ClusterNode, error) {
	text, err := doText(ctx, p.Addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Addr, err)
	}
	var out []ClusterNode
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		n := ClusterNode{ID: f[0], Addr: addr, Primary: slices.Contains(flags, "master"),
			Failed: slices.Contains(flags, "fail") || slices.Contains(flags, "fail?")}
		if f[3] != "-" {
			n.PrimaryID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, found := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := a, error(nil)
			if found {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%s: bad slot range %q", p.Addr, r)
			}
			n.Slots = append(n.Slots, [2]int{a, b})
		}
		for _, q := range c.Nodes {
			if q.Addr == addr {
				n.Process = q
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// PrimaryOf returns the server that serves slot now.
func (c *RedisCluster) PrimaryOf(t testing.TB, slot int) *Process {
	t.Helper()
	for _, n := range c.Topology(t) {
		for _, r := range n.Slots {
			if n.Primary && !n.Failed && r[0] <= slot && slot <= r[1] {
				if n.Process == nil {
					t.Fatalf("testenv: slot %d is served by %s, not one of the cluster's nodes", slot, n.Addr)
				}
				return n.Process
			}
		}
	}
	t.Fatalf("testenv: slot %d is served by no live primary", slot)
	return nil
}

// Primaries returns the servers that are primaries now (serving slots).
func (c *RedisCluster) Primaries(t testing.TB) []*Process {
	t.Helper()
	var out []*Process
	for _, n := range c.Topology(t) {
		if n.Primary && !n.Failed && len(n.Slots) > 0 && n.Process != nil {
			out = append(out, n.Process)
		}
	}
	return out
}

// BusiestPrimary returns the primary owning the slots of the most keys and
// how many of them it owns (a session's keys share its hash tag, so pass one
// key per session).
func (c *RedisCluster) BusiestPrimary(t testing.TB, keys []string) (*Process, int) {
	t.Helper()
	count := map[*Process]int{}
	for _, k := range keys {
		count[c.PrimaryOf(t, KeySlot(k))]++
	}
	var best *Process
	for p, n := range count {
		if best == nil || n > count[best] || (n == count[best] && p.Addr < best.Addr) {
			best = p
		}
	}
	if best == nil {
		t.Fatal("testenv: BusiestPrimary of no keys")
	}
	return best, count[best]
}

// Kill kills a node with SIGKILL (nothing flushed, connections reset).
func (c *RedisCluster) Kill(p *Process) { p.Stop() }

// Restart starts a killed node again on its port; it rejoins the cluster
// from its nodes.conf (as a replica, if its primary role was failed over).
func (c *RedisCluster) Restart(t testing.TB, p *Process) {
	t.Helper()
	if err := p.relaunch(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// WaitHealthy waits until every running node says cluster_state:ok with
// all 16384 slots served, all running nodes agree on the owner of every
// slot and it is running, and every running replica of a running primary
// is in sync. It returns how long it waited.
func (c *RedisCluster) WaitHealthy(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := c.waitHealthy(t.Context(), timeout); err != nil {
		t.Fatalf("testenv: cluster not healthy: %v", err)
	}
	return time.Since(start)
}

func (c *RedisCluster) waitHealthy(ctx context.Context, timeout time.Duration) error {
	return waitUntil(ctx, timeout, c.healthy)
}

func (c *RedisCluster) healthy(ctx context.Context) error {
	var owners []string // slot → owner address, as the first node saw it
	for _, p := range c.Nodes {
		if !p.Running() {
			continue
		}
		info, err := doText(ctx, p.Addr, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: %w", p.Addr, err)
		}
		if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" {
			return fmt.Errorf("%s: cluster_state:%s cluster_slots_ok:%s", p.Addr, infoField(info, "cluster_state"), infoField(info, "cluster_slots_ok"))
		}
		nodes, err := c.nodesOf(ctx, p)
		if err != nil {
			return err
		}
		mine := make([]string, 16384)
		byID := map[string]ClusterNode{}
		for _, n := range nodes {
			byID[n.ID] = n
			if !n.Primary {
				continue
			}
			if len(n.Slots) == 0 && !n.Failed && n.Process != nil && n.Process.Running() {
				// a node that serves nothing and follows nobody: the
				// cluster is being created (replicas not yet assigned)
				return fmt.Errorf("%s: %s is a primary without slots", p.Addr, n.Addr)
			}
			for _, r := range n.Slots {
				for s := r[0]; s <= r[1]; s++ {
					mine[s] = n.Addr
				}
			}
		}
		for s, a := range mine {
			if a == "" {
				return fmt.Errorf("%s: slot %d unassigned", p.Addr, s)
			}
		}
		if owners == nil {
			owners = mine
			for _, a := range slices.Compact(slices.Clone(owners)) {
				if q := c.byAddr(a); q == nil || !q.Running() {
					return fmt.Errorf("%s serves slots but is not running", a)
				}
			}
		} else if !slices.Equal(owners, mine) {
			return fmt.Errorf("%s: its slot map differs from another node's (gossip not settled)", p.Addr)
		}
		// a running replica of a running primary must be in sync
		for _, n := range nodes {
			if n.Addr != p.Addr || n.Primary {
				continue
			}
			if pr, ok := byID[n.PrimaryID]; !ok || pr.Process == nil || !pr.Process.Running() {
				continue
			}
			repl, err := doText(ctx, p.Addr, "INFO", "replication")
			if err != nil {
				return fmt.Errorf("%s: %w", p.Addr, err)
			}
			if infoField(repl, "master_link_status") != "up" || infoField(repl, "master_sync_in_progress") != "0" {
				return fmt.Errorf("replica %s not in sync: link %s", p.Addr, infoField(repl, "master_link_status"))
			}
		}
	}
	if owners == nil {
		return errors.New("no node running")
	}
	return nil
}

func (c *RedisCluster) byAddr(addr string) *Process {
	for _, p := range c.Nodes {
		if p.Addr == addr {
			return p
		}
	}
	return nil
}

// KeySlot is the cluster hash slot of a key: CRC16 (XMODEM) of its hash
// tag — the part between the first '{' and the next '}', when not empty —
// or of the whole key, modulo 16384.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
