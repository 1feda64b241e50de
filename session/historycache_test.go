package session_test

import (
	"encoding/json"
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// TestPublishedHistoryAcrossInstances: two engines on one store move one
// session in turns, each with the history it remembers (historycache.go):
// every view on the feed carries the whole history of its version — a
// prefix of the final one, one entry longer per transition — and the last
// one all of it, though each engine missed the other's commits.
func TestPublishedHistoryAcrossInstances(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st)
		other, err := session.New(session.Config{Machine: fsm.DefaultConfig(), InstanceID: "other"}, st, h.pay, h.cmd, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := h.confirmed("CP-H") // created and confirmed through h's engine
		h.drain()
		// started through the other engine, meter and ended through h's, the
		// completion and payment by h's outbox
		if _, err := other.Apply(bg, s.ID, fsm.Event{Type: fsm.EvStarted, At: h.now(), By: fsm.ByCharger, ChargerTime: h.now(), MeterWh: 1000}); err != nil {
			t.Fatal(err)
		}
		h.apply(s.ID, fsm.Event{Type: fsm.EvMeter, By: fsm.ByCharger, ChargerTime: h.now(), MeterWh: 1500, Seq: 1})
		if _, err := other.Stop(bg, s.ID, fsm.ByApp); err != nil {
			t.Fatal(err)
		}
		h.apply(s.ID, fsm.Event{Type: fsm.EvEnded, By: fsm.ByCharger, ChargerTime: h.now(), MeterWh: 3000, Reason: "remote"})
		h.ahead.Add(int64(5e9))
		h.waitState(s.ID, fsm.Paid)

		history, err := st.History(bg, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		changes, err := st.ReadChanges(bg, "", 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		var last []session.HistoryView
		seen := 0
		for _, c := range changes {
			if c.Kind != store.ChangeSession || c.SessionID != s.ID {
				continue
			}
			var v session.View
			if err := json.Unmarshal(c.Data, &v); err != nil {
				t.Fatal(err)
			}
			if v.Version != c.Version {
				t.Fatalf("change of version %d carries the view of version %d", c.Version, v.Version)
			}
			if len(v.History) < len(last) || len(v.History) > len(history) {
				t.Fatalf("version %d: %d history entries after %d, of %d in all", v.Version, len(v.History), len(last), len(history))
			}
			for i, e := range v.History {
				if e.To != history[i].To || e.Event != history[i].Event || !e.At.Equal(history[i].At) {
					t.Fatalf("version %d: history entry %d is %+v, stored %+v", v.Version, i, e, history[i])
				}
			}
			last = v.History
			seen++
		}
		if seen < 5 || len(last) != len(history) {
			t.Fatalf("%d views on the feed; the last has %d of %d history entries", seen, len(last), len(history))
		}
	})
}
