// Package fsm is the session machine of docs/service.md §1: states, events, the
// transition table (on looplab/fsm), the guards, and the effects each
// transition asks for, as plain data.
//
// Like a raft FSM's Apply, Apply is deterministic: it gets the time and the
// source with each event, reads no clock, does no I/O and never logs. The same
// session and event always give the same result, which is what lets the engine
// rebuild a session from the store on every event, retry after a conflict, and
// replay after a crash.
package fsm

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// Config holds the machine's timers and thresholds (docs/service.md §1, §4).
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
	// time and still be credible (docs/protocol.md §4: 5 minutes).
	ClockTolerance time.Duration
	// EndTimeMargin keeps end_time this far before the event that asks for
	// complete. The default is 0: end_time is truncated to the second and
	// the engine clamps it again against its clock at the moment of the call
	// (WeChat rejects an end_time later than the call, with no tolerance), so
	// a measured stop time is kept exactly whenever it is credible.
	EndTimeMargin time.Duration
}

// DefaultConfig returns the defaults of docs/service.md §4.
func DefaultConfig() Config {
	return Config{
		ConfirmTimeout: 5 * time.Minute,
		StartTimeout:   60 * time.Second,
		StopTimeout:    60 * time.Second,
		OfflineGrace:   10 * time.Minute,
		PollInterval:   30 * time.Second,
		DebitRetry:     []time.Duration{time.Minute, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour},
		OverdueAfter:   7,
		ClockTolerance: 5 * time.Minute,
		EndTimeMargin:  0,
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
	return nil
}

// Machine applies events to sessions. It is immutable and safe for concurrent use.
type Machine struct{ cfg Config }

// New returns a machine with cfg (see DefaultConfig).
func New(cfg Config) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Machine{cfg: cfg}, nil
}

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

