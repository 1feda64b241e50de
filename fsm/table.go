package fsm

import (
	"fmt"
	"slices"
	"strings"
)

// Stay is the target of a row that changes the record but not the state (a
// meter sample, a refund asked for): no history entry is written.
const Stay State = ""

// Row is one row of the machine's table (docs/contract.md §1: "exactly one
// place decides transitions"). It answers input event On in any of the
// states Src: if its guard When holds, the machine moves to Dst through
// looplab/fsm and runs Do. Rows of one event are tried in table order; the
// first whose source and guard match fires. Name is the row's name: the
// history's `event` and, with On, the looplab event.
type Row struct {
	On   EventType
	Name string
	Src  []State
	Dst  State  // Stay: the state does not change
	When Guard  // zero: always
	Do   Action // zero: nothing beyond the transition
}

// Guard is a fact about the session and the event that picks between the
// rows of one event (or decides an Otherwise). It is pure: it reads the
// session and the event and changes nothing.
type Guard struct {
	Doc  string
	Not  string // the guard's negation in words ("" : "not " + Doc)
	test func(*step) bool
}

func (g Guard) holds(st *step) bool { return g.test == nil || g.test(st) }

func guard(doc string, test func(*step) bool) Guard { return Guard{Doc: doc, test: test} }

// guardNot is a guard with the words of its negation.
func guardNot(doc, notDoc string, test func(*step) bool) Guard {
	return Guard{Doc: doc, Not: notDoc, test: test}
}

// all holds when every one of gs holds.
func all(gs ...Guard) Guard {
	docs := make([]string, len(gs))
	for i, g := range gs {
		docs[i] = g.Doc
	}
	return guard(strings.Join(docs, " and "), func(st *step) bool {
		for _, g := range gs {
			if !g.holds(st) {
				return false
			}
		}
		return true
	})
}

// not holds when g does not.
func not(g Guard) Guard {
	doc := g.Not
	if doc == "" {
		doc = "not " + g.Doc
	}
	return guardNot(doc, g.Doc, func(st *step) bool { return !g.holds(st) })
}

// Action is what a row does once it fired: it changes the record and asks
// for effects. Doc says it in a few words for docs/state-machine.md.
type Action struct {
	Doc string
	run func(*step) error
}

func action(doc string, run func(*step) error) Action { return Action{Doc: doc, run: run} }

// EventRule declares what an event does besides its rows: who alone may send
// it (By; anyone else is refused with NotBy, in every state), what every
// row of it does first (Before, before the transition), and what happens
// when no row applies (Otherwise; the first entry that matches decides; none
// matching refuses "<event> is not allowed in <state>").
type EventRule struct {
	On        EventType
	By        Guard
	NotBy     string
	Before    Action
	Otherwise []Otherwise
}

// Otherwise is one answer to an event no row applies to: refused (a 409: the
// caller asked for something the session cannot do) or ignored (a late or
// repeated input: a no-op), in the states In (nil: any) when When holds.
// Anomaly, when set, is also reported for an operator. Reason and Anomaly
// may name {state}, {deduction}, {timer}, {refund}, {amount}, {left} and
// {keyed} (the refund asked for with the event's key).
type Otherwise struct {
	In      []State
	When    Guard
	Refuse  bool
	Reason  string
	Anomaly string
}

// Table is the machine's definition: every row and every event's rule.
type Table struct {
	Rows   []Row
	Events []EventRule
}

// Clone returns a copy whose slices can be edited without touching t.
func (t Table) Clone() Table {
	c := Table{Rows: slices.Clone(t.Rows), Events: slices.Clone(t.Events)}
	for i := range c.Rows {
		c.Rows[i].Src = slices.Clone(c.Rows[i].Src)
	}
	for i := range c.Events {
		c.Events[i].Otherwise = slices.Clone(c.Events[i].Otherwise)
	}
	return c
}

// Row returns a pointer to the row of event on named name, or nil: for
// editing a cloned table.
func (t Table) Row(on EventType, name string) *Row {
	for i := range t.Rows {
		if t.Rows[i].On == on && t.Rows[i].Name == name {
			return &t.Rows[i]
		}
	}
	return nil
}

// Without returns t without the row of event on named name.
func (t Table) Without(on EventType, name string) Table {
	t = t.Clone()
	t.Rows = slices.DeleteFunc(t.Rows, func(r Row) bool { return r.On == on && r.Name == name })
	return t
}

