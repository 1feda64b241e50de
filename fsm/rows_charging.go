package fsm

import (
	"fmt"
	"slices"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// Charging: meter samples, the charger's presence, and the end of charging
// however it becomes known (the charger's `ended`, the stop timeout, the
// offline grace, an operator's close).

var (
	endKnown       = guardNot("the end is known", "the end is not known yet", func(st *step) bool { return st.s.EndKnown })
	pendingEnd     = guardNot("an `ended` waits for `started`", "no `ended` waits", func(st *step) bool { return st.s.PendingEnd != nil })
	flaggedOffline = guardNot("the charger is flagged offline", "the charger is not flagged offline", func(st *step) bool { return st.s.HasFlag(FlagChargerOffline) })
	// A charger back from a reboot may have lost the session: the grace
	// keeps running until its queued `ended` or a meter sample arrives.
	rebootedWhileCharging = guardNot("it rebooted after the start was sent", "it did not reboot after the start was sent", func(st *step) bool {
		return st.e.Reason == ReasonReboot && st.s.State != UserConfirmed
	})
	freshSample = guard("a new sample", func(st *step) bool { return st.e.Seq == 0 || st.e.Seq > st.s.LastSeq })
	reachesCap  = guard("the spending cap is reached", func(st *step) bool {
		sm, s := st.meterSample(), &st.s
		return !sm.backwards && sm.err == nil && s.MaxAmountFen > 0 && s.Tariff.Price(sm.split, 0).TotalFen >= s.MaxAmountFen
	})
	billable = guardNot("there is something to bill", "nothing to bill (no energy, or under a fen)", func(st *step) bool {
		en := st.end()
		return en.err != nil || en.bill.TotalFen > 0
	})
)

// chargerTime returns the charger's time when it is credible: not more than
// the tolerance ahead of our receive time and not before `notBefore`.
// Otherwise it returns our receive time and why the charger's was not taken
// (skew applies it).
func (st *step) chargerTime(notBefore time.Time) (time.Time, string) {
	ct, at := st.e.ChargerTime, st.e.At
	switch {
	case ct.IsZero():
		return at, ""
	case ct.After(at.Add(st.m.cfg.ClockTolerance)):
		return at, fmt.Sprintf("%s time %s is ahead of receive time %s", st.e.Type, ct.Format(time.RFC3339), at.Format(time.RFC3339))
	case ct.After(at):
		// Within the tolerance, but nothing happens after we heard of it.
		return at, ""
	case !notBefore.IsZero() && ct.Before(notBefore.Add(-st.m.cfg.ClockTolerance)):
		return maxTime(at, notBefore), fmt.Sprintf("%s time %s is before %s", st.e.Type, ct.Format(time.RFC3339), notBefore.Format(time.RFC3339))
	case ct.Before(notBefore):
		return notBefore, "" // within tolerance: keep the order of events
	}
	return ct, ""
}

// skew flags clock_skew for why (nothing when why is empty).
func (st *step) skew(why string) {
	if why == "" {
		return
	}
	st.flag(FlagClockSkew)
	st.anomaly("clock_skew: " + why)
}

// sample is what a meter event would do, computed once for the guards and
// the action.
type sample struct {
	at        time.Time
	skew      string
	backwards bool
	split     money.Split
	err       error
}

func (st *step) meterSample() *sample {
	if st.sample != nil {
		return st.sample
	}
	s, e := &st.s, st.e
	sm := &sample{}
	sm.at, sm.skew = st.chargerTime(s.LastMeterAt)
	if e.MeterWh < s.LastMeterWh {
		sm.backwards = true
	} else {
		sm.split, sm.err = s.Tariff.Add(s.Split, s.LastMeterAt, s.LastMeterWh, sm.at, e.MeterWh)
	}
	st.sample = sm
	return sm
}

var doMeter = action("add the energy to the tariff periods", func(st *step) error { return st.meter() })

var doCapStop = action("add the energy; send stop; arm the stop timeout", func(st *step) error {
	if err := st.meter(); err != nil {
		return err
	}
	st.s.StopBy = st.e.By
	st.note("spending cap reached")
	st.sendStop()
	st.arm(TimerStop, st.e.At.Add(st.m.cfg.StopTimeout))
	return nil
})

func (st *step) meter() error {
	s, e := &st.s, st.e
	s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
	if e.Seq != 0 {
		s.LastSeq = e.Seq
	}
	if s.HasFlag(FlagChargerOffline) {
		st.backOnline() // metering this session: evidently alive
	}
	sm := st.meterSample()
	st.skew(sm.skew)
	if sm.backwards {
		st.flag(FlagMeterAnomaly)
		st.anomaly(fmt.Sprintf("meter register went backwards: %d after %d", e.MeterWh, s.LastMeterWh))
		return nil
	}
	if sm.err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptSession, sm.err)
	}
	s.Split, s.LastMeterWh, s.LastMeterAt = sm.split, e.MeterWh, sm.at
	return nil
}