// step is the work of one Apply: a private copy of the session, the event and
// the result being built.
type step struct {
	m   *Machine
	s   Session
	e   Event
	res Result
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
	st := &step{m: m, s: s.Clone(), e: e}
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

func (m *Machine) refuse(s Session, e Event, why string) error {
	return &RefusedError{State: s.State, Event: e.Type, Reason: why}
}

func (st *step) refuse(why string) error { return st.m.refuse(st.s, st.e, why) }

func (st *step) ignore(why string) error {
	st.res.Ignored = why
	return nil
}

func (st *step) anomaly(why string) { st.res.Anomalies = append(st.res.Anomalies, why) }

// to runs the table row `name`, records the history entry and does what
// entering the new state asks for.
func (st *step) to(name, note string) error {
	from := st.s.State
	dst, err := fire(from, name)
	if err != nil {
		return st.refuse(err.Error())
	}
	st.s.State = dst
	st.res.Changed = true
	// Self-transitions (the end of a stopping session becoming known) are
	// kept too: they are rows of the table.
	// The entry names the row, which says more than the input: a `timer`
	// event is recorded as `stop_timeout`, an `ended` with nothing delivered
	// as `no_energy`.
	st.res.History = append(st.res.History, HistoryEntry{At: st.e.At, From: from, To: dst, Event: EventType(name), By: st.e.By, Note: note})
	if dst != from {
		st.disarmStale()
	}
	return nil
}

// run dispatches on the event type. Each case states its guards.
func (st *step) run() error {
	s, e := &st.s, st.e
	switch e.Type {
	case EvConfirm:
		// Invariant 1: only a verified Pay Score source may confirm.
		if e.By != ByPayScore {
			return st.refuse("USER_CONFIRM must come from a verified Pay Score source")
		}
		switch {
		case s.State == Created:
			return st.confirm()
		case !s.ConfirmedAt.IsZero():
			return st.ignore("already confirmed")
		default:
			return st.ignore("session already " + string(s.State))
		}

	case EvStartAccepted:
		return st.ignore("start accepted; charging begins with txn started")

	case EvStartRejected:
		if s.State != UserConfirmed || (e.CmdID != "" && e.CmdID != s.StartCmdID) {
			return st.ignore("no start waiting for this answer")
		}
		s.CancelReason = ReasonChargerRejected
		if err := st.to("start_rejected", "charger rejected start: "+e.Reason); err != nil {
			return err
		}
		st.enterCancelled()
		return nil

	case EvStarted:
		return st.started()

	case EvMeter:
		return st.meter()

	case EvEnded:
		return st.ended()

	case EvStop:
		switch s.State {
		case Charging:
			s.StopBy = e.By
			if err := st.to("stop", e.Reason); err != nil {
				return err
			}
			st.sendStop()
			st.arm(TimerStop, e.At.Add(st.m.cfg.StopTimeout))
			return nil
		case Stopping:
			return st.ignore("already stopping")
		case Created, UserConfirmed:
			return st.refuse("not charging yet: cancel the session instead")
		default:
			return st.refuse("the charging has already ended")
		}

	case EvCancel:
		switch s.State {
		case Created, UserConfirmed:
			s.CancelReason = ReasonUserCancelled
			if err := st.to("cancel", e.Reason); err != nil {
				return err
			}
			st.enterCancelled()
			return nil
		case Cancelled:
			return st.ignore("already cancelled")
		default:
			return st.refuse("charging has started: stop the session instead")
		}

	case EvClose:
		return st.close()

	case EvChargerOffline:
		if !s.State.Active() || s.State == Created || s.EndKnown {
			return st.ignore("the charger's presence does not matter in " + string(s.State))
		}
		if s.HasFlag(FlagChargerOffline) {
			return st.ignore("already offline")
		}
		st.flag(FlagChargerOffline)
		if s.State != UserConfirmed { // before `started` the start timeout decides
			st.arm(TimerOffline, e.At.Add(st.m.cfg.OfflineGrace))
		}
		st.res.Changed = true
		return nil

	case EvChargerOnline:
		s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
		if !s.HasFlag(FlagChargerOffline) || s.State.Terminal() {
			return st.ignore("not offline")
		}
		if e.Reason == ReasonReboot && s.State != UserConfirmed {
			// A charger back from a reboot may have lost the session: keep
			// waiting (the grace) for its queued `ended` or a meter sample.
			return st.ignore("rebooted: waiting for its queued end or a meter sample")
		}
		st.backOnline()
		return nil

	case EvOrderClosed:
		if s.State != Created && s.State != UserConfirmed {
			return st.ignore("order closed reported in " + string(s.State))
		}
		s.CancelReason = ReasonOrderRevoked
		if e.OrderState == "EXPIRED" {
			s.CancelReason = ReasonOrderExpired
		}
		if err := st.to("order_closed", e.OrderState); err != nil {
			return err
		}
		st.enterCancelled()
		return nil

	case EvOrderCompleted:
		switch {
		case s.State == Stopping && !s.CompleteSentAt.IsZero():
			s.CompletedAt = e.At
			if !e.EndTime.IsZero() {
				s.EndTime = e.EndTime
			}
			if err := st.to("order_completed", ""); err != nil {
				return err
			}
			st.registerDeduction()
			return nil
		case s.State == Stopping:
			return st.refuse("complete was never asked for")
		case !s.CompletedAt.IsZero():
			return st.ignore("already completed")
		default:
			return st.ignore("completion reported in " + string(s.State))
		}

	case EvDeductionRegistered:
		p := &s.Payment
		if s.State != Completed || e.Attempt != p.Attempts || p.Registered || p.Failures >= e.Attempt || p.DebitAttempt >= e.Attempt {
			return st.ignore("no registration of attempt " + strconv.Itoa(e.Attempt) + " is awaited")
		}
		p.Registered = true
		p.OutTradeNo = e.OutTradeNo
		p.RegisterSeqID = e.HfSeqID
		if err := st.to("deduction_registered", ""); err != nil {
			return err
		}
		// Invariant 5: the one debit of this registration.
		p.DebitAttempt = e.Attempt
		eff := st.effect(EffDebit)
		eff.Attempt = e.Attempt
		eff.OutTradeNo = e.OutTradeNo
		eff.AmountFen = s.AmountFen
		st.arm(TimerPoll, e.At.Add(st.m.cfg.PollInterval))
		return nil

	case EvDebitSent:
		p := &s.Payment
		if s.State != Deducting || e.Attempt != p.DebitAttempt || e.HfSeqID == "" || p.HfSeqID == e.HfSeqID {
			return st.ignore("no debit of attempt " + strconv.Itoa(e.Attempt) + " to record")
		}
		p.HfSeqID, p.ReqDate = e.HfSeqID, e.ReqDate
		st.res.Changed = true
		return nil

	case EvDebitFailed:
		p := &s.Payment
		if e.Attempt != p.Attempts || (s.State != Deducting && s.State != Completed) {
			return st.ignore("attempt " + strconv.Itoa(e.Attempt) + " is not the current one")
		}
		if s.State == Completed && (p.Registered || p.Failures >= p.Attempts) {
			return st.ignore("attempt already failed")
		}
		p.Registered = false
		p.Failures++
		p.LastFail = e.Reason
		if s.State == Deducting {
			if err := st.to("debit_failed", e.Reason); err != nil {
				return err
			}
		}
		if p.Failures >= st.m.cfg.OverdueAfter {
			st.flag(FlagPaymentOverdue)
		}
		st.arm(TimerDebitRetry, e.At.Add(st.m.backoff(p.Failures)))
		st.res.Changed = true
		return nil

	case EvPaid:
		if e.By != ByPayScore {
			return st.refuse("payment must come from a verified Pay Score source")
		}
		switch {
		case s.State == Paid || s.State == Refunded:
			return st.ignore("already paid") // invariant 6
		case s.State == Completed || s.State == Deducting || (s.State == Stopping && !s.CompleteSentAt.IsZero()):
		default:
			st.anomaly("payment reported for a session in " + string(s.State))
			return st.ignore("payment reported in " + string(s.State))
		}
		p := &s.Payment
		p.Registered = false
		p.PaidFen = s.AmountFen
		if e.AmountFen > 0 {
			if e.AmountFen != s.AmountFen {
				st.anomaly(fmt.Sprintf("paid %s, billed %s", e.AmountFen.Yuan(), s.AmountFen.Yuan()))
			}
			p.PaidFen = e.AmountFen
		}
		p.ByUser = e.ByUser
		if e.HfSeqID != "" {
			p.HfSeqID, p.ReqDate = e.HfSeqID, e.ReqDate
		}
		if s.CompletedAt.IsZero() {
			s.CompletedAt = e.At
		}
		s.PaidAt = e.At
		return st.to("paid", "")

	case EvDeductNow:
		switch {
		case s.State == Completed && s.Payment.idle():
			st.disarm(TimerDebitRetry)
			st.registerDeduction()
			return nil
		case s.State == Deducting || s.State == Completed:
			return st.refuse("a deduction attempt is already in flight")
		default:
			return st.refuse("nothing to debit in " + string(s.State))
		}

	case EvRefund:
		if s.State != Paid {
			return st.refuse("only a paid session can be refunded")
		}
		for _, r := range s.Refunds {
			if r.ID == e.RefundID {
				return st.ignore("refund already asked for")
			}
		}
		if left := s.Payment.PaidFen - s.RefundedFen(); e.AmountFen > left {
			return st.refuse(fmt.Sprintf("refund %s exceeds the %s left to refund", e.AmountFen.Yuan(), left.Yuan()))
		}
		s.Refunds = append(s.Refunds, Refund{ID: e.RefundID, AmountFen: e.AmountFen, Reason: e.Reason, By: e.By, At: e.At, Status: RefundPending, Key: e.Key})
		eff := st.effect(EffRefund)
		eff.RefundID, eff.AmountFen, eff.Reason = e.RefundID, e.AmountFen, e.Reason
		eff.OrgReqDate, eff.OrgHfSeqID = s.Payment.ReqDate, s.Payment.HfSeqID
		eff.Attempt = len(s.Refunds) // the n-th refund of the session: its req_seq_id
		st.res.Changed = true
		return nil

	case EvRefundSucceeded, EvRefundFailed:
		i := slices.IndexFunc(s.Refunds, func(r Refund) bool { return r.ID == e.RefundID })
		if i < 0 || s.Refunds[i].Status != RefundPending {
			return st.ignore("no pending refund " + e.RefundID)
		}
		st.res.Changed = true
		if e.Type == EvRefundFailed {
			s.Refunds[i].Status = RefundFailed
			return nil
		}
		s.Refunds[i].Status = RefundSucceeded
		s.Refunds[i].HfSeqID = e.HfSeqID
		var done money.Fen
		for _, r := range s.Refunds {
			if r.Status == RefundSucceeded {
				done += r.AmountFen
			}
		}
		if done >= s.Payment.PaidFen && s.State == Paid {
			return st.to("refunded", "")
		}
		return nil

	case EvTimer:
		return st.timer()
	}
	return fmt.Errorf("%w: unhandled event %q", ErrBadEvent, e.Type)
}

// confirm: USER_CONFIRM is known. The only place a start is ever asked for.
func (st *step) confirm() error {
	s, e := &st.s, st.e
	s.ConfirmedAt = e.At
	s.ConfirmedBy = e.Reason
	if err := st.to("confirm", ""); err != nil {
		return err
	}
	s.StartCmdID = s.ID + "-start"
	s.StartSentAt = e.At
	eff := st.effect(EffSendStart)
	eff.CmdID = s.StartCmdID
	eff.Deadline = e.At.Add(st.m.cfg.StartTimeout)
	eff.MaxEnergyWh = s.MaxEnergyWh
	st.arm(TimerStart, e.At.Add(st.m.cfg.StartTimeout))
	return nil
}

// chargerTime returns the charger's time when it is credible: not more than
// the tolerance ahead of our receive time and not before `notBefore`.
// Otherwise it returns our receive time, flags clock_skew and notes why.
func (st *step) chargerTime(notBefore time.Time) time.Time {
	ct, at := st.e.ChargerTime, st.e.At
	switch {
	case ct.IsZero():
		return at
	case ct.After(at.Add(st.m.cfg.ClockTolerance)):
		st.skew(fmt.Sprintf("%s time %s is ahead of receive time %s", st.e.Type, ct.Format(time.RFC3339), at.Format(time.RFC3339)))
		return at
	case ct.After(at):
		// Within the tolerance, but nothing happens after we heard of it.
		return at
	case !notBefore.IsZero() && ct.Before(notBefore.Add(-st.m.cfg.ClockTolerance)):
		st.skew(fmt.Sprintf("%s time %s is before %s", st.e.Type, ct.Format(time.RFC3339), notBefore.Format(time.RFC3339)))
		return maxTime(at, notBefore)
	case ct.Before(notBefore):
		return notBefore // within tolerance: keep the order of events
	}
	return ct
}

func (st *step) skew(why string) {
	st.flag(FlagClockSkew)
	st.anomaly("clock_skew: " + why)
}

// backOnline clears charger_offline and its grace.
func (st *step) backOnline() {
	st.s.Flags = slices.DeleteFunc(st.s.Flags, func(f Flag) bool { return f == FlagChargerOffline })
	st.disarm(TimerOffline)
	st.res.Changed = true
}

func (st *step) started() error {
	s, e := &st.s, st.e
	s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
	switch {
	case s.State == UserConfirmed:
	case !s.StartedAt.IsZero():
		return st.ignore("already started")
	case s.State == Cancelled && !s.StartSentAt.IsZero():
		// A late start (e.g. after the start timeout): make sure it stops.
		st.anomaly("charger started a cancelled session")
		st.sendStop()
		st.res.Changed = true
		return nil
	default:
		st.anomaly("charger started a session in " + string(s.State))
		return st.ignore("started in " + string(s.State))
	}
	s.StartedAt = st.chargerTime(s.StartSentAt)
	s.StartMeterWh = e.MeterWh
	s.LastMeterWh = e.MeterWh
	s.LastMeterAt = s.StartedAt
	s.Split = make(money.Split, len(s.Tariff.Periods))
	if err := st.to("started", ""); err != nil {
		return err
	}
	if pe := s.PendingEnd; pe != nil {
		s.PendingEnd = nil
		return st.end("ended", pe.At, pe.MeterWh, pe.Reason, true)
	}
	return nil
}

func (st *step) meter() error {
	s, e := &st.s, st.e
	if (s.State != Charging && s.State != Stopping) || s.EndKnown {
		return st.ignore("meter sample outside charging")
	}
	if e.Seq != 0 && e.Seq <= s.LastSeq {
		return st.ignore("duplicate or late meter sample")
	}
	s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
	st.res.Changed = true
	if e.Seq != 0 {
		s.LastSeq = e.Seq
	}
	if s.HasFlag(FlagChargerOffline) {
		st.backOnline() // metering this session: evidently alive
	}
	at := st.chargerTime(s.LastMeterAt)
	if e.MeterWh < s.LastMeterWh {
		st.flag(FlagMeterAnomaly)
		st.anomaly(fmt.Sprintf("meter register went backwards: %d after %d", e.MeterWh, s.LastMeterWh))
		return nil
	}
	split, err := s.Tariff.Add(s.Split, s.LastMeterAt, s.LastMeterWh, at, e.MeterWh)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptSession, err)
	}
	s.Split, s.LastMeterWh, s.LastMeterAt = split, e.MeterWh, at
	// The spending cap: stop before it is passed.
	if s.State == Charging && s.MaxAmountFen > 0 && s.Tariff.Price(s.Split, 0).TotalFen >= s.MaxAmountFen {
		s.StopBy = e.By
		if err := st.to("stop", "spending cap reached"); err != nil {
			return err
		}
		st.sendStop()
		st.arm(TimerStop, e.At.Add(st.m.cfg.StopTimeout))
	}
	return nil
}

