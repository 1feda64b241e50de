package redisstore_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// roundTrips is a go-redis hook that records what the client sends: a
// command or a pipeline is one round trip (a Cluster pipeline goes to its
// nodes at once).
type roundTrips struct {
	mu   sync.Mutex
	sent []string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		r.add("pipeline[" + strings.Join(names, " ") + "]")
		return next(ctx, cmds)
	}
}

func (r *roundTrips) add(s string) { r.mu.Lock(); r.sent = append(r.sent, s); r.mu.Unlock() }

// during returns what f sent.
func (r *roundTrips) during(t *testing.T, f func() error) []string {
	t.Helper()
	r.mu.Lock()
	r.sent = nil
	r.mu.Unlock()
	if err := f(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// A commit costs one round trip on one server (single or Sentinel) and two
// on a Cluster, plus one on a Cluster when the record leaves a list (the
// removed entries are checked against the record again); what the commits
// wrote is then read back.
func TestCommitRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
		// round trips of: a creation that takes a free connector, a plain
		// commit, one leaving a list, one due in the future without a change
		// to publish
		create, plain, leaves, quiet int
	}{
		{"single", func(t *testing.T) string { return testenv.Redis(t) }, 1, 1, 1, 1},
		{"sentinel", func(t *testing.T) string { return testenv.RedisSentinelURL(t) }, 1, 1, 1, 1},
		// the connector's claim first (GET, then its compare-and-set)
		{"cluster", clusterRedis, 4, 2, 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := storetest.NewClock(storetest.T0)
			s, err := redisstore.New(t.Context(), tc.url(t), redisstore.Options{Prefix: testenv.Namespace(t), Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			rt := &roundTrips{}
			s.Client().AddHook(rt)
			ctx := t.Context()
			T0 := storetest.T0
			sess := storetest.Session("rt1", "CPR", 1, T0)
			sent := rt.during(t, func() error {
				return s.CreateSession(ctx, store.Commit{Session: sess, Publish: true, ChangeData: []byte(`{"id":"rt1"}`),
					Effects: []fsm.Effect{{ID: "rt1/c", Kind: fsm.EffQueryOrder, Session: "rt1"}}})
			})
			if len(sent) != tc.create {
				t.Errorf("create: %d round trips, want %d: %v", len(sent), tc.create, sent)
			}
			sess.Version = 1
			if err := s.CreateSession(ctx, store.Commit{Session: storetest.Session("rt2", "CPR", 1, T0)}); !errors.Is(err, store.ErrConnectorBusy) {
				t.Fatalf("a second session on the connector: %v", err)
			}
			commit := func(n fsm.Session, publish bool, effects ...fsm.Effect) []string {
				t.Helper()
				n.UpdatedAt = n.UpdatedAt.Add(time.Second)
				c := store.Commit{ExpectedVersion: sess.Version, Session: n, Effects: effects, Publish: publish,
					History: []fsm.HistoryEntry{{At: n.UpdatedAt, From: sess.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger}}}
				if publish { // and a webhook event
					c.ChangeData = []byte(`{"id":"rt1"}`)
					c.Webhooks = []store.WebhookEvent{{ID: store.EventID(n.ID, sess.Version+1, 0), Type: "session.updated",
						CreatedAt: n.UpdatedAt, Body: []byte(`{}`)}}
				}
				sent := rt.during(t, func() error { return s.Commit(ctx, c) })
				n.Version = sess.Version + 1
				sess = n
				return sent
			}
			check := func(what string, sent []string, want int) {
				t.Helper()
				if len(sent) != want {
					t.Errorf("%s: %d round trips, want %d: %v", what, len(sent), want, sent)
				}
			}

			// a meter sample: history, an effect due now, a webhook, the feed
			n := sess.Clone()
			n.EnergyWh = 100
			check("plain commit", commit(n, true, fsm.Effect{ID: "rt1/q", Kind: fsm.EffQueryOrder, Session: "rt1"}), tc.plain)
			// a transition: another list, a disarm, a new out_order_no
			n = sess.Clone()
			n.State, n.OutOrderNo = fsm.UserConfirmed, "OON-rt1-b"
			n.Flags = []fsm.Flag{fsm.FlagClockSkew}
			check("commit leaving a list", commit(n, true, fsm.Effect{Kind: fsm.EffDisarmTimer, TimerID: "rt1/q"}), tc.leaves)
			// a timer armed an hour ahead, nothing published, no webhook
			n = sess.Clone()
			check("quiet commit", commit(n, false, fsm.Effect{ID: "rt1/t", Kind: fsm.EffArmTimer, Session: "rt1", DueAt: T0.Add(time.Hour)}), tc.quiet)
			// the end: the connector is released
			n = sess.Clone()
			n.State, n.Flags = fsm.Cancelled, nil
			check("terminal commit", commit(n, true), tc.leaves)

			// what the commits wrote
			if _, err := s.ActiveSession(ctx, "CPR", 1); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("active session after the end: %v", err)
			}
			if n, _ := s.Client().Exists(ctx, s.ConnKey("CPR", 1)).Result(); n != 0 {
				t.Error("the connector claim was not released")
			}
			if got, err := s.SessionByOutOrderNo(ctx, "OON-rt1-b"); err != nil || got.Version != sess.Version {
				t.Errorf("by the new out_order_no: %v %v", got.Version, err)
			}
			if n, _ := s.Client().Exists(ctx, s.OONKey("OONrt1")).Result(); n != 0 {
				t.Error("the old out_order_no key stayed")
			}
			for key, want := range map[string]bool{s.ListKey("s", "created"): false, s.ListKey("s", "user_confirmed"): false,
				s.ListKey("s", "cancelled"): true, s.ListKey("f", "clock_skew"): false, s.ListKey("a", ""): true} {
				members, _ := s.Client().ZRange(ctx, key, 0, -1).Result()
				if slices.Contains(members, store.SortKey(sess)) != want {
					t.Errorf("%s: %v, want member=%v", key, members, want)
				}
			}
			if counts, err := s.CountByState(ctx); err != nil || counts[fsm.Cancelled] != 1 || counts[fsm.Created] != 0 {
				t.Errorf("counts %v %v", counts, err)
			}
			if sc, err := s.Client().ZScore(ctx, s.DueKey(), redisstore.Member("rt1", "rt1/t")).Result(); err != nil || sc != float64(T0.Add(time.Hour).UnixMilli()) {
				t.Errorf("the timer's due entry: %v %v", sc, err)
			}
			if _, err := s.Client().ZScore(ctx, s.DueKey(), redisstore.Member("rt1", "rt1/q")).Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("the disarmed task kept its due entry: %v", err)
			}
			changes, err := s.ReadChanges(ctx, "", 100, 0)
			if err != nil {
				t.Fatal(err)
			}
			var versions []int64
			for _, c := range changes {
				if c.SessionID == "rt1" {
					versions = append(versions, c.Version)
				}
			}
			if !slices.Equal(versions, []int64{1, 2, 3, 5}) {
				t.Errorf("feed versions %v, want [1 2 3 5]", versions)
			}
			page, err := s.ListDeliveries(ctx, store.DeliveryFilter{Status: store.DeliveryPending})
			if err != nil || len(page.Deliveries) != 3 {
				t.Errorf("pending deliveries: %d %v", len(page.Deliveries), err)
			}
			clock.Add(time.Minute)
			if ds, err := s.ClaimDeliveries(ctx, clock.Now(), "w", time.Minute, 10); err != nil || len(ds) != 1 {
				t.Errorf("claim the head delivery: %d %v", len(ds), err)
			}
		})
	}
}

