package fsm

// Stop, cancel and close: the user or an operator ending a session, and the
// charger's answers to our stops.

var answersStop = guard("answers a stop not yet answered", func(st *step) bool {
	return st.s.stopNumber(st.e.CmdID) > st.s.StopsAnswered
})

var doStop = action("send stop; arm the stop timeout", func(st *step) error {
	s, e := &st.s, st.e
	s.StopBy = e.By
	st.note(e.Reason)
	st.sendStop()
	st.arm(TimerStop, e.At.Add(st.m.cfg.StopTimeout))
	return nil
})

var doStopAnswered = action("record that the charger answered the stop", func(st *step) error {
	st.s.StopsAnswered = st.s.stopNumber(st.e.CmdID)
	return nil
})

var doStopRejected = action("record the answer; report it", func(st *step) error {
	st.s.StopsAnswered = st.s.stopNumber(st.e.CmdID)
	st.anomaly("charger rejected stop " + st.e.CmdID + ": " + st.e.Reason)
	return nil
})

var doCancel = action("cancel (user_cancelled)", func(st *step) error {
	st.s.CancelReason = ReasonUserCancelled
	st.note(st.e.Reason)
	st.enterCancelled()
	return nil
})

// An operator ending a stuck session by hand: billed for what was measured,
// or cancelled if nothing was.

var doCloseUnstarted = action("flag closed_by_operator; cancel", func(st *step) error {
	st.flag(FlagClosedByOperator)
	st.s.CancelReason = ReasonClosedByOperator
	st.note(st.e.Reason)
	st.enterCancelled()
	return nil
})

var doCloseBilled = action("flag closed_by_operator; end at the last sample; send stop; ask for complete", func(st *step) error {
	st.flag(FlagClosedByOperator)
	return st.billEnd()
})

var doCloseNothing = action("flag closed_by_operator; send stop; cancel", func(st *step) error {
	st.flag(FlagClosedByOperator)
	st.s.CancelReason = ReasonClosedByOperator
	return st.cancelEnd()
})
