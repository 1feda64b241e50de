package fsm

import "slices"

// Timers: a timer is an outbox task with a due time; when it fires the
// machine takes it off the session's list (a timer not on the list is
// stale and ignored) and does what its row says.

var timerArmed = guard("the timer is armed", func(st *step) bool {
	_, ok := st.timer()
	return ok
})

// timerIs holds when the timer that fired is armed and of kind k.
func timerIs(k TimerKind) Guard {
	return guard("the "+string(k)+" timer fired", func(st *step) bool {
		t, ok := st.timer()
		return ok && t.Kind == k
	})
}

// endingTimer: a timer that ends the charging fired (the stop timeout of a
// stopping session, or the offline grace).
var endingTimer = guard("the stop timeout or the offline grace fired", func(st *step) bool {
	t, ok := st.timer()
	return ok && (t.Kind == TimerOffline || (t.Kind == TimerStop && st.s.State == Stopping))
})

// timer returns the armed timer the event names (once its row fired, the
// timer it took off the list).
func (st *step) timer() (Timer, bool) {
	if st.spent.ID != "" {
		return st.spent, true
	}
	i := slices.IndexFunc(st.s.Timers, func(t Timer) bool { return t.ID == st.e.TimerID })
	if i < 0 {
		return Timer{}, false
	}
	return st.s.Timers[i], true
}

// doSpendTimer takes the fired timer off the session's list before its row
// fires (so the transition does not disarm it as stale); st.spent keeps it.
var doSpendTimer = action("take the timer off the session", func(st *step) error {
	i := slices.IndexFunc(st.s.Timers, func(t Timer) bool { return t.ID == st.e.TimerID })
	if i >= 0 {
		st.spent = st.s.Timers[i]
		st.s.Timers = slices.Delete(st.s.Timers, i, i+1)
	}
	return nil
})

var doConfirmTimeout = action("cancel (confirm_timeout)", func(st *step) error {
	st.s.CancelReason = ReasonConfirmTimeout
	st.enterCancelled()
	return nil
})

var doStartTimeout = action("cancel (charger_never_started); send stop", func(st *step) error {
	s := &st.s
	if s.PendingEnd != nil {
		st.flag(FlagMeterAnomaly)
		st.anomaly("the charger ended a session whose start never arrived")
	}
	s.CancelReason = ReasonChargerNeverStarted
	st.enterCancelled()
	return nil
})

var doStopTimeout = action("flag stop_unconfirmed; end at the last sample; ask for complete", func(st *step) error {
	st.flag(FlagStopUnconfirmed)
	return st.billEnd()
})

var doOfflineGrace = action("end at the last sample; send stop; ask for complete", func(st *step) error {
	return st.billEnd()
})

var doTimerNoEnergy = action("end at the last sample; send stop; cancel (no_energy)", func(st *step) error {
	if st.spent.Kind == TimerStop {
		st.flag(FlagStopUnconfirmed)
	}
	return st.cancelEnd()
})

var doDebitRetry = action("register the next deduction", func(st *step) error {
	st.registerDeduction()
	return nil
})

var doPoll = action("query the order; re-arm the poll", func(st *step) error {
	eff := st.effect(EffQueryOrder)
	eff.OutOrderNo = st.s.OutOrderNo
	st.arm(TimerPoll, st.e.At.Add(st.m.cfg.PollInterval))
	return nil
})

var doTimerSpent = action("nothing more: the timer means nothing here any more", nil)

// timerStates says in which states each timer kind means something; a
// transition disarms the timers the new state has no use for.
var timerStates = map[TimerKind][]State{
	TimerConfirm:    {Created},
	TimerStart:      {UserConfirmed},
	TimerStop:       {Stopping},
	TimerOffline:    {Charging, Stopping},
	TimerDebitRetry: {Completed},
	TimerPoll:       {Created, Deducting},
}

func (st *step) disarmStale() {
	for i := 0; i < len(st.s.Timers); {
		t := st.s.Timers[i]
		if slices.Contains(timerStates[t.Kind], st.s.State) {
			i++
			continue
		}
		st.disarm(t.Kind)
	}
}