var doEarlyEnd = action("keep the `ended` until `started` arrives", func(st *step) error {
	s, e := &st.s, st.e
	s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
	st.anomaly("ended arrived before started")
	s.PendingEnd = &PendingEnd{At: e.ChargerTime, MeterWh: e.MeterWh, Reason: e.Reason}
	if s.PendingEnd.At.IsZero() || s.PendingEnd.At.After(e.At.Add(st.m.cfg.ClockTolerance)) {
		s.PendingEnd.At = e.At
	}
	return nil
})

var doOffline = action("flag charger_offline; arm the offline grace once charging", func(st *step) error {
	st.flag(FlagChargerOffline)
	if st.s.State != UserConfirmed { // before `started` the start timeout decides
		st.arm(TimerOffline, st.e.At.Add(st.m.cfg.OfflineGrace))
	}
	return nil
})

var doOnline = action("clear charger_offline; disarm the grace; send unanswered commands again", func(st *step) error {
	st.s.LastHeardAt = maxTime(st.s.LastHeardAt, st.e.At)
	st.backOnline()
	st.resendUnanswered()
	return nil
})

// backOnline clears charger_offline and its grace.
func (st *step) backOnline() {
	st.s.Flags = slices.DeleteFunc(st.s.Flags, func(f Flag) bool { return f == FlagChargerOffline })
	st.disarm(TimerOffline)
	st.res.Changed = true
}

// ending is the end of charging as the input makes it known, and its bill,
// computed once for the guards (billable) and the actions.
type ending struct {
	at       time.Time
	meterWh  int64
	reason   string
	measured bool // false: our estimate (stop timeout, offline grace, close)
	skew     string
	below    bool // the end register is below the last sample
	split    money.Split
	energy   int64
	bill     money.Bill
	err      error
}

// end returns the ending the current input makes known.
func (st *step) end() *ending {
	if st.ending != nil {
		return st.ending
	}
	s, e := &st.s, st.e
	switch e.Type {
	case EvEnded:
		at, skew := st.chargerTime(s.StartedAt)
		st.ending = st.endingAt(at, e.MeterWh, e.Reason, true)
		st.ending.skew = skew
	case EvClose:
		st.ending = st.endingAt(st.lastHeard(), s.LastMeterWh, "closed_by_operator: "+e.Reason, false)
	default: // a timer: the stop timeout or the offline grace
		reason := "charger_offline"
		if t, ok := st.timer(); ok && t.Kind == TimerStop {
			reason = "stop_timeout"
		}
		st.ending = st.endingAt(st.lastHeard(), s.LastMeterWh, reason, false)
	}
	return st.ending
}