func (st *step) ended() error {
	s, e := &st.s, st.e
	s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
	switch {
	case (s.State == Charging || s.State == Stopping) && !s.EndKnown:
		at := st.chargerTime(s.StartedAt)
		return st.end("ended", at, e.MeterWh, e.Reason, true)
	case s.State == UserConfirmed:
		if s.PendingEnd != nil {
			return st.ignore("ended already waiting for started")
		}
		st.anomaly("ended arrived before started")
		s.PendingEnd = &PendingEnd{At: e.ChargerTime, MeterWh: e.MeterWh, Reason: e.Reason}
		if s.PendingEnd.At.IsZero() || s.PendingEnd.At.After(e.At.Add(st.m.cfg.ClockTolerance)) {
			s.PendingEnd.At = e.At
		}
		st.res.Changed = true
		return nil
	case s.EndKnown:
		return st.ignore("already ended")
	default:
		st.anomaly("ended for a session in " + string(s.State))
		return st.ignore("ended in " + string(s.State))
	}
}

// end fixes the end of charging (register and time), bills it, and asks for
// complete — or cancels when no energy was delivered. `measured` is false when
// the end is our estimate (stop timeout, offline grace, operator close).
func (st *step) end(row string, at time.Time, meterWh int64, reason string, measured bool) error {
	s := &st.s
	if at.Before(s.StartedAt) {
		at = s.StartedAt
	}
	// An estimated end means the charger may still be delivering: it must be
	// told to stop, whatever the bill turns out to be.
	if !measured && s.StopCount == 0 {
		st.sendStop()
	}
	energy := meterWh - s.StartMeterWh
	switch {
	case meterWh >= s.LastMeterWh:
		split, err := s.Tariff.Add(s.Split, s.LastMeterAt, s.LastMeterWh, maxTime(at, s.LastMeterAt), meterWh)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorruptSession, err)
		}
		s.Split = split
	default:
		// The final register is below what the samples showed: bill what the
		// credible samples measured and let an operator look.
		st.flag(FlagMeterAnomaly)
		st.anomaly(fmt.Sprintf("end register %d below last sample %d", meterWh, s.LastMeterWh))
		energy = s.Split.Total()
	}
	s.EndKnown = true
	s.EndedAt = at
	s.EndMeterWh = meterWh
	s.EndReason = reason
	s.LastMeterWh = max(s.LastMeterWh, meterWh)
	s.EnergyWh = max(energy, 0)
	var bill money.Bill
	if energy > 0 {
		bill = s.Tariff.Price(s.Split, s.MaxAmountFen)
	}
	// Nothing delivered, or too little to cost a fen: there is nothing to
	// collect, and Pay Score cannot complete an order for 0.00.
	if bill.TotalFen <= 0 {
		if s.CancelReason == "" {
			s.CancelReason = ReasonNoEnergy
		}
		if err := st.to("no_energy", reason); err != nil {
			return err
		}
		st.enterCancelled()
		return nil
	}
	s.AmountFen, s.Lines = bill.TotalFen, bill.Lines
	if bill.Capped {
		st.flag(FlagAmountCapped)
	}
	if err := st.to(row, reason); err != nil {
		return err
	}
	st.disarm(TimerStop)
	st.disarm(TimerOffline)
	s.EndTime = st.endTime(at)
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

