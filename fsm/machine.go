// Package fsm is the session machine of docs/contract.md §1: states, events,
// the table (on looplab/fsm) and the effects each transition asks for, as
// plain data.
//
// The table decides (table.go). Each Row answers one input event from its
// source states, picked by its guard, and runs its action; each event's
// EventRule says who may send it and what it does when no row applies
// (refused, or ignored as late or repeated). Apply finds the rows of the
// event, asks looplab which are allowed from the current state, picks the
// first whose guard holds, fires it through looplab and runs its action. A
// Machine built from an edited Table (NewWithTable) follows the edit.
// The actions live by family: rows_start.go, rows_charging.go, rows_stop.go,
// rows_payment.go, rows_refund.go, rows_timers.go; wants.go answers the
// outbox workers' question "does this session still want this effect?".
//
// Like a raft FSM's Apply, Apply is deterministic: it gets the time and the
// source with each event, reads no clock, does no I/O and never logs. The same
// session and event always give the same result, which is what lets the engine
// rebuild a session from the store on every event, retry after a conflict, and
// replay after a crash.
package fsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	lfsm "github.com/looplab/fsm"
)

// Config holds the machine's timers and thresholds (docs/contract.md §1, §4).
type Config struct {
	ConfirmTimeout time.Duration
	StartTimeout   time.Duration
	StopTimeout    time.Duration
	OfflineGrace   time.Duration
	PollInterval   time.Duration
	// DebitRetry is the back-off after the 1st, 2nd, … failed debit; the
	// last one repeats.
	DebitRetry []time.Duration
	// OverdueAfter failed debits flag the session payment_overdue.
	OverdueAfter int
	// ClockTolerance is how far a charger time may be ahead of our receive
	// time and still be credible (docs/protocol.md: 5 minutes).
	ClockTolerance time.Duration
	// EndTimeBeforeEvent keeps end_time at least this long before the event
	// that fixes it (the charger's `ended`, a timeout, a close). The default
	// is 0: end_time is truncated to the second and clamped again at the
	// moment of the call, so a measured stop time is kept exactly whenever
	// it is credible (invariant 3).
	EndTimeBeforeEvent time.Duration
	// CompleteClockMargin is how far our clock may be ahead of WeChat's: the
	// complete call is made no sooner than this after end_time, and an
	// end_time later than the call less this is clamped (WeChat rejects an
	// end_time later than its own clock at the call, with no tolerance).
	// Default 1 s; 0 trusts the clocks to agree.
	CompleteClockMargin time.Duration
}

// DefaultConfig returns the defaults of docs/contract.md §4.
func DefaultConfig() Config {
	return Config{
		ConfirmTimeout:      5 * time.Minute,
		StartTimeout:        60 * time.Second,
		StopTimeout:         60 * time.Second,
		OfflineGrace:        10 * time.Minute,
		PollInterval:        30 * time.Second,
		DebitRetry:          []time.Duration{time.Minute, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour},
		OverdueAfter:        7,
		ClockTolerance:      5 * time.Minute,
		EndTimeBeforeEvent:  0,
		CompleteClockMargin: time.Second,
	}
}

// Validate reports a bad configuration.
func (c Config) Validate() error {
	for name, d := range map[string]time.Duration{"confirm timeout": c.ConfirmTimeout, "start timeout": c.StartTimeout,
		"stop timeout": c.StopTimeout, "offline grace": c.OfflineGrace, "poll interval": c.PollInterval} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	if len(c.DebitRetry) == 0 {
		return errors.New("debit retry needs at least one duration")
	}
	for _, d := range c.DebitRetry {
		if d <= 0 {
			return fmt.Errorf("debit retry durations must be positive, got %s", d)
		}
	}
	if c.OverdueAfter <= 0 {
		return errors.New("overdue threshold must be positive")
	}
	if c.EndTimeBeforeEvent < 0 || c.CompleteClockMargin < 0 {
		return errors.New("end time margins must not be negative")
	}
	return nil
}

// Machine applies events to sessions. It is immutable and safe for concurrent use.
type Machine struct {
	cfg   Config
	table Table
	rows  map[EventType][]*Row
	rules map[EventType]*EventRule
	// looplab holds looplab machines of the table: building one allocates
	// maps, and a session is rebuilt from the store on every event.
	looplab sync.Pool
}

