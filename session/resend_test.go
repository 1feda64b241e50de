package session_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// TestResendUnanswered: a start or stop the charger has not answered is
// published again with the same cmd_id after the re-send period and when
// the charger's state comes back online (though the session never saw it
// offline), until the charger answers or the start's deadline passes.
func TestResendUnanswered(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) { testResendUnanswered(t, st) })
}

func testResendUnanswered(t *testing.T, st store.Store) {
	online := func(h *harness, cp string) {
		t.Helper()
		payload, _ := json.Marshal(charger.StateMsg{Online: true, BootID: "boot-1", TS: h.now()})
		if err := h.eng.HandleCharger(bg, charger.Inbound{ChargerID: cp, Kind: charger.KindState, Topic: "ev/v1/" + cp + "/state",
			Payload: payload, ReceivedAt: h.now()}); err != nil {
			t.Fatal(err)
		}
	}
	sameIDs := func(t *testing.T, cmds []charger.Command, want int, cmdID string) {
		t.Helper()
		if len(cmds) != want {
			t.Fatalf("%d commands, want %d: %+v", len(cmds), want, cmds)
		}
		for _, c := range cmds {
			if c.CmdID != cmdID || !c.Deadline.Equal(cmds[0].Deadline) {
				t.Fatalf("commands %+v, want all %s with one deadline", cmds, cmdID)
			}
		}
	}

	t.Run("start", func(t *testing.T) {
		h := newHarness(t, st)
		s := h.confirmed("CP1")
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStart), 1, s.StartCmdID)
		h.ahead.Add(int64(10 * time.Second)) // past the re-send period, within the deadline
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStart), 2, s.StartCmdID)
		online(h, "CP1")
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStart), 3, s.StartCmdID)

		h.apply(s.ID, fsm.Event{Type: fsm.EvStartAccepted, By: fsm.ByCharger, CmdID: s.StartCmdID})
		h.ahead.Add(int64(10 * time.Second))
		h.drain()
		online(h, "CP1")
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStart), 3, s.StartCmdID)
	})

	t.Run("start past its deadline", func(t *testing.T) {
		h := newHarness(t, st)
		s := h.confirmed("CP2")
		h.drain()
		h.ahead.Add(int64(fsm.DefaultConfig().StartTimeout + time.Second))
		h.drain()
		online(h, "CP2")
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStart), 1, s.StartCmdID)
		if got := h.get(s.ID); got.State != fsm.Cancelled || got.CancelReason != fsm.ReasonChargerNeverStarted {
			t.Fatalf("%s %s", got.State, got.CancelReason)
		}
	})

	t.Run("stop", func(t *testing.T) {
		h := newHarness(t, st)
		s := h.charging("CP3")
		h.drain()
		if _, err := h.eng.Stop(bg, s.ID, fsm.ByApp); err != nil {
			t.Fatal(err)
		}
		h.drain()
		stopID := fsm.StopCmdID(s.ID, 1)
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStop), 1, stopID)
		online(h, "CP3")
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStop), 2, stopID)
		h.ahead.Add(int64(10 * time.Second))
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStop), 3, stopID)

		h.apply(s.ID, fsm.Event{Type: fsm.EvStopAccepted, By: fsm.ByCharger, CmdID: stopID})
		h.ahead.Add(int64(10 * time.Second))
		h.drain()
		sameIDs(t, h.cmd.sent(s.ID, charger.CmdStop), 3, stopID)
	})
}