// endTime clamps the measured stop time so it is after the start and not
// after the moment complete is asked for (invariant 3); the engine clamps
// again at the moment of the call.
func (st *step) endTime(ended time.Time) time.Time {
	t := ended.Truncate(time.Second)
	if hi := st.e.At.Add(-st.m.cfg.EndTimeMargin).Truncate(time.Second); t.After(hi) {
		t = hi
	}
	if lo := st.s.StartedAt.Truncate(time.Second).Add(time.Second); t.Before(lo) {
		t = lo
	}
	return t
}

// close is an operator ending a stuck session by hand: billed for what was
// measured, or cancelled if nothing was.
func (st *step) close() error {
	s, e := &st.s, st.e
	if !e.By.IsOperator() {
		return st.refuse("only an operator can close a session")
	}
	switch {
	case s.State == Created || s.State == UserConfirmed:
		st.flag(FlagClosedByOperator)
		s.CancelReason = ReasonClosedByOperator
		if err := st.to("close", e.Reason); err != nil {
			return err
		}
		st.enterCancelled()
		return nil
	case (s.State == Charging || s.State == Stopping) && !s.EndKnown:
		st.flag(FlagClosedByOperator)
		s.CancelReason = ReasonClosedByOperator // kept only if nothing was measured
		if err := st.end("close_charging", st.lastHeard(), s.LastMeterWh, "closed_by_operator: "+e.Reason, false); err != nil {
			return err
		}
		if s.State != Cancelled {
			s.CancelReason = ""
		}
		return nil
	case s.State == Stopping:
		return st.refuse("the end is known and completion is in progress")
	default:
		return st.refuse("the session is finished")
	}
}

