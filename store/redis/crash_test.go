package redisstore_test

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// The global indexes are derived data; these tests leave them as a crash
// between two steps would, and check nothing is lost and nothing wrong is
// returned.
func TestCrashBetweenSteps(t *testing.T) {
	url := testenv.Redis(t)
	clock := storetest.NewClock(storetest.T0)
	open := func(t *testing.T) *redisstore.Store {
		s, err := redisstore.New(t.Context(), url, redisstore.Options{Prefix: testenv.Namespace(t), Now: clock.Now,
			GoneGrace: 10 * time.Second, ConnectorGrace: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	T0 := storetest.T0

	t.Run("due entry without its task", func(t *testing.T) {
		s := open(t)
		ctx, c := t.Context(), s.Client()
		// a write-ahead whose commit died: an entry, no task
		must(t, c.ZAdd(ctx, s.DueKey(), redis.Z{Score: float64(T0.UnixMilli()), Member: redisstore.Member("s9", "s9/1")}).Err())
		got, err := s.Claim(ctx, T0, "A", time.Minute, 10)
		if err != nil || len(got) != 0 {
			t.Fatalf("claim: %v %v", got, err)
		}
		// the commit lands after the claimer saw the entry "gone" (and its
		// own re-add of the entry raced with the claimer's): the entry was
		// kept, so the task is claimed at the next look, not after the grace
		if n, _ := c.ZCard(ctx, s.GoneKey()).Result(); n != 1 {
			t.Fatalf("gone entries %d", n)
		}
		if _, err := c.ZScore(ctx, s.DueKey(), redisstore.Member("s9", "s9/1")).Result(); err != nil {
			t.Fatalf("the entry of a not-yet-committed task was dropped: %v", err)
		}
		must(t, s.CreateSession(ctx, store.Commit{Session: storetest.Session("s9", "CP1", 1, T0),
			Effects: []fsm.Effect{{ID: "s9/1", Kind: fsm.EffQueryOrder, Session: "s9", DueAt: T0}}}))
		got, err = s.Claim(ctx, T0.Add(2*time.Second), "A", time.Minute, 10)
		if err != nil || len(got) != 1 || got[0].ID != "s9/1" {
			t.Fatalf("claim at the next look: %v %v", got, err)
		}
		// after the grace the sighting is forgotten and the claimed task kept
		_, _ = s.Claim(ctx, T0.Add(11*time.Second), "B", time.Minute, 10)
		if n, _ := c.ZCard(ctx, s.GoneKey()).Result(); n != 0 {
			t.Fatalf("gone entries left %d", n)
		}
		if _, err := c.ZScore(ctx, s.DueKey(), redisstore.Member("s9", "s9/1")).Result(); err != nil {
			t.Fatalf("the claimed task lost its entry: %v", err)
		}
		// a gone entry whose task never appears is dropped
		must(t, c.ZAdd(ctx, s.DueKey(), redis.Z{Score: float64(T0.UnixMilli()), Member: redisstore.Member("s8", "s8/1")}).Err())
		_, _ = s.Claim(ctx, T0.Add(time.Hour), "A", time.Minute, 10)
		_, _ = s.Claim(ctx, T0.Add(2*time.Hour), "A", time.Minute, 10)
		if n, _ := c.ZScore(ctx, s.DueKey(), redisstore.Member("s8", "s8/1")).Result(); n != 0 {
			t.Fatalf("dangling entry kept")
		}
		if n, _ := c.ZCard(ctx, s.GoneKey()).Result(); n != 0 {
			t.Fatalf("gone entries left %d", n)
		}
	})

	t.Run("release whose index follow-up died", func(t *testing.T) {
		s := open(t)
		ctx, c := t.Context(), s.Client()
		now := T0.Add(time.Hour)
		must(t, s.CreateSession(ctx, store.Commit{Session: storetest.Session("s7", "CP7", 1, T0),
			Effects: []fsm.Effect{{ID: "s7/1", Kind: fsm.EffQueryOrder, Session: "s7", DueAt: now}}}))
		got, err := s.Claim(ctx, now, "a/1", time.Minute, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("claim: %v %v", got, err)
		}
		mem := redisstore.Member("s7", "s7/1")
		leaseEnd, _ := c.ZScore(ctx, s.DueKey(), mem).Result()
		if n, err := s.ReleaseLeases(ctx, "a/", now); err != nil || n != 1 {
			t.Fatalf("release: %d %v", n, err)
		}
		if sc, _ := c.ZScore(ctx, s.DueKey(), mem).Result(); sc != float64(now.UnixMilli()) {
			t.Fatalf("entry at %v after the release, want the due time", sc)
		}
		// as if the process died after the script, before moving the entry
		must(t, c.ZAdd(ctx, s.DueKey(), redis.Z{Score: leaseEnd, Member: mem}).Err())
		if x, _ := s.Claim(ctx, now, "b/1", time.Minute, 10); len(x) != 0 {
			t.Fatalf("claimed through a late entry: %v", x)
		}
		// the next release finds nothing to release but repairs the entry
		if n, err := s.ReleaseLeases(ctx, "a/", now); err != nil || n != 0 {
			t.Fatalf("second release: %d %v", n, err)
		}
		x, err := s.Claim(ctx, now, "b/1", time.Minute, 10)
		if err != nil || len(x) != 1 || x[0].ID != "s7/1" {
			t.Fatalf("claim after the repair: %v %v", x, err)
		}
	})

	t.Run("stale connector claims", func(t *testing.T) {
		s := open(t)
		ctx, c := t.Context(), s.Client()
		key := s.ConnKey("CP1", 1)
		// a creation in flight (or just died) holds the connector for the grace
		must(t, c.Set(ctx, key, "ghost|"+strconv.FormatInt(T0.UnixMilli(), 10), 0).Err())
		err := s.CreateSession(ctx, store.Commit{Session: storetest.Session("s1", "CP1", 1, T0)})
		if !errors.Is(err, store.ErrConnectorBusy) {
			t.Fatalf("in-flight claim: %v", err)
		}
		clock.Set(T0.Add(31 * time.Second))
		defer clock.Set(T0)
		must(t, s.CreateSession(ctx, store.Commit{Session: storetest.Session("s1", "CP1", 1, T0)}))
		// an ended session whose release never ran
		must(t, s.CreateSession(ctx, store.Commit{Session: storetest.Session("s2", "CP1", 2, T0)}))
		s2, _ := s.GetSession(ctx, "s2")
		n := s2.Clone()
		n.State = fsm.Cancelled
		must(t, s.Commit(ctx, store.Commit{ExpectedVersion: 1, Session: n}))
		must(t, c.Set(ctx, s.ConnKey("CP1", 2), "s2|1", 0).Err())
		if _, err := s.ActiveSession(ctx, "CP1", 2); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("stale claim read as active: %v", err)
		}
		must(t, s.CreateSession(ctx, store.Commit{Session: storetest.Session("s3", "CP1", 2, T0)}))
		if a, err := s.ActiveSession(ctx, "CP1", 2); err != nil || a.ID != "s3" {
			t.Fatalf("active: %v %v", a.ID, err)
		}
	})

	t.Run("stale list and out_order_no entries", func(t *testing.T) {
		s := open(t)
		ctx, c := t.Context(), s.Client()
		sess := storetest.Session("s1", "CP1", 1, T0)
		must(t, s.CreateSession(ctx, store.Commit{Session: sess}))
		sess.Version = 1
		// entries a died commit would have left
		must(t, c.ZAdd(ctx, s.ListKey("s", "paid"), redis.Z{Member: store.SortKey(sess)}).Err())
		must(t, c.Set(ctx, s.OONKey("OTHER"), "s1", 0).Err())
		p, err := s.ListSessions(ctx, store.Filter{State: fsm.Paid})
		if err != nil || len(p.Sessions) != 0 {
			t.Fatalf("stale list entry returned: %v %v", p, err)
		}
		if _, err := s.SessionByOutOrderNo(ctx, "OTHER"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("stale out_order_no: %v", err)
		}
		// commits keep the lists right
		n := sess.Clone()
		n.State, n.Flags = fsm.UserConfirmed, []fsm.Flag{fsm.FlagClockSkew}
		must(t, s.Commit(ctx, store.Commit{ExpectedVersion: 1, Session: n}))
		n2 := n.Clone()
		n2.State, n2.Flags = fsm.Charging, nil
		must(t, s.Commit(ctx, store.Commit{ExpectedVersion: 2, Session: n2}))
		for key, want := range map[string]bool{
			s.ListKey("s", "created"): false, s.ListKey("s", "user_confirmed"): false, s.ListKey("s", "charging"): true,
			s.ListKey("f", "clock_skew"): false, s.ListKey("c", "CP1"): true, s.ListKey("a", ""): true,
		} {
			members, _ := c.ZRange(ctx, key, 0, -1).Result()
			if slices.Contains(members, store.SortKey(sess)) != want {
				t.Errorf("%s: %v, want member=%v", key, members, want)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
