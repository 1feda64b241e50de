package redisstore_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// clusterRedis starts a one-node Redis Cluster owning every slot and returns
// its URL in cluster mode. A cluster node refuses a script or MULTI whose keys
// span slots (CROSSSLOT), so the conformance suite passing here proves every
// atomic step touches one slot only.
func clusterRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not installed: %v", err)
	}
	dir := t.TempDir()
	port := testenv.FreePort(t)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf", "--protected-mode", "no")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for c.Ping(ctx).Err() != nil {
		if ctx.Err() != nil {
			t.Fatalf("cluster node not up: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	for {
		info, _ := c.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not ok: %s", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "redis://" + addr + "?cluster=true"
}

func TestConformanceCluster(t *testing.T) {
	url := clusterRedis(t)
	// the node really refuses a script spanning slots
	o, err := redis.ParseClusterURL(strings.Replace(url, "?cluster=true", "", 1))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClusterClient(o)
	defer c.Close()
	err = c.Eval(t.Context(), "return redis.call('GET', KEYS[1]) or redis.call('GET', KEYS[2])", []string{"{a}x", "{b}x"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot script: %v", err)
	}
	storetest.Run(t, opener(url))
}