func (st *step) lastHeard() time.Time {
	s := &st.s
	t := maxTime(s.LastMeterAt, s.StartedAt)
	if t.IsZero() {
		t = st.e.At
	}
	return t
}

func (st *step) timer() error {
	s, e := &st.s, st.e
	i := slices.IndexFunc(s.Timers, func(t Timer) bool { return t.ID == e.TimerID })
	if i < 0 {
		return st.ignore("stale timer " + e.TimerID)
	}
	t := s.Timers[i]
	s.Timers = slices.Delete(s.Timers, i, i+1)
	st.res.Changed = true
	switch t.Kind {
	case TimerConfirm:
		if s.State != Created {
			return nil
		}
		s.CancelReason = ReasonConfirmTimeout
		if err := st.to("confirm_timeout", ""); err != nil {
			return err
		}
		st.enterCancelled()
	case TimerStart:
		if s.State != UserConfirmed {
			return nil
		}
		if s.PendingEnd != nil {
			st.flag(FlagMeterAnomaly)
			st.anomaly("the charger ended a session whose start never arrived")
		}
		s.CancelReason = ReasonChargerNeverStarted
		if err := st.to("start_timeout", ""); err != nil {
			return err
		}
		st.enterCancelled()
	case TimerStop:
		if s.State != Stopping || s.EndKnown {
			return nil
		}
		st.flag(FlagStopUnconfirmed)
		return st.end("stop_timeout", st.lastHeard(), s.LastMeterWh, "stop_timeout", false)
	case TimerOffline:
		if (s.State != Charging && s.State != Stopping) || s.EndKnown {
			return nil
		}
		return st.end("offline_grace", st.lastHeard(), s.LastMeterWh, "charger_offline", false)
	case TimerDebitRetry:
		if s.State == Completed && s.Payment.idle() {
			st.registerDeduction()
		}
	case TimerPoll:
		if s.State != Created && s.State != Deducting {
			return nil
		}
		eff := st.effect(EffQueryOrder)
		eff.OutOrderNo = s.OutOrderNo
		st.arm(TimerPoll, e.At.Add(st.m.cfg.PollInterval))
	}
	return nil
}

