// The lost-write tests play what a Redis failover can do to acknowledged
// commits: replication is asynchronous, so the promoted replica may lack
// the last writes the old primary acknowledged. Two harnesses:
//
//   - a real primary and replica (testenv.ReplicatedRedis): the test cuts
//     the replication link at the worst moment, lets the service go on
//     against the primary, then promotes the replica. Everything written
//     since the cut is lost, and only that — exactly what a failover can
//     lose. The durability policy (docs/operations.md, "What survives a
//     lost write") is what makes these pass: run them with
//     CHARGEFLOW_REDIS_WAIT_TIMEOUT=0 to see them fail without it;
//   - a rewinder on one Redis, which puts keys back as they were: a loss
//     the policy does not prevent (a notification's commit, or one
//     Cluster slot going back while the global indexes on other slots do
//     not), to show what repairs it.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// rewinder takes a copy of every key of a stack's prefix and puts the keys
// back as they were, deleting the ones written since: the store then looks
// exactly as a primary whose replica was promoted before the writes in
// between reached it (on Sentinel, where one server holds every key, a
// failover loses such a suffix of the writes).
type rewinder struct {
	c      *redis.Client
	prefix string
}

type snapshot map[string]struct {
	dump string
	ttl  time.Duration
}

func newRewinder(t *testing.T, s *stack) *rewinder {
	t.Helper()
	o, err := redis.ParseURL(s.env["CHARGEFLOW_REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return &rewinder{c: c, prefix: s.env["CHARGEFLOW_REDIS_PREFIX"] + ":"}
}

func (r *rewinder) keys(ctx context.Context) ([]string, error) {
	var out []string
	iter := r.c.Scan(ctx, 0, r.prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	return out, iter.Err()
}

func (r *rewinder) snapshot(t *testing.T) snapshot {
	t.Helper()
	ctx := t.Context()
	keys, err := r.keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshot{}
	for _, k := range keys {
		d, err := r.c.Dump(ctx, k).Result()
		if err == redis.Nil {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		ttl, _ := r.c.PTTL(ctx, k).Result()
		e := snap[k]
		e.dump, e.ttl = d, max(ttl, 0)
		snap[k] = e
	}
	return snap
}

// rewind puts the snapshot back in one transaction.
func (r *rewinder) rewind(t *testing.T, snap snapshot) {
	t.Helper()
	ctx := t.Context()
	now, err := r.keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range now {
			if _, ok := snap[k]; !ok {
				p.Del(ctx, k)
			}
		}
		for k, e := range snap {
			p.RestoreReplace(ctx, k, e.ttl, e.dump)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func lostWriteStack(t *testing.T) (*stack, *rewinder) {
	s := newStack(t, "external", 1)
	return s, newRewinder(t, s)
}

// replicatedStack is a stack on a primary with one replica whose
// replication the test can cut (testenv.ReplicatedRedis). An environment
// CHARGEFLOW_REDIS_WAIT_TIMEOUT is passed on, so `=0` shows what the tests
// see without the durability policy.
func replicatedStack(t *testing.T) (*stack, *testenv.ReplicatedRedis) {
	rr := testenv.NewReplicatedRedis(t)
	env := []string{"CHARGEFLOW_REDIS_URL", rr.URL}
	if v := os.Getenv("CHARGEFLOW_REDIS_WAIT_TIMEOUT"); v != "" {
		env = append(env, "CHARGEFLOW_REDIS_WAIT_TIMEOUT", v)
	}
	return newStackWith(t, "external", 1, "", env...), rr
}

// retried is how many times this instance's workers retried effects of kind.
func retried(t *testing.T, s *stack, kind string) float64 {
	return value(scrapeMetrics(t, s), "chargeflow_effects_total", "kind", kind, "outcome", "retried")
}

// The replication is cut just before the user confirms, and the replica
// promoted a moment later: the confirmation, and whatever followed it, is
// lost. Without the policy the start goes out and the charger's started is
// acknowledged, then forgotten — the charger never sends it again, and the
// session ends charger_never_started while the charger delivered energy.
// With it the start is held until the confirmation is on the replica, so
// the failover loses a confirmation nobody acted on: the poll learns of it
// again, the start goes out once (one cmd_id), and the session is billed
// for what the charger delivers.
func TestLostWriteConfirmAndStart(t *testing.T) {
	s, rr := replicatedStack(t)
	c := s.fleet.Charger("CP-1")
	if err := c.Plug(1); err != nil {
		t.Fatal(err)
	}
	v := s.create("CP-1", 5000)
	rr.Sync(t)
	rr.Cut()
	if err := s.sb.Confirm(v.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	s.waitFor("the start performed (and its started acknowledged), or held", func() bool {
		if _, on := c.Session(1); on && len(c.Pending()) == 0 && s.get(v.ID).State == "charging" {
			return true
		}
		return retried(t, s, "send_start") > 0
	})
	rr.Failover(t)
	s.waitFor("the service on the promoted replica", func() bool { code, _ := s.do("GET", "/v1/sessions/"+v.ID, opsToken, nil); return code == 200 })
	t.Logf("after the failover the session is %s", s.get(v.ID).State) // created, unless the poll was quick
	si, _ := c.Session(1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		g := s.get(v.ID)
		if g.State == "paid" || g.State == "cancelled" {
			v = g
			break
		}
		// the user stops at the charger once it delivered something billable:
		// 50 Wh is at least a fen in every period of the default tariff (a few
		// Wh in the valley period bill nothing, and the session then ends
		// cancelled no_energy, rightly)
		if now, on := c.Session(1); on && g.State == "charging" && c.Register(1) > now.StartWh+50 {
			si = now
			c.StopLocal(1)
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still %s", v.ID, g.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.waitFor("the charger stopped", func() bool { _, on := c.Session(1); return !on })
	delivered := c.Register(1) - si.StartWh
	starts := map[string]int{}
	for _, cmd := range c.Commands() {
		if cmd.Type == "start" && cmd.SessionID == v.ID {
			starts[cmd.CmdID]++
		}
	}
	if len(starts) != 1 {
		t.Errorf("starts %v: want one cmd_id", starts)
	}
	if v.State != "paid" || v.EnergyWh < delivered {
		t.Errorf("session %s ends %s (%s) billing %d Wh; the charger delivered %d Wh", v.ID, v.State, v.CancelReason, v.EnergyWh, delivered)
	}
}

// The paid notification's commit is lost: the session is back in
// deducting; the poll finds the order paid; nothing is debited twice.
func TestLostWritePaid(t *testing.T) {
	s, rw := lostWriteStack(t)
	v := s.charge("CP-1", 5000)
	s.sb.LoseNotifications(1000) // settled by the poll, so deducting can be seen
	defer s.sb.LoseNotifications(0)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	s.waitState(v.ID, "deducting")
	snap := rw.snapshot(t)
	s.waitState(v.ID, "paid")
	rw.rewind(t, snap)
	v = s.waitState(v.ID, "paid")
	checkPaid(t, s, v)
	if o, _ := s.sb.Order(v.OutOrderNo); len(o.Payments) != 1 {
		t.Fatalf("payments %+v", o.Payments)
	}
}

// The replication is cut just before an operator refunds, and the replica
// promoted a moment later. Without the policy the refund is answered 202
// and paid by Huifu, then forgotten: the session shows no refund while the
// money went back, and its number (its req_seq_id) would be given again to
// the next refund — on another day, a second payment. With it the refund
// is answered 202 only once on the replica (503 here: ask again), and Huifu
// is called only once the refund's record is on the replica, so a failover
// never forgets a refund that was paid. Asking again refunds once.
func TestLostWriteRefund(t *testing.T) {
	s, rr := replicatedStack(t)
	v := s.charge("CP-1", 5000)
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
	v = s.waitState(v.ID, "paid")
	rr.Sync(t)
	rr.Cut()
	body := map[string]any{"amount_fen": 1, "reason": "goodwill"}
	code, out := s.do("POST", "/v1/sessions/"+v.ID+"/refund", opsToken, body, "Idempotency-Key", "lw-refund")
	t.Logf("refund asked with the replication cut: %d", code)
	if code != 202 && code != 503 {
		t.Fatalf("refund: %d %s", code, out)
	}
	s.waitFor("the refund performed, or held", func() bool {
		if g := s.get(v.ID); len(g.Refunds) == 1 && g.Refunds[0].Status == "succeeded" {
			return true
		}
		return retried(t, s, "refund") > 0
	})
	rr.Failover(t)
	s.waitFor("the service on the promoted replica", func() bool { code, _ := s.do("GET", "/v1/sessions/"+v.ID, opsToken, nil); return code == 200 })
	g := s.get(v.ID)
	l := s.ledger(v.OutOrderNo)
	t.Logf("after the failover: session refunds %+v, ledger refunded %d", g.Refunds, l.Refunded)
	var shown int64
	for _, r := range g.Refunds {
		if r.Status == "succeeded" {
			shown += r.AmountFen
		}
	}
	if int64(l.Refunded) != shown {
		t.Errorf("ledger refunded %d fen, the session shows %d: a refund the service forgot", l.Refunded, shown)
	}
	// the operator asks again, as the board shows nothing
	s.mustDo("POST", "/v1/sessions/"+v.ID+"/refund", opsToken, body, 202, "Idempotency-Key", "lw-refund")
	s.waitFor("refund again", func() bool {
		g := s.get(v.ID)
		return len(g.Refunds) == 1 && g.Refunds[0].Status != "pending"
	})
	g = s.get(v.ID)
	l = s.ledger(v.OutOrderNo)
	if l.Refunded != 1 || g.Refunds[0].Status != "succeeded" {
		t.Errorf("after asking again: ledger refunded %d fen, session refunds %+v", l.Refunded, g.Refunds)
	}
	if strings.Contains(fmt.Sprint(g.Refunds), "failed") {
		t.Errorf("refund failed: %+v", g.Refunds)
	}
}

// On Cluster a failover loses writes of ONE primary: the session's own keys
// (one hash slot) may go back while the global indexes (other slots) keep
// what came after. Here the confirmation is lost on the session's slot
// only: the session is back in created with its timers, but the due index
// no longer lists them (the later commit removed their entries), so nothing
// would ever claim them. The re-index sweep (store/redis, run every few
// seconds by the outbox claims) finds them in the session's outbox and
// puts them back: the session ends. (The policy would not let this very
// loss happen once the start went out; the sweep does not depend on that.)
func TestLostWriteSessionSlotOnly(t *testing.T) {
	s, rw := lostWriteStack(t)
	c := s.fleet.Charger("CP-1")
	if err := c.Plug(1); err != nil {
		t.Fatal(err)
	}
	v := s.create("CP-1", 5000)
	snap := rw.snapshot(t)
	for k := range snap {
		if !strings.Contains(k, "{s:"+v.ID+"}") {
			delete(snap, k) // only the session's slot goes back
		}
	}
	if err := s.sb.Confirm(v.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	s.waitState(v.ID, "charging")
	rw.rewindKeys(t, snap)
	if got := s.get(v.ID).State; got != "created" {
		t.Fatalf("after the rewind the session is %s", got)
	}
	c.StopLocal(1)
	deadline := time.Now().Add(45 * time.Second) // the confirm timeout is 30 s
	for {
		g := s.get(v.ID)
		if g.State == "paid" || g.State == "cancelled" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still %s %s after the loss; history %+v", v.ID, g.State, time.Since(deadline.Add(-45*time.Second)), g.History)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rewindKeys puts back the snapshot's keys only.
func (r *rewinder) rewindKeys(t *testing.T, snap snapshot) {
	t.Helper()
	_, err := r.c.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		for k, e := range snap {
			p.RestoreReplace(t.Context(), k, e.ttl, e.dump)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