// A record written by a store before the index line (no field i) is tidied
// from its JSON: its old lists and out_order_no go, as before.
func TestCommitLegacyRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{{"single", func(t *testing.T) string { return testenv.Redis(t) }}, {"cluster", clusterRedis}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redisstore.New(t.Context(), tc.url(t), redisstore.Options{Prefix: testenv.Namespace(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ctx := t.Context()
			sess := storetest.Session("lg1", "CPL", 1, storetest.T0)
			must(t, s.CreateSession(ctx, store.Commit{Session: sess}))
			sess.Version = 1
			must(t, s.Client().HDel(ctx, s.SessionKey("lg1"), "i").Err())
			// the connector's claim names it: it is read from its JSON, active
			err = s.CreateSession(ctx, store.Commit{Session: storetest.Session("lg2", "CPL", 1, storetest.T0)})
			if !errors.Is(err, store.ErrConnectorBusy) {
				t.Fatalf("a second session on the connector of a legacy record: %v", err)
			}
			n := sess.Clone()
			n.State, n.OutOrderNo = fsm.Cancelled, "OON-lg1-b"
			must(t, s.Commit(ctx, store.Commit{ExpectedVersion: 1, Session: n}))
			for key, want := range map[string]bool{s.ListKey("s", "created"): false, s.ListKey("s", "cancelled"): true} {
				members, _ := s.Client().ZRange(ctx, key, 0, -1).Result()
				if slices.Contains(members, store.SortKey(sess)) != want {
					t.Errorf("%s: %v, want member=%v", key, members, want)
				}
			}
			if n, _ := s.Client().Exists(ctx, s.OONKey("OONlg1"), s.ConnKey("CPL", 1)).Result(); n != 0 {
				t.Errorf("%d of the old out_order_no and the connector claim stayed", n)
			}
			// the next commit reads the line the last one wrote
			n.Version = 2
			n2 := n.Clone()
			n2.State = fsm.Paid
			must(t, s.Commit(ctx, store.Commit{ExpectedVersion: 2, Session: n2}))
			if c, _ := s.CountByState(ctx); c[fsm.Cancelled] != 0 || c[fsm.Paid] != 1 {
				t.Errorf("counts %v", c)
			}
		})
	}
}

