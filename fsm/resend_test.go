package fsm

import (
	"testing"
	"time"
)

// TestResendOnline: a charger whose state comes back online gets every
// unanswered command again, with its own cmd_id, deadline and limit,
// whatever the session's flags; an answered one is not sent again.
func TestResendOnline(t *testing.T) {
	t.Run("start, never seen offline", func(t *testing.T) {
		b := sessionIn(t, UserConfirmed)
		r := b.apply(Event{Type: EvChargerOnline, By: ByCharger})
		start := lastEffect(t, r, EffSendStart)
		if start.CmdID != b.s.StartCmdID || start.Reason != ReasonResend || !start.Deadline.Equal(b.s.StartSentAt.Add(b.m.Config().StartTimeout)) ||
			start.MaxEnergyWh != b.s.MaxEnergyWh {
			t.Fatalf("re-sent start %+v", start)
		}
		if ok, why := b.m.Wants(b.s, start, b.at); !ok {
			t.Fatalf("the re-sent start is not wanted: %s", why)
		}
		b.apply(Event{Type: EvStartAccepted, By: ByCharger, CmdID: b.s.StartCmdID})
		if r, err := b.m.Apply(b.s, Event{Type: EvChargerOnline, By: ByCharger, At: b.tick(1)}); err != nil || r.Changed {
			t.Fatalf("online after the answer: changed=%v err=%v effects %v", r.Changed, err, effectKinds(r.Effects))
		}
	})
	t.Run("stop, flagged offline", func(t *testing.T) {
		b := sessionIn(t, Stopping)
		b.apply(Event{Type: EvChargerOffline, By: ByCharger})
		r := b.apply(Event{Type: EvChargerOnline, By: ByCharger})
		stop := lastEffect(t, r, EffSendStop)
		if stop.CmdID != StopCmdID(b.s.ID, b.s.StopCount) || stop.Reason != ReasonResend || b.s.HasFlag(FlagChargerOffline) {
			t.Fatalf("re-sent stop %+v, flags %v", stop, b.s.Flags)
		}
	})
}

// TestStopResendBound: a stop the charger never answers is wanted while the
// session runs, and once it is over for StopResendFor after it was asked.
func TestStopResendBound(t *testing.T) {
	b := sessionIn(t, Charging)
	r := b.apply(Event{Type: EvClose, By: Operator("alice"), Reason: "stuck"}) // nothing delivered: cancelled, stop sent
	stop := lastEffect(t, r, EffSendStop)
	if !b.s.State.Terminal() {
		t.Fatalf("state %s", b.s.State)
	}
	if ok, why := b.m.Wants(b.s, stop, b.at.Add(StopResendFor-time.Minute)); !ok {
		t.Fatalf("stop not wanted within the bound: %s", why)
	}
	if ok, _ := b.m.Wants(b.s, stop, b.at.Add(StopResendFor+time.Minute)); ok {
		t.Fatal("stop still wanted a day after a finished session asked for it")
	}
}