// validate checks the table is one the machine can run: known events and
// states, a source for every row, one row per (event, name).
func (t Table) validate() error {
	seen := map[string]bool{}
	for _, r := range t.Rows {
		if !slices.Contains(EventTypes, r.On) {
			return fmt.Errorf("table: row %q answers unknown event %q", r.Name, r.On)
		}
		if r.Name == "" || len(r.Src) == 0 {
			return fmt.Errorf("table: a %s row without a name or a source", r.On)
		}
		for _, s := range r.Src {
			if !s.Valid() {
				return fmt.Errorf("table: row %s/%s from unknown state %q", r.On, r.Name, s)
			}
		}
		if r.Dst != Stay && !r.Dst.Valid() {
			return fmt.Errorf("table: row %s/%s to unknown state %q", r.On, r.Name, r.Dst)
		}
		if seen[r.key()] {
			return fmt.Errorf("table: two %s rows named %q", r.On, r.Name)
		}
		seen[r.key()] = true
	}
	ev := map[EventType]bool{}
	for _, e := range t.Events {
		if !slices.Contains(EventTypes, e.On) || ev[e.On] {
			return fmt.Errorf("table: rule for unknown or repeated event %q", e.On)
		}
		ev[e.On] = true
	}
	return nil
}

// key is the row's looplab event name: unique in a valid table.
func (r *Row) key() string { return string(r.On) + "/" + r.Name }

// The states a session can still be changed in by its own inputs.
var nonTerminal = []State{Created, UserConfirmed, Charging, Stopping, Completed, Deducting}

