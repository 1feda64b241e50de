package fsm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	lfsm "github.com/looplab/fsm"
)

// Transition is one row of the session machine's table: the looplab event
// Name moves a session from any of Src to Dst. The names are the events of
// the history, except where one event can end in two places depending on the
// facts (an end with no energy is `no_energy`, a timer is named by its kind).
type Transition struct {
	Name string
	Src  []State
	Dst  State
}

// Table is THE place that says which state changes exist (docs/service.md §1:
// "exactly one place decides transitions"). Apply picks the row from the event
// and the facts; looplab/fsm checks the row is allowed from the current state.
var Table = []Transition{
	{"confirm", []State{Created}, UserConfirmed},
	{"confirm_timeout", []State{Created}, Cancelled},
	{"cancel", []State{Created, UserConfirmed}, Cancelled},
	{"order_closed", []State{Created, UserConfirmed}, Cancelled},
	{"start_rejected", []State{UserConfirmed}, Cancelled},
	{"start_timeout", []State{UserConfirmed}, Cancelled},
	{"started", []State{UserConfirmed}, Charging},
	{"stop", []State{Charging}, Stopping},
	{"ended", []State{Charging, Stopping}, Stopping},
	{"stop_timeout", []State{Stopping}, Stopping},
	{"offline_grace", []State{Charging, Stopping}, Stopping},
	{"close", []State{Created, UserConfirmed}, Cancelled},
	{"close_charging", []State{Charging, Stopping}, Stopping},
	{"no_energy", []State{Charging, Stopping}, Cancelled},
	{"order_completed", []State{Stopping}, Completed},
	{"deduction_registered", []State{Completed}, Deducting},
	{"debit_failed", []State{Deducting}, Completed},
	{"paid", []State{Stopping, Completed, Deducting}, Paid},
	{"refunded", []State{Paid}, Refunded},
}

func eventDescs() lfsm.Events {
	evs := make(lfsm.Events, 0, len(Table))
	for _, t := range Table {
		src := make([]string, len(t.Src))
		for i, s := range t.Src {
			src[i] = string(s)
		}
		evs = append(evs, lfsm.EventDesc{Name: t.Name, Src: src, Dst: string(t.Dst)})
	}
	return evs
}

// NewLooplab builds the looplab machine of Table, starting in `initial`. It
// registers no callbacks: the machine's work is pure code in Apply, and a
// looplab callback could only hide I/O, or deadlock (looplab holds its lock
// while callbacks run, and one that calls back into the machine never returns).
func NewLooplab(initial State) *lfsm.FSM {
	return lfsm.NewFSM(string(initial), eventDescs(), nil)
}

// machines pools looplab instances: building one allocates maps, and a
// session is rebuilt from the store on every event.
var machines = sync.Pool{New: func() any { return NewLooplab(Created) }}

// errNoRow is returned by fire when Table has no row for (name, state).
var errNoRow = errors.New("no such transition")

// fire runs the looplab event `name` from state `from` and returns the new
// state. A self-transition (Src contains Dst) is success.
func fire(from State, name string) (State, error) {
	f := machines.Get().(*lfsm.FSM)
	defer machines.Put(f)
	f.SetState(string(from))
	// A background context: looplab wedges forever on a cancelled one
	// (looplab #115); the machine does no I/O so there is nothing to cancel.
	err := f.Event(context.Background(), name)
	var noTransition lfsm.NoTransitionError
	if err != nil && !(errors.As(err, &noTransition) && noTransition.Err == nil) {
		var invalid lfsm.InvalidEventError
		if errors.As(err, &invalid) {
			return from, fmt.Errorf("%w: %s from %s", errNoRow, name, from)
		}
		return from, fmt.Errorf("looplab %s from %s: %w", name, from, err)
	}
	return State(f.Current()), nil
}