// New returns a machine with cfg (see DefaultConfig) and DefaultTable.
func New(cfg Config) (*Machine, error) { return NewWithTable(cfg, DefaultTable()) }

// NewWithTable returns a machine that runs table t instead of DefaultTable
// (for tests that change the table and watch the machine follow).
func NewWithTable(cfg Config, t Table) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t = t.Clone()
	if err := t.validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, table: t, rows: map[EventType][]*Row{}, rules: map[EventType]*EventRule{}}
	for i := range t.Rows {
		r := &t.Rows[i]
		m.rows[r.On] = append(m.rows[r.On], r)
	}
	for i := range t.Events {
		m.rules[t.Events[i].On] = &t.Events[i]
	}
	events := eventDescs(t)
	m.looplab.New = func() any { return lfsm.NewFSM(string(Created), events, nil) }
	return m, nil
}

// Table returns (a copy of) the table the machine runs.
func (m *Machine) Table() Table { return m.table.Clone() }

// Config returns the machine's configuration.
func (m *Machine) Config() Config { return m.cfg }

// Result is what one event did.
type Result struct {
	// Session is the new record. Version is unchanged: the store sets it.
	Session Session
	// Changed is true when the record must be committed.
	Changed bool
	// History holds the state changes (usually one; `started` with an
	// early `ended` gives two).
	History []HistoryEntry
	// Effects are to be persisted with the record and then performed.
	Effects []Effect
	// Ignored says why an event changed nothing (duplicate, late, stale).
	Ignored string
	// Anomalies are reasons the engine stores with the raw input for an
	// operator (clock not credible, register backwards, …).
	Anomalies []string
}

// Transitioned reports whether the state changed.
func (r Result) Transitioned() bool { return len(r.History) > 0 }

// RefusedError is returned when an event is not allowed in the session's
// state (or a guard refuses it). Nothing changed.
type RefusedError struct {
	State  State
	Event  EventType
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s refused in state %s: %s", e.Event, e.State, e.Reason)
}

// ErrCorruptSession is returned (wrapped) for a session record the machine
// cannot work on (unknown state, missing tariff).
var ErrCorruptSession = errors.New("corrupt session")

// step is the work of one Apply: a private copy of the session, the event,
// the result being built, and facts the guards computed once for the
// actions (the end of charging, a meter sample).
type step struct {
	m   *Machine
	s   Session
	e   Event
	res Result

	ending *ending
	sample *sample
	fired  int   // the index in res.History of the entry the firing row wrote, or -1
	from   State // the state the firing row fired from
	spent  Timer // the timer an EvTimer's row took off the session
}

// NewSession opens a session from an EvCreate event: the Pay Score order
// exists, the user has not confirmed yet. It arms the confirm timeout and the
// order poll (the fallback for a lost confirm notification).
func (m *Machine) NewSession(e Event) (Result, error) {
	if e.Type != EvCreate {
		return Result{}, fmt.Errorf("%w: NewSession needs %s, got %s", ErrBadEvent, EvCreate, e.Type)
	}
	if err := e.Validate(); err != nil {
		return Result{}, err
	}
	if err := e.Create.Tariff.Validate(); err != nil {
		return Result{}, fmt.Errorf("%w: tariff: %v", ErrBadEvent, err)
	}
	c := e.Create
	st := &step{m: m, e: e, s: Session{
		ID: c.ID, State: Created, ChargerID: c.ChargerID, Connector: c.Connector, OpenID: c.OpenID,
		MaxAmountFen: c.MaxAmountFen, MaxEnergyWh: c.Tariff.MaxEnergyWh(c.MaxAmountFen), Tariff: c.Tariff,
		OutOrderNo: c.OutOrderNo, Package: c.Package, CreateReqDate: c.CreateReqDate,
		CreatedAt: e.At, UpdatedAt: e.At,
	}}
	st.res.History = append(st.res.History, HistoryEntry{At: e.At, To: Created, Event: EvCreate, By: e.By})
	st.arm(TimerConfirm, e.At.Add(m.cfg.ConfirmTimeout))
	st.arm(TimerPoll, e.At.Add(m.cfg.PollInterval))
	st.res.Changed = true
	st.res.Session = st.s
	return st.res, nil
}