// endingAt bills an end at `at` with register meterWh, without changing
// the session.
func (st *step) endingAt(at time.Time, meterWh int64, reason string, measured bool) *ending {
	s := &st.s
	en := &ending{at: maxTime(at, s.StartedAt), meterWh: meterWh, reason: reason, measured: measured, split: s.Split}
	en.energy = meterWh - s.StartMeterWh
	if meterWh >= s.LastMeterWh {
		en.split, en.err = s.Tariff.Add(s.Split, s.LastMeterAt, s.LastMeterWh, maxTime(en.at, s.LastMeterAt), meterWh)
	} else {
		// The final register is below what the samples showed: bill what
		// the credible samples measured and let an operator look.
		en.below = true
		en.energy = s.Split.Total()
	}
	if en.energy > 0 && en.err == nil {
		en.bill = s.Tariff.Price(en.split, s.MaxAmountFen)
	}
	return en
}

// fixEnd records the end of charging. An estimated end means the charger
// may still be delivering: it must be told to stop, whatever the bill.
func (st *step) fixEnd() error {
	s, en := &st.s, st.end()
	if en.err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptSession, en.err)
	}
	st.skew(en.skew)
	if !en.measured && s.StopCount == 0 {
		st.sendStop()
	}
	if en.below {
		st.flag(FlagMeterAnomaly)
		st.anomaly(fmt.Sprintf("end register %d below last sample %d", en.meterWh, s.LastMeterWh))
	}
	s.Split = en.split
	s.EndKnown = true
	s.EndedAt = en.at
	s.EndMeterWh = en.meterWh
	s.EndReason = en.reason
	s.LastMeterWh = max(s.LastMeterWh, en.meterWh)
	s.EnergyWh = max(en.energy, 0)
	st.note(en.reason)
	return nil
}

// billEnd fixes the end and asks for complete with the bill.
func (st *step) billEnd() error {
	if err := st.fixEnd(); err != nil {
		return err
	}
	s, bill := &st.s, st.end().bill
	s.AmountFen, s.Lines = bill.TotalFen, bill.Lines
	if bill.Capped {
		st.flag(FlagAmountCapped)
	}
	st.disarm(TimerStop)
	st.disarm(TimerOffline)
	s.EndTime = st.endTime(s.EndedAt)
	s.CompleteSentAt = st.e.At
	eff := st.effect(EffCompleteOrder)
	eff.OutOrderNo = s.OutOrderNo
	eff.AmountFen = s.AmountFen
	eff.Lines = s.Lines
	eff.StartTime = s.StartedAt
	eff.EndTime = s.EndTime
	// Never call before end_time (a session shorter than a second ends a
	// second after its start, which may still be ahead of this event).
	eff.DueAt = maxTime(eff.DueAt, s.EndTime)
	return nil
}

// cancelEnd fixes an end with nothing to collect (Pay Score cannot complete
// an order for 0.00) and cancels.
func (st *step) cancelEnd() error {
	if err := st.fixEnd(); err != nil {
		return err
	}
	if st.s.CancelReason == "" {
		st.s.CancelReason = ReasonNoEnergy
	}
	st.enterCancelled()
	return nil
}

var doBill = action("bill the energy; ask for complete", func(st *step) error {
	st.s.LastHeardAt = maxTime(st.s.LastHeardAt, st.e.At)
	return st.billEnd()
})

var doNoEnergy = action("cancel (no_energy)", func(st *step) error {
	st.s.LastHeardAt = maxTime(st.s.LastHeardAt, st.e.At)
	return st.cancelEnd()
})

// endTime clamps the measured stop time so it is after the start and not
// after the moment complete is asked for (invariant 3); the engine clamps
// again at the moment of the call.
func (st *step) endTime(ended time.Time) time.Time {
	t := ended.Truncate(time.Second)
	if hi := st.e.At.Add(-st.m.cfg.EndTimeBeforeEvent).Truncate(time.Second); t.After(hi) {
		t = hi
	}
	if lo := st.s.StartedAt.Truncate(time.Second).Add(time.Second); t.Before(lo) {
		t = lo
	}
	return t
}

// lastHeard is the end we estimate when the charger did not say: its last
// sample (or its start).
func (st *step) lastHeard() time.Time {
	s := &st.s
	t := maxTime(s.LastMeterAt, s.StartedAt)
	if t.IsZero() {
		t = st.e.At
	}
	return t
}
