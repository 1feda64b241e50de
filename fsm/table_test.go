package fsm

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	lfsm "github.com/looplab/fsm"
)

// Outcomes of one (state, event) pair.
const (
	refused = "refused" // *RefusedError, nothing changed
	ignored = "ignored" // no-op: Changed=false, Ignored set
	data    = "data"    // record changed, state unchanged, no history entry
)

// canonicalEvent builds the representative event of type typ for session s.
func canonicalEvent(s Session, typ EventType, at time.Time) Event {
	e := Event{Type: typ, At: at, By: ByCharger}
	switch typ {
	case EvConfirm, EvOrderCompleted, EvOrderClosed, EvDeductionRegistered, EvDebitFailed, EvDebitSent, EvPaid,
		EvRefundSucceeded, EvRefundFailed, EvReconcileMismatch:
		e.By = ByPayScore
	case EvStop, EvCancel:
		e.By = ByApp
	case EvClose, EvDeductNow, EvRefund:
		e.By = Operator("ops")
	case EvTimer:
		e.By = ByTimer
	}
	switch typ {
	case EvStartAccepted, EvStartRejected:
		e.CmdID = s.StartCmdID
		e.Reason = "busy"
	case EvStopAccepted, EvStopRejected:
		e.CmdID = StopCmdID(s.ID, s.StopCount)
	case EvStarted:
		e.ChargerTime, e.MeterWh = at, 1000
	case EvEnded:
		e.ChargerTime, e.MeterWh, e.Reason = at, 3500, "local"
	case EvMeter:
		e.ChargerTime, e.MeterWh, e.Seq = at, 2500, 99
	case EvOrderClosed:
		e.OrderState = "REVOKED"
	case EvDeductionRegistered:
		e.Deduction, e.OutTradeNo = max(s.Payment.Deductions, 1), "T9"
	case EvDebitFailed:
		e.Deduction, e.Reason = max(s.Payment.Deductions, 1), "insufficient balance"
	case EvDebitSent:
		e.Deduction, e.HfSeqID, e.ReqDate = max(s.Payment.Deductions, 1), "HF9", "20261126"
	case EvPaid:
		e.AmountFen = s.AmountFen
	case EvRefund:
		e.Key, e.AmountFen, e.Reason = "k2", 1, "goodwill"
	case EvRefundSucceeded, EvRefundFailed:
		e.RefundID = "r1"
	case EvTimer:
		e.TimerID = "stale-timer"
	case EvClose:
		e.Reason = "stuck"
	}
	return e
}