// Apply applies e to s and returns the new record with the effects to
// perform. A refused event returns a *RefusedError and changes nothing. A
// repeated event that already took effect, a late charger message or a stale
// timer returns Changed=false with Ignored set: a no-op, not an error.
func (m *Machine) Apply(s Session, e Event) (Result, error) {
	if !s.State.Valid() {
		return Result{}, fmt.Errorf("%w: session %s has unknown state %q", ErrCorruptSession, s.ID, s.State)
	}
	if err := e.Validate(); err != nil {
		return Result{}, err
	}
	if e.Type == EvCreate {
		return Result{}, m.refuse(s, e, "the session already exists")
	}
	st := &step{m: m, s: s.Clone(), e: e, fired: -1}
	if err := st.run(); err != nil {
		return Result{}, err
	}
	if !st.res.Changed {
		// A no-op leaves the record exactly as it was.
		st.res.Session, st.res.Effects, st.res.History = s, nil, nil
		return st.res, nil
	}
	st.s.UpdatedAt = e.At
	st.res.Session = st.s
	return st.res, nil
}

// run is Apply's work: the event's rule about its source, then its rows,
// then, when no row applies, what its rule says.
func (st *step) run() error {
	rule := st.m.rules[st.e.Type]
	if rule == nil {
		rule = &EventRule{On: st.e.Type}
	}
	if !rule.By.holds(st) {
		return st.refuse(rule.NotBy)
	}
	fired, err := st.dispatch(st.e.Type)
	if fired || err != nil {
		return err
	}
	for _, o := range rule.Otherwise {
		if (o.In != nil && !slices.Contains(o.In, st.s.State)) || !o.When.holds(st) {
			continue
		}
		if o.Anomaly != "" {
			st.anomaly(st.expand(o.Anomaly))
		}
		if o.Refuse {
			return st.refuse(st.expand(o.Reason))
		}
		return st.ignore(st.expand(o.Reason))
	}
	return st.refuse(fmt.Sprintf("%s is not allowed in %s", st.e.Type, st.s.State))
}

// dispatch fires the first row of event on that looplab allows from the
// current state and whose guard holds. It reports whether one fired.
func (st *step) dispatch(on EventType) (bool, error) {
	rows := st.m.rows[on]
	if len(rows) == 0 {
		return false, nil
	}
	f := st.m.looplab.Get().(*lfsm.FSM)
	defer st.m.looplab.Put(f)
	f.SetState(string(st.s.State))
	for _, r := range rows {
		if !f.Can(r.key()) || !r.When.holds(st) {
			continue
		}
		return true, st.fire(f, r)
	}
	return false, nil
}

// fire runs row r: the transition through looplab (a history entry, and
// the timers the new state has no use for disarmed), then its action.
func (st *step) fire(f *lfsm.FSM, r *Row) error {
	from := st.s.State
	st.from = from
	st.res.Changed = true
	if rule := st.m.rules[r.On]; rule != nil && rule.Before.run != nil {
		if err := rule.Before.run(st); err != nil {
			return err
		}
	}
	if r.Dst != Stay {
		dst, err := event(f, r.key())
		if err != nil {
			return fmt.Errorf("%w: %s from %s: %v", ErrCorruptSession, r.key(), from, err)
		}
		st.s.State = dst
		// Self-transitions (the end of a stopping session becoming known)
		// are recorded too. The entry names the row, which says more than
		// the input: a `timer` event is recorded as `stop_timeout`, an
		// `ended` with nothing delivered as `no_energy`.
		st.fired = len(st.res.History)
		st.res.History = append(st.res.History, HistoryEntry{At: st.e.At, From: from, To: dst, Event: EventType(r.Name), By: st.e.By})
		if dst != from {
			st.disarmStale()
		}
	}
	if r.Do.run == nil {
		return nil
	}
	return r.Do.run(st)
}

