package fsm

import "testing"

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
