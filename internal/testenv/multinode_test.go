package testenv_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func() error {
		// no server this binary started may outlive the tests
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(os.Getpid())).Output()
		if s := strings.TrimSpace(string(out)); s != "" {
			return fmt.Errorf("servers left running: pids %s", s)
		}
		return nil
	})
}

func nodeClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// The shared cluster is three primaries with a synced replica each, and
// KeySlot agrees with the server's CLUSTER KEYSLOT.
func TestSharedRedisCluster(t *testing.T) {
	c := testenv.SharedRedisCluster(t)
	if again := testenv.SharedRedisCluster(t); again != c {
		t.Fatal("a second call started another cluster")
	}
	nodes := c.Topology(t)
	primaries, replicas := 0, 0
	for _, n := range nodes {
		if n.Process == nil {
			t.Fatalf("node %s is not one of ours", n.Addr)
		}
		if n.Primary {
			primaries++
		} else {
			replicas++
		}
	}
	if primaries != 3 || replicas != 3 || len(c.Primaries(t)) != 3 {
		t.Fatalf("%d primaries, %d replicas: %+v", primaries, replicas, nodes)
	}
	n0 := nodeClient(t, c.Nodes[0].Addr)
	for _, k := range []string{"a", "chargeflow:{s:abc}", "p:{s:abc}:h", "{}x", "x{}{y}", "{user1000}.following", "123456789"} {
		want, err := n0.ClusterKeySlot(t.Context(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := testenv.KeySlot(k); got != int(want) {
			t.Errorf("KeySlot(%q) = %d, server says %d", k, got, want)
		}
	}
	// the URL works with a cluster client
	o, err := redis.ParseClusterURL(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	cc := redis.NewClusterClient(o)
	defer cc.Close()
	ns := testenv.Namespace(t)
	for i := range 20 {
		if err := cc.Set(t.Context(), ns+":"+strconv.Itoa(i), i, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if url := testenv.RedisClusterURL(t); url != c.URL {
		t.Fatalf("RedisClusterURL = %s, want the shared one %s", url, c.URL)
	}
}

// Killing a primary: its replica takes over within a few node timeouts;
// the killed node restarted rejoins as a replica.
func TestRedisClusterFailover(t *testing.T) {
	c := testenv.NewRedisCluster(t)
	old := c.PrimaryOf(t, testenv.KeySlot("{s:victim}"))
	c.Kill(old)
	took := c.WaitHealthy(t, 30*time.Second)
	now := c.PrimaryOf(t, testenv.KeySlot("{s:victim}"))
	if now == old || !now.Running() {
		t.Fatalf("slot still on %s", now.Addr)
	}
	t.Logf("failover in %s (node timeout %s)", took, testenv.ClusterNodeTimeout)
	c.Restart(t, old)
	c.WaitHealthy(t, 30*time.Second)
	for _, p := range c.Primaries(t) {
		if p == old {
			t.Fatal("the restarted node came back as a primary")
		}
	}
}

// The shared Sentinel set-up has one primary and a synced replica; killing
// the primary of a private one promotes its replica.
func TestRedisSentinel(t *testing.T) {
	s := testenv.SharedRedisSentinel(t)
	if p := s.Primary(t); p != s.Servers[0] {
		t.Fatalf("primary %s, want the first server", p.Addr)
	}
	o, err := redis.ParseFailoverURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.SentinelAddrs) != 3 || o.MasterName != s.MasterName {
		t.Fatalf("URL %s parsed as %+v", s.URL, o)
	}
	fc := redis.NewFailoverClient(o)
	defer fc.Close()
	if err := fc.Set(t.Context(), testenv.Namespace(t), 1, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	own := testenv.NewRedisSentinel(t)
	old := own.Primary(t)
	own.Kill(old)
	now, took := own.WaitPrimaryOtherThan(t, old, 30*time.Second)
	t.Logf("failover in %s (down after %s)", took, testenv.SentinelDownAfter)
	own.WaitHealthy(t, 30*time.Second)
	if p := own.Primary(t); p != now {
		t.Fatalf("primary %s, want %s", p.Addr, now.Addr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if role, _ := nodeClient(t, now.Addr).Do(ctx, "ROLE").Slice(); len(role) == 0 || role[0] != "master" {
		t.Fatalf("the promoted server says %v", role)
	}
}