// event fires looplab event name on f. A self-transition is success.
func event(f *lfsm.FSM, name string) (State, error) {
	// A background context: looplab wedges forever on a cancelled one
	// (looplab #115); the machine does no I/O so there is nothing to cancel.
	err := f.Event(context.Background(), name)
	var noTransition lfsm.NoTransitionError
	if err != nil && !(errors.As(err, &noTransition) && noTransition.Err == nil) {
		return State(f.Current()), err
	}
	return State(f.Current()), nil
}

// eventDescs is the looplab definition of t: a row that changes the state
// is one looplab event from its sources to its target; a row that stays is
// a self-transition from each of its sources.
func eventDescs(t Table) lfsm.Events {
	var evs lfsm.Events
	for i := range t.Rows {
		r := &t.Rows[i]
		src := make([]string, len(r.Src))
		for j, s := range r.Src {
			src[j] = string(s)
		}
		if r.Dst != Stay {
			evs = append(evs, lfsm.EventDesc{Name: r.key(), Src: src, Dst: string(r.Dst)})
			continue
		}
		for _, s := range src {
			evs = append(evs, lfsm.EventDesc{Name: r.key(), Src: []string{s}, Dst: s})
		}
	}
	return evs
}

// follow applies the rows of event on as if it had come in after the row
// that just fired (a pending `ended` once `started` arrives), with the facts
// already set on the step. Nothing happens when no row applies.
func (st *step) follow(on EventType) error {
	_, err := st.dispatch(on)
	return err
}

func (m *Machine) refuse(s Session, e Event, why string) error {
	return &RefusedError{State: s.State, Event: e.Type, Reason: why}
}

func (st *step) refuse(why string) error { return st.m.refuse(st.s, st.e, why) }

func (st *step) ignore(why string) error {
	st.res.Ignored = why
	return nil
}

func (st *step) anomaly(why string) { st.res.Anomalies = append(st.res.Anomalies, why) }

// note sets the note of the history entry the firing row wrote.
func (st *step) note(n string) {
	if st.fired >= 0 {
		st.res.History[st.fired].Note = n
	}
}

// expand fills the placeholders of an Otherwise's reason.
func (st *step) expand(reason string) string {
	if !strings.Contains(reason, "{") {
		return reason
	}
	keyed, _ := st.s.RefundByKey(st.e.Key)
	return strings.NewReplacer("{state}", string(st.s.State), "{deduction}", strconv.Itoa(st.e.Deduction),
		"{timer}", st.e.TimerID, "{refund}", st.e.RefundID, "{amount}", st.e.AmountFen.Yuan(),
		"{left}", st.s.RefundableFen().Yuan(), "{keyed}", keyed.ID).Replace(reason)
}

// effect appends a new effect with the next deterministic id.
func (st *step) effect(kind EffectKind) *Effect {
	s := &st.s
	s.Seq++
	st.res.Effects = append(st.res.Effects, Effect{
		ID: s.ID + "/" + strconv.FormatInt(s.Seq, 10), Kind: kind, Session: s.ID, DueAt: st.e.At,
		ChargerID: s.ChargerID, Connector: s.Connector, OutOrderNo: s.OutOrderNo,
	})
	st.res.Changed = true
	return &st.res.Effects[len(st.res.Effects)-1]
}

// arm (re)arms the timer of kind k: an existing one of that kind is disarmed.
func (st *step) arm(k TimerKind, due time.Time) {
	st.disarm(k)
	eff := st.effect(EffArmTimer)
	eff.Timer = k
	eff.DueAt = due
	st.s.Timers = append(st.s.Timers, Timer{ID: eff.ID, Kind: k, DueAt: due})
}

func (st *step) disarm(k TimerKind) {
	s := &st.s
	i := slices.IndexFunc(s.Timers, func(t Timer) bool { return t.Kind == k })
	if i < 0 {
		return
	}
	id := s.Timers[i].ID
	s.Timers = slices.Delete(s.Timers, i, i+1)
	eff := st.effect(EffDisarmTimer)
	eff.TimerID = id
	eff.Timer = k
}

func (st *step) flag(f Flag) {
	if !st.s.HasFlag(f) {
		st.s.Flags = append(st.s.Flags, f)
		st.res.Changed = true
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