// enterCancelled does what entering `cancelled` asks for: cancel the Pay
// Score order where it still exists, stop the charger if a start was ever
// sent, and drop every timer.
func (st *step) enterCancelled() {
	s := &st.s
	if s.OutOrderNo != "" && st.e.Type != EvOrderClosed {
		eff := st.effect(EffCancelOrder)
		eff.OutOrderNo = s.OutOrderNo
		eff.Reason = s.CancelReason
	}
	if !s.StartSentAt.IsZero() && !s.EndKnown {
		st.sendStop()
	}
	for len(s.Timers) > 0 {
		st.disarm(s.Timers[0].Kind)
	}
}

func (st *step) registerDeduction() {
	s := &st.s
	s.Payment.Attempts++
	eff := st.effect(EffRegisterDeduction)
	eff.Attempt = s.Payment.Attempts
	eff.OutOrderNo = s.OutOrderNo
	eff.AmountFen = s.AmountFen
	st.res.Changed = true
}

func (st *step) sendStop() {
	s := &st.s
	s.StopCount++
	s.StopSentAt = st.e.At
	eff := st.effect(EffSendStop)
	eff.CmdID = s.ID + "-stop-" + strconv.Itoa(s.StopCount)
}

// idle reports whether no deduction attempt is in flight: every attempt
// started has failed (invariant 5: at most one live registration).
func (p *Payment) idle() bool { return !p.Registered && p.Failures >= p.Attempts }

func (m *Machine) backoff(failures int) time.Duration {
	i := min(failures, len(m.cfg.DebitRetry)) - 1
	return m.cfg.DebitRetry[max(i, 0)]
}

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
