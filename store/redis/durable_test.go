package redisstore_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

func commitTo(t *testing.T, s *redisstore.Store, sess fsm.Session, to fsm.State, effects ...fsm.Effect) fsm.Session {
	t.Helper()
	n := sess.Clone()
	n.State, n.UpdatedAt = to, sess.UpdatedAt.Add(time.Second)
	if err := s.Commit(t.Context(), store.Commit{ExpectedVersion: sess.Version, Session: n, Effects: effects}); err != nil {
		t.Fatal(err)
	}
	n.Version = sess.Version + 1
	return n
}

// Durable on a primary with a replica: it answers once the replica holds the
// session's commits; with the replication cut it answers ErrUnavailable
// (kind noreplicas) within the timeout; and what a failover then keeps is
// exactly what Durable had vouched for.
func TestDurableReplica(t *testing.T) {
	rr := testenv.NewReplicatedRedis(t)
	s, kinds := openObserved(t, rr.URL)
	ctx := t.Context()
	sess := storetest.Session("d1", "CP1", 1, storetest.T0)
	if err := s.CreateSession(ctx, store.Commit{Session: sess}); err != nil {
		t.Fatal(err)
	}
	sess.Version = 1
	sess = commitTo(t, s, sess, fsm.UserConfirmed)
	// the session has a webhook delivery queued in its slot: Durable's own
	// write must not touch it
	n := sess.Clone()
	n.UpdatedAt = sess.UpdatedAt.Add(time.Second)
	ev := store.WebhookEvent{ID: store.EventID(sess.ID, sess.Version+1, 0), Type: "session.updated", CreatedAt: n.UpdatedAt, Body: []byte(`{}`)}
	if err := s.Commit(ctx, store.Commit{ExpectedVersion: sess.Version, Session: n, Webhooks: []store.WebhookEvent{ev}}); err != nil {
		t.Fatal(err)
	}
	n.Version = sess.Version + 1
	sess = n
	if err := s.Durable(ctx, sess.ID); err != nil {
		t.Fatalf("durable with the replica in sync: %v", err)
	}
	if page, err := s.ListDeliveries(ctx, store.DeliveryFilter{SessionID: sess.ID}); err != nil || len(page.Deliveries) != 1 {
		t.Fatalf("the webhook delivery after Durable: %+v, %v", page.Deliveries, err)
	}
	rr.Cut()
	commitTo(t, s, sess, fsm.Charging) // acknowledged by the primary only
	err := s.Durable(ctx, sess.ID)
	if !errors.Is(err, store.ErrUnavailable) || redisstore.ErrorKind(err) != redisstore.KindNoReplicas {
		t.Fatalf("durable with the replication cut: %v (kind %q)", err, redisstore.ErrorKind(err))
	}
	if kinds.get(redisstore.KindNoReplicas) == 0 {
		t.Error("the failed WAIT was not reported to ObserveErrors")
	}
	rr.Failover(t)
	var got fsm.Session
	for deadline := time.Now().Add(10 * time.Second); ; {
		if got, err = s.GetSession(ctx, sess.ID); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || got.Version != sess.Version || got.State != fsm.UserConfirmed {
		t.Fatalf("after the failover: %+v, %v; want the last durable version %d (user_confirmed)", got, err, sess.Version)
	}
	if err := s.Durable(ctx, sess.ID); err != nil { // the promoted replica has no replica of its own
		t.Fatalf("durable on a primary without replicas: %v", err)
	}
}

// On a Cluster of three primaries with a replica each, Durable finds the
// session's primary for any slot and waits for its replica.
func TestDurableCluster(t *testing.T) {
	s, err := redisstore.New(t.Context(), testenv.RedisClusterURL(t), redisstore.Options{Prefix: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i := range 12 {
		sess := storetest.Session(fmt.Sprintf("dc%d", i), fmt.Sprintf("CP%d", i), 1, storetest.T0)
		if err := s.CreateSession(t.Context(), store.Commit{Session: sess}); err != nil {
			t.Fatal(err)
		}
		if err := s.Durable(t.Context(), sess.ID); err != nil {
			t.Fatalf("session %s: %v", sess.ID, err)
		}
	}
}

// A lost write on a session's slot can leave its pending tasks out of the
// due index (the later commit that removed their entries survived on
// another primary). The re-index sweep, run by Claim, finds them again.
func TestReindexSweep(t *testing.T) {
	url := testenv.Redis(t)
	clock := storetest.NewClock(storetest.T0)
	prefix := testenv.Namespace(t)
	s, err := redisstore.New(t.Context(), url, redisstore.Options{Prefix: prefix, Now: clock.Now, ReindexEvery: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	sess := storetest.Session("rx1", "CP1", 1, storetest.T0)
	timer := fsm.Effect{ID: "rx1/t", Kind: fsm.EffArmTimer, Session: sess.ID, DueAt: storetest.T0.Add(time.Minute)}
	if err := s.CreateSession(ctx, store.Commit{Session: sess, Effects: []fsm.Effect{timer}}); err != nil {
		t.Fatal(err)
	}
	// the loss: the due index no longer lists the task, the session's slot does
	o, _ := redis.ParseURL(url)
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	if n, err := c.ZRem(ctx, prefix+":{due}", "3:rx1rx1/t").Result(); err != nil || n != 1 {
		t.Fatalf("remove the due entry: %d, %v", n, err)
	}
	clock.Add(2 * time.Minute)
	got, err := s.Claim(ctx, clock.Now(), "w", time.Minute, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != timer.ID {
		t.Fatalf("claimed %+v; want the stranded timer", got)
	}
	// the sweep restores the lists too
	if err := c.Del(ctx, prefix+":ls:s:created").Err(); err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Second)
	if _, err := s.Claim(ctx, clock.Now(), "w", time.Minute, 8); err != nil {
		t.Fatal(err)
	}
	page, err := s.ListSessions(ctx, store.Filter{State: fsm.Created})
	if err != nil || len(page.Sessions) != 1 {
		t.Fatalf("created sessions after the sweep: %+v, %v", page.Sessions, err)
	}
}