// expected is the outcome of every (event, state) pair: a state name for a
// transition (self-transitions included), or refused / ignored / data. The
// representative sessions are those of sessionIn: stopping has a stop sent
// and no end known; completed has registration attempt 1 in flight.
var expected = map[EventType]map[State]string{
	EvConfirm: {Created: "user_confirmed", UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	// The charger's answer to the start is recorded (an unanswered start is
	// sent again, docs/protocol.md).
	EvStartAccepted: {Created: ignored, UserConfirmed: data, Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvStartRejected: {Created: ignored, UserConfirmed: "cancelled", Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvStarted: {Created: ignored, UserConfirmed: "charging", Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvEnded: {Created: ignored, UserConfirmed: data, Charging: "stopping", Stopping: "stopping",
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvMeter: {Created: ignored, UserConfirmed: ignored, Charging: data, Stopping: data,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvStop: {Created: refused, UserConfirmed: refused, Charging: "stopping", Stopping: ignored,
		Completed: refused, Deducting: refused, Paid: refused, Cancelled: refused, Refunded: refused},
	// The representative sessions past charging have had one stop sent.
	EvStopAccepted: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: data,
		Completed: data, Deducting: data, Paid: data, Cancelled: ignored, Refunded: data},
	EvStopRejected: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: data,
		Completed: data, Deducting: data, Paid: data, Cancelled: ignored, Refunded: data},
	EvCancel: {Created: "cancelled", UserConfirmed: "cancelled", Charging: refused, Stopping: refused,
		Completed: refused, Deducting: refused, Paid: refused, Cancelled: ignored, Refunded: refused},
	// The representative charging session has delivered nothing yet, so an
	// operator's close cancels it; the stopping one has energy and is billed.
	EvClose: {Created: "cancelled", UserConfirmed: "cancelled", Charging: "cancelled", Stopping: "stopping",
		Completed: refused, Deducting: refused, Paid: refused, Cancelled: refused, Refunded: refused},
	EvChargerOffline: {Created: ignored, UserConfirmed: data, Charging: data, Stopping: data,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	// The representative user_confirmed session has an unanswered start,
	// those past charging an unanswered stop: a charger back online gets
	// them again (docs/protocol.md).
	EvChargerOnline: {Created: ignored, UserConfirmed: data, Charging: ignored, Stopping: data,
		Completed: data, Deducting: data, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvOrderCompleted: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: refused,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvOrderClosed: {Created: "cancelled", UserConfirmed: "cancelled", Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvDeductionRegistered: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: "deducting", Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvDebitSent: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: data, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvDebitFailed: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: data, Deducting: "completed", Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvPaid: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: "paid", Deducting: "paid", Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvDeductNow: {Created: refused, UserConfirmed: refused, Charging: refused, Stopping: refused,
		Completed: refused, Deducting: refused, Paid: refused, Cancelled: refused, Refunded: refused},
	EvRefund: {Created: refused, UserConfirmed: refused, Charging: refused, Stopping: refused,
		Completed: refused, Deducting: refused, Paid: data, Cancelled: refused, Refunded: refused},
	EvRefundSucceeded: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvRefundFailed: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvTimer: {Created: ignored, UserConfirmed: ignored, Charging: ignored, Stopping: ignored,
		Completed: ignored, Deducting: ignored, Paid: ignored, Cancelled: ignored, Refunded: ignored},
	EvReconcileMismatch: {Created: data, UserConfirmed: data, Charging: data, Stopping: data,
		Completed: data, Deducting: data, Paid: data, Cancelled: data, Refunded: data},
}

// TestEveryStateEventPair checks the outcome of every (state, event) pair,
// illegal ones included, in the manner of evcc's statusEvents tests.
func TestEveryStateEventPair(t *testing.T) {
	if len(expected) != len(EventTypes) {
		t.Fatalf("expected covers %d events, there are %d", len(expected), len(EventTypes))
	}
	for _, typ := range EventTypes {
		for _, st := range States {
			t.Run(fmt.Sprintf("%s/%s", st, typ), func(t *testing.T) {
				want, ok := expected[typ][st]
				if !ok {
					t.Fatalf("no expectation for (%s, %s)", st, typ)
				}
				b := sessionIn(t, st)
				before := b.s.Clone()
				e := canonicalEvent(b.s, typ, b.tick(time.Minute))
				r, err := b.m.Apply(b.s, e)
				if !reflect.DeepEqual(before, b.s) {
					t.Fatal("Apply changed the caller's session")
				}
				switch want {
				case refused:
					if !isRefused(err) {
						t.Fatalf("want refused, got err=%v result state=%s ignored=%q", err, r.Session.State, r.Ignored)
					}
					return
				case ignored:
					if err != nil || r.Changed || r.Ignored == "" || len(r.Effects) != 0 {
						t.Fatalf("want ignored, got err=%v changed=%v ignored=%q effects=%v", err, r.Changed, r.Ignored, effectKinds(r.Effects))
					}
					if !reflect.DeepEqual(r.Session, before) {
						t.Fatal("an ignored event changed the session")
					}
					return
				}
				if err != nil {
					t.Fatalf("want %s, got %v", want, err)
				}
				if !r.Changed {
					t.Fatalf("want %s, got no change (ignored %q)", want, r.Ignored)
				}
				if want == data {
					if r.Session.State != st || r.Transitioned() {
						t.Fatalf("want data-only change, got %s with history %v", r.Session.State, r.History)
					}
					return
				}
				if string(r.Session.State) != want {
					t.Fatalf("want %s, got %s", want, r.Session.State)
				}
				if !r.Transitioned() || r.History[len(r.History)-1].To != State(want) || r.History[0].From != st {
					t.Fatalf("history %+v does not record %s→%s", r.History, st, want)
				}
				isRow := slices.ContainsFunc(DefaultTable().Rows, func(row Row) bool { return row.Name == string(r.History[0].Event) })
				if !isRow || r.History[0].By != e.By || !r.History[0].At.Equal(e.At) {
					t.Fatalf("history entry %+v does not name event/source/time", r.History[0])
				}
			})
		}
	}
}

// TestTableMatchesLooplab checks that looplab allows every row from exactly
// its sources, and that every state but created is entered by some row.
func TestTableMatchesLooplab(t *testing.T) {
	table := DefaultTable()
	if err := table.validate(); err != nil {
		t.Fatal(err)
	}
	f := lfsm.NewFSM(string(Created), eventDescs(table), nil)
	for _, row := range table.Rows {
		for _, st := range States {
			f.SetState(string(st))
			if got, want := f.Can(row.key()), slices.Contains(row.Src, st); got != want {
				t.Errorf("%s from %s: looplab allows it %v, the row lists it %v", row.key(), st, got, want)
			}
		}
	}
	for _, st := range States {
		if !slices.ContainsFunc(table.Rows, func(r Row) bool { return r.Dst == st }) && st != Created {
			t.Errorf("state %s is never entered", st)
		}
	}
	for _, typ := range EventTypes {
		if !slices.ContainsFunc(table.Events, func(r EventRule) bool { return r.On == typ }) {
			t.Errorf("event %s has no rule", typ)
		}
	}
}

// TestTheTableDecides edits the table and watches the machine follow: a
// source added to a row, a row removed, a row's guard replaced.
func TestTheTableDecides(t *testing.T) {
	machine := func(tb Table) *Machine {
		m, err := NewWithTable(DefaultConfig(), tb)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// Stop is refused before charging ...
	b := sessionIn(t, UserConfirmed)
	stop := Event{Type: EvStop, At: b.tick(time.Second), By: ByApp}
	if _, err := b.m.Apply(b.s, stop); !isRefused(err) {
		t.Fatalf("stop in user_confirmed: %v", err)
	}
	// ... until the stop row lists user_confirmed among its sources.
	edited := DefaultTable()
	row := edited.Row(EvStop, "stop")
	row.Src = append(row.Src, UserConfirmed)
	r, err := machine(edited).Apply(b.s, stop)
	if err != nil || r.Session.State != Stopping || !hasEffect(r.Effects, EffSendStop) || r.History[0].Event != "stop" {
		t.Fatalf("stop with user_confirmed added: %v, %s %v", err, r.Session.State, effectKinds(r.Effects))
	}

	// Without the cancel row a cancel falls to the event's rule: refused.
	b = sessionIn(t, Created)
	cancel := Event{Type: EvCancel, At: b.tick(time.Second), By: ByApp}
	if r, err := b.m.Apply(b.s, cancel); err != nil || r.Session.State != Cancelled {
		t.Fatalf("cancel: %v %s", err, r.Session.State)
	}
	if _, err := machine(DefaultTable().Without(EvCancel, "cancel")).Apply(b.s, cancel); !isRefused(err) {
		t.Fatalf("cancel without its row: %v", err)
	}

	// Without the no_energy row of `ended`, an end with nothing delivered
	// is no longer cancelled: the event's rule ignores it.
	b = sessionIn(t, Charging)
	ended := Event{Type: EvEnded, At: b.tick(time.Second), By: ByCharger, MeterWh: 1000}
	if r, err := machine(DefaultTable().Without(EvEnded, "no_energy")).Apply(b.s, ended); err != nil || r.Changed {
		t.Fatalf("ended without its no_energy row: %v changed=%v %s", err, r.Changed, r.Session.State)
	}

	// A guard picks between rows: make every end billable and the same
	// nothing-delivered end goes to stopping instead of cancelled.
	edited = DefaultTable()
	edited.Row(EvEnded, "ended").When = Guard{Doc: "always"}
	if r, err := machine(edited).Apply(b.s, ended); err != nil || r.Session.State != Stopping {
		t.Fatalf("ended with an always guard: %v %s", err, r.Session.State)
	}

	// An event's rule decides what happens when no row applies: make a
	// stop while stopping refused instead of ignored.
	b = sessionIn(t, Stopping)
	stop = Event{Type: EvStop, At: b.tick(time.Second), By: ByApp}
	if r, err := b.m.Apply(b.s, stop); err != nil || r.Changed || r.Ignored != "already stopping" {
		t.Fatalf("stop while stopping: %v %+v", err, r)
	}
	edited = DefaultTable()
	for i := range edited.Events {
		if edited.Events[i].On == EvStop {
			edited.Events[i].Otherwise[0].Refuse = true
		}
	}
	if _, err := machine(edited).Apply(b.s, stop); !isRefused(err) {
		t.Fatalf("stop while stopping, refused by the rule: %v", err)
	}

	// The machine's own table was not touched by any of this.
	if _, err := b.m.Apply(b.s, stop); err != nil {
		t.Fatalf("the default machine changed: %v", err)
	}
	if _, err := NewWithTable(DefaultConfig(), Table{Rows: []Row{{On: EvStop, Name: "stop", Src: []State{"nowhere"}, Dst: Stopping}}}); err == nil {
		t.Fatal("a row from an unknown state was accepted")
	}
}

func TestEveryStateAndEventHasItsSpecName(t *testing.T) {
	wantStates := []string{"created", "user_confirmed", "charging", "stopping", "completed", "deducting", "paid", "cancelled", "refunded"}
	for i, s := range States {
		if string(s) != wantStates[i] {
			t.Errorf("state %d = %q, want %q", i, s, wantStates[i])
		}
	}
	wantFlags := []string{"charger_offline", "clock_skew", "meter_anomaly", "stop_unconfirmed", "amount_capped", "payment_overdue", "closed_by_operator", "reconcile_mismatch"}
	for i, f := range Flags {
		if string(f) != wantFlags[i] {
			t.Errorf("flag %d = %q, want %q", i, f, wantFlags[i])
		}
	}
}

func TestRestoreRejectsUnknownState(t *testing.T) {
	b := newBuilder(t)
	s := b.s
	s.State = "charged"
	_, err := b.m.Apply(s, Event{Type: EvStop, At: t0, By: ByApp})
	if err == nil || isRefused(err) {
		t.Fatalf("unknown state: err = %v, want a corrupt-session error", err)
	}
}
