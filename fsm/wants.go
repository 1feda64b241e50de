package fsm

import "time"

// StopResendFor bounds the re-sending of a stop the charger never answered
// once its session is over: past the longest session a broker keeps for an
// offline charger (24 h), the charger is gone, and a charger that comes back
// later has no running session of this one after its reboot.
const StopResendFor = 24 * time.Hour

// Wants reports whether session s still wants effect eff performed at now,
// and when not, why. It is the outbox workers' one question, asked with the
// record they have just loaded, so an entry performed late or twice (after a
// lease expiry) does no harm; the answers are the machine's own guards:
//
//   - send_start: while user_confirmed with this cmd_id, unanswered, and not
//     after the command's deadline (invariant 1; a stale start never reaches
//     a charger: the start timeout settles the session);
//   - send_stop: until the charger has answered this stop (or, once the
//     session is over, for StopResendFor after the stop was asked);
//   - cancel_order: while cancelled;
//   - complete_order: while stopping and not yet completed;
//   - register_deduction: while this deduction's registration is awaited;
//   - debit: while deducting on this deduction (invariant 5);
//   - query_order: while the session is not terminal;
//   - refund: while that refund is pending;
//   - arm_timer: while the timer is armed (the machine ignores a stale one);
//   - disarm_timer: never (the store withdrew the timer at commit).
//
// Wants is pure: time is passed in.
func (m *Machine) Wants(s Session, eff Effect, now time.Time) (bool, string) {
	switch eff.Kind {
	case EffSendStart:
		switch {
		case s.State != UserConfirmed || s.ConfirmedAt.IsZero():
			return false, "the session is " + string(s.State)
		case s.StartCmdID != eff.CmdID:
			return false, "not the session's start"
		case !s.StartAnsweredAt.IsZero():
			return false, "the charger answered the start"
		case !eff.Deadline.IsZero() && now.After(eff.Deadline):
			return false, "past the start's deadline"
		}
	case EffSendStop:
		if n := s.stopNumber(eff.CmdID); n > 0 && n <= s.StopsAnswered {
			return false, "the charger answered the stop"
		}
		if s.State.Terminal() && !s.StopSentAt.IsZero() && now.Sub(s.StopSentAt) > StopResendFor {
			return false, "the charger has been silent since the stop for longer than any broker keeps its session"
		}
	case EffCancelOrder:
		if s.State != Cancelled {
			return false, "the session is " + string(s.State)
		}
	case EffCompleteOrder:
		switch {
		case s.State != Stopping:
			return false, "the session is " + string(s.State)
		case !s.CompletedAt.IsZero():
			return false, "already completed"
		}
	case EffRegisterDeduction:
		if s.State != Completed || !s.Payment.awaitsRegistration(eff.Deduction) {
			return false, "the registration of this deduction is not awaited"
		}
	case EffDebit:
		if s.State != Deducting || s.Payment.Debited != eff.Deduction {
			return false, "not the deduction being debited"
		}
	case EffQueryOrder:
		if s.State.Terminal() {
			return false, "the session is " + string(s.State)
		}
	case EffRefund:
		if r, ok := s.RefundByID(eff.RefundID); !ok || r.Status != RefundPending {
			return false, "the refund is not pending"
		}
	case EffArmTimer:
		if _, ok := s.TimerByID(eff.ID); !ok {
			return false, "the timer is not armed"
		}
	case EffDisarmTimer:
		return false, "the store withdrew the timer at commit"
	}
	return true, ""
}

// Unanswered returns the commands session s still wants and the charger has
// not answered, as the effects that sent them (same cmd_ids, so a charger
// that got them already answers again and does nothing twice): the start
// while it may still be acted on, and the latest stop. The engine re-sends
// them when the charger comes back online or keeps silent (docs/protocol.md).
func (m *Machine) Unanswered(s Session, now time.Time) []Effect {
	var out []Effect
	base := Effect{Session: s.ID, ChargerID: s.ChargerID, Connector: s.Connector, OutOrderNo: s.OutOrderNo, DueAt: now}
	if s.StartCmdID != "" {
		start := base
		start.ID, start.Kind, start.CmdID = s.StartCmdID, EffSendStart, s.StartCmdID
		start.Deadline, start.MaxEnergyWh = s.StartSentAt.Add(m.cfg.StartTimeout), s.MaxEnergyWh
		if ok, _ := m.Wants(s, start, now); ok {
			out = append(out, start)
		}
	}
	if s.StopCount > s.StopsAnswered {
		stop := base
		stop.Kind, stop.CmdID = EffSendStop, StopCmdID(s.ID, s.StopCount)
		stop.ID = stop.CmdID
		out = append(out, stop)
	}
	return out
}
