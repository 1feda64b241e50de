package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/session"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// The pieces the burst and valley scenarios share: the moment each
// simulated charger receives its start, one session up to the user's
// confirmation, the stacks a start scenario runs on, and the broker's own
// publish→receive latency as their baseline.

// startWatch records when each expected session's start command reached its
// charger (sim.Config.OnCommand).
type startWatch struct {
	mu sync.Mutex
	m  map[string]*startArrival // session id →
}

type startArrival struct {
	done chan struct{} // closed when the start arrived
	at   time.Time
}

func newStartWatch() *startWatch { return &startWatch{m: map[string]*startArrival{}} }

// expect registers a session before it is created, so that its start can
// never arrive unseen.
func (w *startWatch) expect(id string) {
	w.mu.Lock()
	w.m[id] = &startArrival{done: make(chan struct{})}
	w.mu.Unlock()
}

func (w *startWatch) onCommand(_ string, cmd charger.Command) {
	if cmd.Type != charger.CmdStart {
		return
	}
	now := time.Now()
	w.mu.Lock()
	if a := w.m[cmd.SessionID]; a != nil && a.at.IsZero() {
		a.at = now
		close(a.done)
	}
	w.mu.Unlock()
}

// wait returns when session id's start arrived, or false when it did not
// by deadline.
func (w *startWatch) wait(ctx context.Context, id string, deadline time.Time) (time.Time, bool) {
	w.mu.Lock()
	a := w.m[id]
	w.mu.Unlock()
	if a == nil {
		return time.Time{}, false
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-a.done:
		return a.at, true
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Time{}, false
}

// openSession plugs connector of c and creates a session on it, up to the
// user's confirmation; it returns the session id and its Pay Score order.
func (r *engineRig) openSession(ctx context.Context, sw *startWatch, c *sim.Charger, connector int, user string) (string, string, error) {
	if err := c.Plug(connector); err != nil {
		return "", "", err
	}
	id := session.NewID(time.Now())
	sw.expect(id)
	s, err := r.eng.Create(ctx, id, session.CreateRequest{ChargerID: c.ID(), Connector: connector, OpenID: user, MaxAmountFen: 5000})
	if err != nil {
		return "", "", fmt.Errorf("create on %s/%d: %w", c.ID(), connector, err)
	}
	return id, s.OutOrderNo, nil
}

// startStacks runs one start scenario on each stack it can: the embedded
// one always, Redis + Mosquitto when --redis and --mqtt are both given.
func startStacks(b *bench, scenario string, run func(row string, o rigOptions)) {
	run(scenario+".embedded", rigOptions{})
	row := scenario + "." + redisKind(b.redisURL) + "+mosquitto"
	switch {
	case b.redisURL != "" && b.mqttURL != "":
		run(row, rigOptions{redisURL: b.redisURL, mqttURL: b.mqttURL})
	case b.redisURL != "" || b.mqttURL != "":
		b.skip(row, "needs both --redis and --mqtt")
	default:
		b.skip(row, "no --redis and --mqtt (or CHARGEFLOW_REDIS_URL and CHARGEFLOW_MQTT_URL)")
	}
}

// benchBudgets bound the scenarios whose length is set by their sessions
// rather than by --duration (runBench's deadline against a hang): per stack
// two minutes for set-up, waits and baseline, plus the time to register and
// connect the fleet and, for valley, three times the time to offer S at R.
var benchBudgets = map[string]func(b *bench) time.Duration{
	"burst": func(b *bench) time.Duration {
		return 2 * (2*time.Minute + time.Duration(b.sessionsOr(burstSessions))*50*time.Millisecond)
	},
	"valley": func(b *bench) time.Duration {
		s := b.sessionsOr(valleySessions)
		return 2 * (2*time.Minute + time.Duration(s/valleyConnectors+1)*50*time.Millisecond + 3*time.Duration(s)*time.Second/time.Duration(b.rate))
	},
}

// redisKind names the Redis deployment a URL gives (store/redis.NewClient):
// "redis", "redis-cluster" or "redis-sentinel".
func redisKind(url string) string {
	if url == "" {
		return "redis"
	}
	c, err := redisstore.NewClient(url, false)
	if err != nil {
		return "redis" // the rig reports the bad URL
	}
	defer c.Close()
	switch c.(type) {
	case *redis.ClusterClient:
		return "redis-cluster"
	case *redis.Client:
		if strings.Contains(url, "master_name=") {
			return "redis-sentinel"
		}
	}
	return "redis"
}

// latencyWindow bounds the baseline's messages published and not received
// yet: below Mosquitto's default max_queued_messages (1000), beyond which a
// QoS 1 message to a slow subscriber is dropped.
const latencyWindow = 500

// brokerLatency is the baseline of the start scenarios: n QoS 1 messages
// published at once (at most latencyWindow outstanding) from one client of
// the rig's broker to another, each timed from its Publish call to its
// arrival at the subscriber.
func (r *engineRig) brokerLatency(ctx context.Context, n int) ([]time.Duration, error) {
	return brokerPubRecv(ctx, r.topics, r.mqttURL, r.b.runID+"-lat", r.mqttUser, r.mqttPass, n, 0)
}

// brokerPubRecv times n QoS 1 messages from one client of the broker at url
// to another (client ids idPrefix+"sub"/"pub"), each from its Publish call
// to its arrival, on a topic of topics no charger reads. every 0 publishes them at
// once, at most latencyWindow outstanding, and waits for all; every > 0
// publishes one per every and returns what arrived within 10 s of the last
// (an error only when none did).
func brokerPubRecv(ctx context.Context, topics charger.Topics, url, idPrefix, user, pass string, n int, every time.Duration) ([]time.Duration, error) {
	topic := topics.Cmd("BENCH-LATENCY") // no charger has this id: only the subscriber reads it
	sent := make([]time.Time, n)
	got := make([]time.Duration, n)
	var received atomic.Int64
	var mu sync.Mutex
	sub, err := benchPaho(url, idPrefix+"sub", user, pass)
	if err != nil {
		return nil, err
	}
	defer sub.Disconnect(100)
	if t := sub.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		if len(m.Payload()) != 8 {
			return
		}
		i := binary.BigEndian.Uint64(m.Payload())
		mu.Lock()
		if i < uint64(n) && got[i] == 0 && !sent[i].IsZero() {
			got[i] = now.Sub(sent[i])
			received.Add(1)
		}
		mu.Unlock()
	}); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("latency subscribe: %v", t.Error())
	}
	pub, err := benchPaho(url, idPrefix+"pub", user, pass)
	if err != nil {
		return nil, err
	}
	defer pub.Disconnect(100)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	last, progress := int64(0), time.Now()
	for i := range n {
		if tick != nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick:
			}
		}
		for tick == nil && int64(i)-received.Load() >= latencyWindow {
			if err := waitProgress(ctx, &received, &last, &progress); err != nil {
				return nil, err
			}
		}
		var p [8]byte
		binary.BigEndian.PutUint64(p[:], uint64(i))
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		pub.Publish(topic, 1, false, p[:])
	}
	if tick != nil {
		waitFor(ctx, 10*time.Second, func() bool { return received.Load() == int64(n) })
	} else {
		for received.Load() < int64(n) {
			if err := waitProgress(ctx, &received, &last, &progress); err != nil {
				return nil, err
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	out := make([]time.Duration, 0, n)
	for _, d := range got {
		if d != 0 {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of %d messages arrived", n)
	}
	return out, nil
}

// waitProgress sleeps a little and fails when nothing arrived for 10 s.
func waitProgress(ctx context.Context, received *atomic.Int64, last *int64, progress *time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if g := received.Load(); g != *last {
		*last, *progress = g, time.Now()
	} else if time.Since(*progress) > 10*time.Second {
		return fmt.Errorf("broker baseline: %d messages received, none for 10s (dropped by the broker?)", g)
	}
	time.Sleep(200 * time.Microsecond)
	return nil
}

// engineStartSent is the engine's own confirm→start sent durations so far
// (its Observer's ConfirmToStart), from index from on.
func (r *engineRig) engineStartSent(from int) []time.Duration {
	r.obs.mu.Lock()
	defer r.obs.mu.Unlock()
	return slices.Clone(r.obs.confirmToStart[min(from, len(r.obs.confirmToStart)):])
}
