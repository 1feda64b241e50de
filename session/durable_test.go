package session_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// The durability gates on a primary whose replica stops hearing from it:
// the start the confirmation asks for is held (its task retried, nothing
// published), a charger's started is applied but not acknowledged (the
// error tells the link not to), and once the replica caught up the repeated
// started is acknowledged.
func TestDurableGates(t *testing.T) {
	rr := testenv.NewReplicatedRedis(t)
	st, err := redisstore.New(bg, rr.URL, redisstore.Options{Prefix: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, st)
	s := h.created("CP1")
	h.drain()
	rr.Sync(t)
	rr.Cut()
	if err := h.sb.Confirm(s.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	s = h.until(s.ID, fsm.UserConfirmed)
	for range 3 { // the held start is due again at once (the harness's back-off): a few tries
		if _, err := h.eng.RunOnce(bg, "test/0", 16); err != nil {
			t.Fatal(err)
		}
	}
	if sent := h.cmd.sent(s.ID, "start"); len(sent) != 0 {
		t.Fatalf("start published while the confirmation is on the primary only: %+v", sent)
	}
	if got := h.obs.of(fsm.EffSendStart); !slices.Contains(got, "retried") {
		t.Fatalf("send_start outcomes %v, want retried", got)
	}
	started := fsm.Event{Type: fsm.EvStarted, By: fsm.ByCharger, At: h.now(), ChargerTime: h.now(), MeterWh: 1000}
	if _, err := h.eng.Apply(bg, s.ID, started); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("started with the replication cut: %v, want unavailable (not acknowledged)", err)
	}
	rr.Link.Retarget(rr.Primary.Addr) // the replica reconnects and catches up
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := h.eng.Apply(bg, s.ID, started) // the charger sends it again
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("started again after the replica caught up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := h.get(s.ID).State; got != fsm.Charging {
		t.Fatalf("session %s", got)
	}
}