// DefaultTable returns the session machine of docs/contract.md §1. Each call
// returns a new copy.
func DefaultTable() Table {
	return Table{Rows: []Row{
		// Confirmation and start (rows_start.go).
		{On: EvConfirm, Name: "confirm", Src: []State{Created}, Dst: UserConfirmed, Do: doConfirm},
		{On: EvStartAccepted, Name: "start_accepted", Src: []State{UserConfirmed}, Dst: Stay, When: all(answersStart, not(startAnswered)), Do: doStartAnswered},
		{On: EvStartRejected, Name: "start_rejected", Src: []State{UserConfirmed}, Dst: Cancelled, When: answersStart, Do: doStartRejected},
		{On: EvStarted, Name: "started", Src: []State{UserConfirmed}, Dst: Charging, Do: doStarted},
		{On: EvStarted, Name: "late_start", Src: []State{Cancelled}, Dst: Stay, When: all(startSent, not(hasStarted)), Do: doLateStart},

		// Charging, metering and the end (rows_charging.go).
		{On: EvMeter, Name: "stop", Src: []State{Charging}, Dst: Stopping, When: all(not(endKnown), freshSample, reachesCap), Do: doCapStop},
		{On: EvMeter, Name: "meter", Src: []State{Charging, Stopping}, Dst: Stay, When: all(not(endKnown), freshSample), Do: doMeter},
		{On: EvEnded, Name: "ended", Src: []State{Charging, Stopping}, Dst: Stopping, When: all(not(endKnown), billable), Do: doBill},
		{On: EvEnded, Name: "no_energy", Src: []State{Charging, Stopping}, Dst: Cancelled, When: all(not(endKnown), not(billable)), Do: doNoEnergy},
		{On: EvEnded, Name: "early_end", Src: []State{UserConfirmed}, Dst: Stay, When: not(pendingEnd), Do: doEarlyEnd},
		{On: EvChargerOffline, Name: "offline", Src: []State{UserConfirmed, Charging, Stopping}, Dst: Stay, When: all(not(endKnown), not(flaggedOffline)), Do: doOffline},
		{On: EvChargerOnline, Name: "online", Src: nonTerminal, Dst: Stay, When: all(flaggedOffline, not(rebootedWhileCharging)), Do: doOnline},
		{On: EvChargerOnline, Name: "resend", Src: nonTerminal, Dst: Stay, When: hasUnanswered, Do: doResend},

		// Stop, cancel, close (rows_stop.go).
		{On: EvStop, Name: "stop", Src: []State{Charging}, Dst: Stopping, Do: doStop},
		{On: EvStopAccepted, Name: "stop_accepted", Src: States, Dst: Stay, When: answersStop, Do: doStopAnswered},
		{On: EvStopRejected, Name: "stop_rejected", Src: States, Dst: Stay, When: answersStop, Do: doStopRejected},
		{On: EvCancel, Name: "cancel", Src: []State{Created, UserConfirmed}, Dst: Cancelled, Do: doCancel},
		{On: EvClose, Name: "close", Src: []State{Created, UserConfirmed}, Dst: Cancelled, Do: doCloseUnstarted},
		{On: EvClose, Name: "close_charging", Src: []State{Charging, Stopping}, Dst: Stopping, When: all(not(endKnown), billable), Do: doCloseBilled},
		{On: EvClose, Name: "no_energy", Src: []State{Charging, Stopping}, Dst: Cancelled, When: all(not(endKnown), not(billable)), Do: doCloseNothing},

		// The Pay Score order and the payment (rows_payment.go).
		{On: EvOrderClosed, Name: "order_closed", Src: []State{Created, UserConfirmed}, Dst: Cancelled, Do: doOrderClosed},
		{On: EvOrderCompleted, Name: "order_completed", Src: []State{Stopping}, Dst: Completed, When: completeAsked, Do: doOrderCompleted},
		{On: EvDeductionRegistered, Name: "deduction_registered", Src: []State{Completed}, Dst: Deducting, When: registrationAwaited, Do: doRegistered},
		{On: EvDebitSent, Name: "debit_sent", Src: []State{Deducting}, Dst: Stay, When: newDebitAnswer, Do: doDebitSent},
		{On: EvDebitFailed, Name: "debit_failed", Src: []State{Deducting}, Dst: Completed, When: currentDeduction, Do: doDeductionFailed},
		{On: EvDebitFailed, Name: "registration_failed", Src: []State{Completed}, Dst: Stay, When: all(currentDeduction, registrationAsked), Do: doDeductionFailed},
		{On: EvPaid, Name: "paid", Src: []State{Stopping, Completed, Deducting}, Dst: Paid, When: completeAsked, Do: doPaid},
		{On: EvDeductNow, Name: "deduct_now", Src: []State{Completed}, Dst: Stay, When: not(deductionInFlight), Do: doDeductNow},

		// Refunds (rows_refund.go).
		{On: EvRefund, Name: "refund", Src: []State{Paid}, Dst: Stay, When: all(not(keyUsed), withinRefundable), Do: doRefund},
		{On: EvRefundSucceeded, Name: "refunded", Src: []State{Paid}, Dst: Refunded, When: all(pendingRefund, refundsAll), Do: doRefundSucceeded},
		{On: EvRefundSucceeded, Name: "refund_succeeded", Src: []State{Paid, Refunded}, Dst: Stay, When: pendingRefund, Do: doRefundSucceeded},
		{On: EvRefundFailed, Name: "refund_failed", Src: []State{Paid, Refunded}, Dst: Stay, When: pendingRefund, Do: doRefundFailed},

		// Timers (rows_timers.go).
		{On: EvTimer, Name: "confirm_timeout", Src: []State{Created}, Dst: Cancelled, When: timerIs(TimerConfirm), Do: doConfirmTimeout},
		{On: EvTimer, Name: "start_timeout", Src: []State{UserConfirmed}, Dst: Cancelled, When: timerIs(TimerStart), Do: doStartTimeout},
		{On: EvTimer, Name: "stop_timeout", Src: []State{Stopping}, Dst: Stopping, When: all(timerIs(TimerStop), not(endKnown), billable), Do: doStopTimeout},
		{On: EvTimer, Name: "offline_grace", Src: []State{Charging, Stopping}, Dst: Stopping, When: all(timerIs(TimerOffline), not(endKnown), billable), Do: doOfflineGrace},
		{On: EvTimer, Name: "no_energy", Src: []State{Charging, Stopping}, Dst: Cancelled, When: all(endingTimer, not(endKnown), not(billable)), Do: doTimerNoEnergy},
		{On: EvTimer, Name: "debit_retry", Src: []State{Completed}, Dst: Stay, When: all(timerIs(TimerDebitRetry), not(deductionInFlight)), Do: doDebitRetry},
		{On: EvTimer, Name: "poll", Src: []State{Created, Deducting}, Dst: Stay, When: timerIs(TimerPoll), Do: doPoll},
		{On: EvTimer, Name: "timer_spent", Src: States, Dst: Stay, When: timerArmed, Do: doTimerSpent},

		// The daily reconciliation (rows_reconcile.go).
		{On: EvReconcileMismatch, Name: "reconcile_mismatch", Src: States, Dst: Stay, When: not(flaggedMismatch), Do: doReconcileMismatch},
	}, Events: []EventRule{
		{On: EvConfirm, By: byPayScore, NotBy: "USER_CONFIRM must come from a verified Pay Score source", Otherwise: []Otherwise{
			{When: confirmed, Reason: "already confirmed"},
			{Reason: "session already {state}"}}},
		{On: EvStartAccepted, Otherwise: []Otherwise{{Reason: "no start waiting for this answer"}}},
		{On: EvStartRejected, Otherwise: []Otherwise{{Reason: "no start waiting for this answer"}}},
		{On: EvStarted, Otherwise: []Otherwise{
			{When: hasStarted, Reason: "already started"},
			{Reason: "started in {state}", Anomaly: "charger started a session in {state}"}}},
		{On: EvMeter, Otherwise: []Otherwise{
			{When: endKnown, Reason: "meter sample outside charging"},
			{In: []State{Charging, Stopping}, Reason: "duplicate or late meter sample"},
			{Reason: "meter sample outside charging"}}},
		{On: EvEnded, Otherwise: []Otherwise{
			{When: endKnown, Reason: "already ended"},
			{In: []State{UserConfirmed}, Reason: "ended already waiting for started"},
			{Reason: "ended in {state}", Anomaly: "ended for a session in {state}"}}},
		{On: EvChargerOffline, Otherwise: []Otherwise{
			{In: []State{UserConfirmed, Charging, Stopping}, When: not(endKnown), Reason: "already offline"},
			{Reason: "the charger's presence does not matter in {state}"}}},
		{On: EvChargerOnline, Otherwise: []Otherwise{
			{In: []State{Paid, Cancelled, Refunded}, Reason: "not offline"},
			{When: not(flaggedOffline), Reason: "not offline and every command answered"},
			{Reason: "rebooted: waiting for its queued end or a meter sample"}}},
		{On: EvStop, Otherwise: []Otherwise{
			{In: []State{Stopping}, Reason: "already stopping"},
			{In: []State{Created, UserConfirmed}, Refuse: true, Reason: "not charging yet: cancel the session instead"},
			{Refuse: true, Reason: "the charging has already ended"}}},
		{On: EvStopAccepted, Otherwise: []Otherwise{{Reason: "no stop waiting for this answer"}}},
		{On: EvStopRejected, Otherwise: []Otherwise{{Reason: "no stop waiting for this answer"}}},
		{On: EvCancel, Otherwise: []Otherwise{
			{In: []State{Cancelled}, Reason: "already cancelled"},
			{Refuse: true, Reason: "charging has started: stop the session instead"}}},
		{On: EvClose, By: byOperator, NotBy: "only an operator can close a session", Otherwise: []Otherwise{
			{In: []State{Stopping}, Refuse: true, Reason: "the end is known and completion is in progress"},
			{Refuse: true, Reason: "the session is finished"}}},
		{On: EvOrderClosed, Otherwise: []Otherwise{{Reason: "order closed reported in {state}"}}},
		{On: EvOrderCompleted, Otherwise: []Otherwise{
			{In: []State{Stopping}, Refuse: true, Reason: "complete was never asked for"},
			{When: orderCompleted, Reason: "already completed"},
			{Reason: "completion reported in {state}"}}},
		{On: EvDeductionRegistered, Otherwise: []Otherwise{{Reason: "no registration of deduction {deduction} is awaited"}}},
		{On: EvDebitSent, Otherwise: []Otherwise{{Reason: "no debit of deduction {deduction} to record"}}},
		{On: EvDebitFailed, Otherwise: []Otherwise{
			{In: []State{Completed}, When: currentDeduction, Reason: "deduction already failed"},
			{Reason: "deduction {deduction} is not the current one"}}},
		{On: EvPaid, By: byPayScore, NotBy: "payment must come from a verified Pay Score source", Otherwise: []Otherwise{
			{In: []State{Paid, Refunded}, Reason: "already paid"},
			{Reason: "payment reported in {state}", Anomaly: "payment reported for a session in {state}"}}},
		{On: EvDeductNow, Otherwise: []Otherwise{
			{In: []State{Completed, Deducting}, Refuse: true, Reason: "a deduction is already in flight"},
			{Refuse: true, Reason: "nothing to debit in {state}"}}},
		{On: EvRefund, Otherwise: []Otherwise{
			{When: keyOtherRefund, Refuse: true, Reason: "this Idempotency-Key was used for refund {keyed}, of another amount or reason"},
			{When: keyUsed, Reason: "refund {keyed} was already asked for with this key"},
			{In: []State{Paid}, Refuse: true, Reason: "refund {amount} exceeds the {left} left to refund"},
			{Refuse: true, Reason: "only a paid session can be refunded"}}},
		{On: EvRefundSucceeded, Otherwise: []Otherwise{{Reason: "no pending refund {refund}"}}},
		{On: EvRefundFailed, Otherwise: []Otherwise{{Reason: "no pending refund {refund}"}}},
		{On: EvTimer, Before: doSpendTimer, Otherwise: []Otherwise{{Reason: "stale timer {timer}"}}},
		{On: EvReconcileMismatch, By: byReconciler, NotBy: "a reconciliation difference comes from Huifu's bill or an operator",
			Otherwise: []Otherwise{{Reason: "already flagged reconcile_mismatch"}}},
	}}
}

// Who may send an event.
var (
	byPayScore = guard("from a verified Pay Score source", func(st *step) bool { return st.e.By == ByPayScore })
	byOperator = guard("from an operator", func(st *step) bool { return st.e.By.IsOperator() })
)
