package redisstore_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// recoverWithin bounds how long commits may fail after a primary is killed:
// far above a failover's few seconds (node timeout 2 s, down-after 1.5 s),
// far below the minute a Cluster client used to keep sending to the dead
// address (its slot map was reloaded every 60 s only).
const recoverWithin = 25 * time.Second

// kinds counts what ObserveErrors reports.
type kinds struct {
	mu sync.Mutex
	n  map[string]int
}

func (k *kinds) add(kind string) { k.mu.Lock(); k.n[kind]++; k.mu.Unlock() }
func (k *kinds) get(kind string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n[kind]
}

func openObserved(t *testing.T, url string) (*redisstore.Store, *kinds) {
	t.Helper()
	s, err := redisstore.New(t.Context(), url, redisstore.Options{Prefix: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	k := &kinds{n: map[string]int{}}
	s.ObserveErrors(k.add)
	return s, k
}

// window is what a failover looked like from a committing client.
type window struct {
	commitsFailed, probesFailed time.Duration // first failure to the next success
	failedCommits               int
	lostVersions                int64 // acknowledged commits a failover lost
}

// watchFailover commits to session id every 20 ms and probes the store
// every 100 ms while kill runs and until commits succeed again, and returns
// the windows of failure. A commit is one compare-and-set on the version the
// loop last had acknowledged; after a failure it reloads the version, so a
// commit the failover lost shows as the version going back.
func watchFailover(t *testing.T, s *redisstore.Store, id string, kill func()) window {
	t.Helper()
	ctx := t.Context()
	sess := storetest.Session(id, "CP-"+id, 1, time.Now().UTC())
	if err := s.CreateSession(ctx, store.Commit{Session: sess}); err != nil {
		t.Fatal(err)
	}
	sess.Version = 1
	var w window
	acked := int64(1)
	stop := make(chan struct{})
	probeDone := make(chan struct{})
	go func() { // the readiness probe, as /readyz runs it
		defer close(probeDone)
		var failedAt time.Time
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			err := s.ProbeCommit(pctx)
			cancel()
			switch {
			case err != nil && failedAt.IsZero():
				failedAt = time.Now()
			case err == nil && !failedAt.IsZero():
				w.probesFailed += time.Since(failedAt)
				failedAt = time.Time{}
			}
		}
	}()
	commit := func() error {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		n := sess.Clone()
		n.UpdatedAt = time.Now().UTC()
		err := s.Commit(cctx, store.Commit{ExpectedVersion: sess.Version, Session: n})
		if err == nil {
			n.Version = sess.Version + 1
			sess = n
			acked = max(acked, n.Version)
		}
		if errors.Is(err, store.ErrVersionConflict) {
			// the version went back (a lost write) or a timed-out
			// commit landed after all: reload
			cur, gerr := s.GetSession(cctx, id)
			if gerr == nil {
				w.lostVersions = max(w.lostVersions, acked-cur.Version)
				sess = cur
			}
		}
		return err
	}
	for range 10 {
		if err := commit(); err != nil {
			t.Fatalf("commit before the failover: %v", err)
		}
	}
	kill()
	killed := time.Now()
	var failedAt time.Time
	for {
		err := commit()
		if err != nil && !errors.Is(err, store.ErrVersionConflict) {
			w.failedCommits++
			if failedAt.IsZero() {
				failedAt = time.Now()
			}
			if !store.IsRetryable(err) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a commit during the failover failed for good: %v", err)
			}
		} else if err == nil && !failedAt.IsZero() {
			w.commitsFailed = time.Since(failedAt)
			break
		}
		if time.Since(killed) > recoverWithin {
			t.Fatalf("commits still failing %s after the kill: %v", recoverWithin, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The probe needs every primary to take a write; a commit only the
	// session's (its index writes on others are repaired after), so on a
	// Cluster commits may come back first: wait for the probe too, then let
	// its loop see it.
	for deadline := time.Now().Add(recoverWithin); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := s.ProbeCommit(pctx)
		cancel()
		if err == nil {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-probeDone
	return w
}

// sessionOn returns a session id whose keys live in a slot p serves.
func sessionOn(t *testing.T, c *testenv.RedisCluster, p *testenv.Process) string {
	t.Helper()
	for i := 0; ; i++ {
		id := "f" + strconv.Itoa(i)
		if c.PrimaryOf(t, testenv.KeySlot("{s:"+id+"}")) == p {
			return id
		}
	}
}

// A Cluster primary killed with kill -9: commits to its slots fail until
// its replica is promoted and the client learns so, then succeed; the
// errors are counted by kind; ProbeCommit fails through the same window.
// Before that, a graceful manual failover shows the client following MOVED.
func TestClusterFailover(t *testing.T) {
	c := testenv.NewRedisCluster(t)
	s, k := openObserved(t, c.URL)
	ctx := t.Context()
	if err := s.ProbeCommit(ctx); err != nil {
		t.Fatalf("probe on a healthy cluster: %v", err)
	}

	// A manual failover moves the primary without losing anything: the
	// client's slot map is stale, the old primary answers MOVED, and the
	// command goes through.
	victim := c.Primaries(t)[0]
	id := sessionOn(t, c, victim)
	if err := s.CreateSession(ctx, store.Commit{Session: storetest.Session(id, "CP-m", 1, storetest.T0)}); err != nil {
		t.Fatal(err)
	}
	var replica *testenv.Process
	for _, n := range c.Topology(t) {
		if n.Process == victim {
			for _, r := range c.Topology(t) {
				if r.PrimaryID == n.ID {
					replica = r.Process
				}
			}
		}
	}
	if replica == nil {
		t.Fatal("no replica of the victim")
	}
	if err := plain(t, replica.Addr, redis.Options{}).Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); c.PrimaryOf(t, testenv.KeySlot("{s:"+id+"}")) != replica; {
		if time.Now().After(deadline) {
			t.Fatalf("the manual failover did not move the slot to %s", replica.Addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.WaitHealthy(t, 30*time.Second)
	if _, err := s.GetSession(ctx, id); err != nil {
		t.Fatalf("read after a manual failover: %v", err)
	}
	if k.get(redisstore.KindMoved) == 0 {
		t.Fatalf("no MOVED counted after a manual failover: %v", k.n)
	}

	// kill -9 the new primary: the old one, its replica now, takes over
	w := watchFailover(t, s, id+"k", func() { c.Kill(replica) })
	t.Logf("cluster kill -9: commits failed for %s (%d failed), the probe for %s, %d acknowledged commits lost; errors %v",
		w.commitsFailed, w.failedCommits, w.probesFailed, w.lostVersions, k.n)
	if w.failedCommits == 0 || w.probesFailed == 0 {
		t.Fatalf("nothing failed: the kill missed the session's primary (%+v)", w)
	}
	if k.get(redisstore.KindConnection)+k.get(redisstore.KindTimeout)+k.get(redisstore.KindClusterDown) == 0 {
		t.Fatalf("no connection, timeout or cluster_down error counted: %v", k.n)
	}
	if err := s.ProbeCommit(ctx); err != nil {
		t.Fatalf("probe after the failover: %v", err)
	}
}

// The Sentinel primary killed with kill -9: the same, through the
// sentinels.
func TestSentinelFailover(t *testing.T) {
	sn := testenv.NewRedisSentinel(t)
	s, k := openObserved(t, sn.URL)
	old := sn.Primary(t)
	w := watchFailover(t, s, "sent", func() { sn.Kill(old) })
	t.Logf("sentinel kill -9: commits failed for %s (%d failed), the probe for %s, %d acknowledged commits lost; errors %v",
		w.commitsFailed, w.failedCommits, w.probesFailed, w.lostVersions, k.n)
	if w.failedCommits == 0 || w.probesFailed == 0 {
		t.Fatalf("nothing failed (%+v)", w)
	}
	if now := sn.Primary(t); now == old {
		t.Fatal("no failover")
	}
	if k.get(redisstore.KindConnection)+k.get(redisstore.KindTimeout) == 0 {
		t.Fatalf("no connection or timeout error counted: %v", k.n)
	}
}

// On a single server the probe is one write: it fails when the server is
// gone, or is a replica (a demoted primary), and succeeds again after.
func TestProbeCommitSingle(t *testing.T) {
	p := testenv.RedisProcess(t)
	s, k := openObserved(t, p.URL+"?max_retries=-1&dial_timeout=200ms")
	ctx := t.Context()
	if err := s.ProbeCommit(ctx); err != nil {
		t.Fatal(err)
	}
	// a write refused by a replica
	other := testenv.RedisProcess(t)
	host, port, _ := strings.Cut(other.Addr, ":")
	if err := s.Client().Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.ProbeCommit(ctx); !store.IsRetryable(err) || k.get(redisstore.KindReadOnly) == 0 {
		t.Fatalf("probe on a replica: %v (errors %v)", err, k.n)
	}
	if err := s.Client().Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.ProbeCommit(ctx); err != nil {
		t.Fatalf("probe after REPLICAOF NO ONE: %v", err)
	}
	p.Stop()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.ProbeCommit(pctx); err == nil || k.get(redisstore.KindConnection)+k.get(redisstore.KindTimeout) == 0 {
		t.Fatalf("probe with the server gone: %v (errors %v)", err, k.n)
	}
	p.Restart()
	if err := s.ProbeCommit(ctx); err != nil {
		t.Fatalf("probe after the restart: %v", err)
	}
}