// Claim costs the same round trips however many sessions it claims from:
// read the due entries, ask every session's slot (which on one server also
// moves the entries), on a Cluster move the entries; Complete and Retry one
// on one server, two on a Cluster (the slot, then the entry).
func TestOutboxRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name          string
		url           func(t *testing.T) string
		claim, settle int
	}{
		{"single", func(t *testing.T) string { return testenv.Redis(t) }, 2, 1},
		{"cluster", clusterRedis, 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redisstore.New(t.Context(), tc.url(t), redisstore.Options{Prefix: testenv.Namespace(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ctx := t.Context()
			T0 := storetest.T0
			for _, id := range []string{"ob1", "ob2", "ob3"} {
				must(t, s.CreateSession(ctx, store.Commit{Session: storetest.Session(id, "CP-"+id, 1, T0),
					Effects: []fsm.Effect{{ID: id + "/a", Kind: fsm.EffQueryOrder, Session: id}, {ID: id + "/b", Kind: fsm.EffQueryOrder, Session: id}}}))
			}
			// the first claim also takes a step of the re-index sweep (paced)
			if x, err := s.Claim(ctx, T0.Add(-time.Hour), "w/0", time.Minute, 5); err != nil || len(x) != 0 {
				t.Fatalf("claim before anything is due: %v %v", x, err)
			}
			rt := &roundTrips{}
			s.Client().AddHook(rt)
			var got []store.Task
			sent := rt.during(t, func() (err error) { got, err = s.Claim(ctx, T0, "w/1", time.Minute, 5); return err })
			if len(got) != 5 || len(sent) != tc.claim {
				t.Fatalf("claimed %d of 6 (max 5) in %d round trips, want 5 in %d: %v", len(got), len(sent), tc.claim, sent)
			}
			if x, err := s.Claim(ctx, T0, "w/2", time.Minute, 5); err != nil || len(x) != 1 {
				t.Fatalf("the task left: %v %v", x, err)
			}
			if x, err := s.Claim(ctx, T0.Add(30*time.Second), "w/3", time.Minute, 5); err != nil || len(x) != 0 {
				t.Fatalf("claimed again under live leases: %v %v", x, err)
			}
			if sent := rt.during(t, func() error { return s.Complete(ctx, got[0]) }); len(sent) != tc.settle {
				t.Errorf("complete: %d round trips, want %d: %v", len(sent), tc.settle, sent)
			}
			if sent := rt.during(t, func() error { return s.Retry(ctx, got[1], T0.Add(time.Hour), "later") }); len(sent) != tc.settle {
				t.Errorf("retry: %d round trips, want %d: %v", len(sent), tc.settle, sent)
			}
			if err := s.Complete(ctx, got[0]); !errors.Is(err, store.ErrLeaseLost) {
				t.Errorf("second complete: %v", err)
			}
			// the completed task's entry is gone, the retried one's moved
			c := s.Client()
			if _, err := c.ZScore(ctx, s.DueKey(), redisstore.Member(got[0].SessionID, got[0].ID)).Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("completed task's entry: %v", err)
			}
			if sc, _ := c.ZScore(ctx, s.DueKey(), redisstore.Member(got[1].SessionID, got[1].ID)).Result(); sc != float64(T0.Add(time.Hour).UnixMilli()) {
				t.Errorf("retried task's entry at %v", sc)
			}
			// the others come back after their lease, the retried one at its time
			x, err := s.Claim(ctx, T0.Add(2*time.Minute), "w/4", time.Minute, 10)
			if err != nil || len(x) != 4 {
				t.Errorf("after the leases: %d %v", len(x), err)
			}
		})
	}
}
