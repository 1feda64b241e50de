package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// restart kills the service with SIGKILL while its S sessions charge and
// starts it again on the same store and ports. Timed from the kill: the
// new process answering /readyz; its outbox caught up (GET /v1/stats: no
// task due, so every timer and outbox entry the old process left is being
// worked); the first command out — a stop asked right after /readyz for a
// session on a real connection and one on a multiplexed connection, as it
// reaches that charger; and every charger online again.
func (r *scaleRun) restart(ctx context.Context) error {
	var probes []string
	var realProbe, muxProbe string
	for i, s := range r.sessions {
		real := r.fleet.isReal(r.sessionChargers[i])
		switch {
		case real && realProbe == "":
			realProbe = s
			probes = append(probes, s)
		case !real && muxProbe == "":
			muxProbe = s
			probes = append(probes, s)
		}
	}
	r.probeMu.Lock()
	for _, id := range probes {
		r.probes[id] = time.Time{}
	}
	r.probeMu.Unlock()
	_, r.f.inFlight = r.feed.counts()

	conns0 := r.fleet.connects.Load()
	old := r.current()
	killed := time.Now()
	old.kill()
	c := &scaleChild{exe: old.exe, env: old.env, httpURL: old.httpURL, logPath: old.logPath}
	if err := c.start(); err != nil {
		return err
	}
	r.childMu.Lock()
	r.child = c
	r.childMu.Unlock()
	r.f.toExec = time.Since(killed)
	ready, err := c.waitOK(ctx, r.api.hc, "/readyz", 5*time.Minute)
	if err != nil {
		return err
	}
	r.f.toReady = ready.Sub(killed)

	// The first commands out.
	stopped := make(chan error, len(probes))
	for _, id := range probes {
		go func() {
			var err error
			for try := 0; try < 100 && ctx.Err() == nil; try++ {
				if _, err = r.api.call(ctx, http.MethodPost, "/v1/sessions/"+id+"/stop", true, nil, nil, nil); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			stopped <- err
		}()
	}
	// The outbox caught up.
	deadline := time.Now().Add(2*time.Minute + time.Duration(r.o.sessions)*10*time.Millisecond)
	for {
		var st scaleStats
		_, err := r.api.call(ctx, http.MethodGet, "/v1/stats", false, nil, nil, &st)
		if err == nil && st.Outbox.DueNow == 0 {
			r.f.toOutbox = time.Since(killed)
			r.f.outboxPending, r.f.chargingAfter = st.Outbox.Pending, st.Sessions["charging"]+st.Sessions["stopping"]
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the outbox had tasks due %s after the restart (%d due, err %v)", time.Since(killed).Round(time.Second), st.Outbox.DueNow, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range probes {
		if err := <-stopped; err != nil {
			return fmt.Errorf("stop after the restart: %w", err)
		}
	}
	limit := 2*time.Minute + time.Duration(r.o.connections)*20*time.Millisecond
	arrived := func() bool {
		r.probeMu.Lock()
		defer r.probeMu.Unlock()
		for _, t := range r.probes {
			if t.IsZero() {
				return false
			}
		}
		return true
	}
	waitFor(ctx, limit, arrived)
	r.probeMu.Lock()
	for _, id := range probes {
		if at := r.probes[id]; !at.IsZero() {
			d := at.Sub(killed)
			if id == realProbe {
				r.f.toCmdReal = d
			} else {
				r.f.toCmdMux = d
			}
			if r.f.toCmd == 0 || d < r.f.toCmd {
				r.f.toCmd = d
			}
		}
	}
	r.probeMu.Unlock()
	if r.f.toCmd == 0 {
		return fmt.Errorf("no stop reached its charger within %s of the restart", limit)
	}
	// Every charger that was online, online again: on the embedded stack the new broker
	// starts with every charger offline (they reconnect to it).
	if r.o.mqttURL == "" {
		waitFor(ctx, 10*time.Second, func() bool { on, _ := r.feed.counts(); return on < r.f.onlineAtStart })
	}
	if waitFor(ctx, limit, func() bool { on, _ := r.feed.counts(); return on >= r.f.onlineAtStart }) {
		r.f.toAllOnline = time.Since(killed)
	}
	r.f.onlineAfter, _ = r.feed.counts()
	r.f.reconnects = r.fleet.connects.Load() - conns0
	r.f.restartWarn, r.f.restartErrs = c.logCounts()
	return nil
}

// bareStart is the restart's baseline: the same binary and configuration
// on an empty store (its own temp dir or Redis key prefix, its own ports),
// from exec to /healthz answering 200; then it is killed.
func (r *scaleRun) bareStart(ctx context.Context) error {
	env, err := r.config(r.env["CHARGEFLOW_HUIFU_BASE_URL"], "t", filepath.Join(r.dir, "bare"))
	if err != nil {
		return err
	}
	if r.o.redisURL != "" {
		defer r.removeRedisKeys(env["CHARGEFLOW_REDIS_PREFIX"])
	}
	if r.o.mqttURL != "" {
		defer dropPersistentSession(r.b, r.brokerURL, "chargeflow-"+env["CHARGEFLOW_INSTANCE_ID"], r.svcUser, r.svcPass)
	}
	c := &scaleChild{exe: r.o.exe, env: scaleChildEnvironment(env), httpURL: env["CHARGEFLOW_PUBLIC_URL"], logPath: filepath.Join(r.dir, "bare.log")}
	start := time.Now()
	if err := c.start(); err != nil {
		return err
	}
	defer c.kill()
	healthy, err := c.waitOK(ctx, r.api.hc, "/healthz", time.Minute)
	if err != nil {
		return err
	}
	r.f.bareHealthz = healthy.Sub(start)
	if ready, err := c.waitOK(ctx, r.api.hc, "/readyz", time.Minute); err == nil {
		r.f.bareReady = ready.Sub(start)
	}
	return nil
}

// brokerPaced is the meter row's baseline: QoS 1 messages, one every
// 20 ms for d (50 to 1000 of them), from one client of the service's
// broker to another, each timed from Publish to arrival — the broker's own
// publish→receive under the same load, on a topic no charger reads.
func (r *scaleRun) brokerPaced(ctx context.Context, d time.Duration) ([]time.Duration, error) {
	const every = 20 * time.Millisecond
	n := min(max(int(d/every), 50), 1000)
	return brokerPubRecv(ctx, r.topics, r.brokerURL, r.b.runID+"-scale-lat", r.svcUser, r.svcPass, n, every)
}

// storeBytes is what the store holds: Redis's used_memory (summed over a
// Cluster's primaries), or the size of the embedded store's file.
func (r *scaleRun) storeBytes(ctx context.Context) float64 {
	if r.o.redisURL == "" {
		return boltFileSize(r.env["CHARGEFLOW_DATA_DIR"])
	}
	c, err := redisstore.NewClient(r.o.redisURL, false)
	if err != nil {
		return 0
	}
	defer c.Close()
	used := func(info string) float64 {
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				return f
			}
		}
		return 0
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var sum float64
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			info, err := node.Info(ctx, "memory").Result()
			mu.Lock()
			sum += used(info)
			mu.Unlock()
			return err
		})
		return sum
	}
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	return used(info)
}

// removeRedisKeys removes exactly the keys <prefix>:* of a service of this run.
func (r *scaleRun) removeRedisKeys(prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := redisstore.New(ctx, r.o.redisURL, redisstore.Options{Prefix: prefix, Logger: r.b.log})
	if err == nil {
		err = deleteRedisPrefix(ctx, st, prefix)
		st.Close()
	}
	if err != nil {
		fmt.Fprintf(r.b.stderr, "chargeflow bench: could not remove Redis keys %s:*: %v\n", prefix, err)
	}
}
