package fsm

import (
	"slices"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// State is a session state; the names are part of the contract (docs/contract.md §1).
type State string

// The states of docs/contract.md §1.
const (
	Created       State = "created"
	UserConfirmed State = "user_confirmed"
	Charging      State = "charging"
	Stopping      State = "stopping"
	Completed     State = "completed"
	Deducting     State = "deducting"
	Paid          State = "paid"
	Cancelled     State = "cancelled"
	Refunded      State = "refunded"
)

// States lists every state in the order of the main path, then the others.
var States = []State{Created, UserConfirmed, Charging, Stopping, Completed, Deducting, Paid, Cancelled, Refunded}

// Valid reports whether s is one of States.
func (s State) Valid() bool { return slices.Contains(States, s) }

// Terminal reports whether nothing more happens to a session in s by itself.
// A paid session may still be refunded (by an operator), but it has no timer,
// no charger and no pending money movement of its own.
func (s State) Terminal() bool { return s == Paid || s == Cancelled || s == Refunded }

// Active reports whether a session in s occupies its connector: from creation
// until the charger has ended (or the session is given up).
func (s State) Active() bool {
	return s == Created || s == UserConfirmed || s == Charging || s == Stopping
}

// Flag marks something an operator should look at; a flag is never a state.
type Flag string

// The flags of docs/contract.md §1.
const (
	FlagChargerOffline   Flag = "charger_offline"
	FlagClockSkew        Flag = "clock_skew"
	FlagMeterAnomaly     Flag = "meter_anomaly"
	FlagStopUnconfirmed  Flag = "stop_unconfirmed"
	FlagAmountCapped     Flag = "amount_capped"
	FlagPaymentOverdue   Flag = "payment_overdue"
	FlagClosedByOperator Flag = "closed_by_operator"
	// FlagReconcileMismatch: the daily reconciliation found a line of this
	// session that Huifu's trade bill does not agree with (docs/contract.md §6).
	FlagReconcileMismatch Flag = "reconcile_mismatch"
)

// Flags lists every flag.
var Flags = []Flag{FlagChargerOffline, FlagClockSkew, FlagMeterAnomaly, FlagStopUnconfirmed,
	FlagAmountCapped, FlagPaymentOverdue, FlagClosedByOperator, FlagReconcileMismatch}

// Cancel reasons (the session's cancel_reason).
const (
	ReasonUserCancelled       = "user_cancelled"
	ReasonConfirmTimeout      = "confirm_timeout"
	ReasonOrderRevoked        = "order_revoked"
	ReasonOrderExpired        = "order_expired"
	ReasonChargerRejected     = "charger_rejected"
	ReasonChargerNeverStarted = "charger_never_started"
	ReasonNoEnergy            = "no_energy"
	ReasonClosedByOperator    = "closed_by_operator"
)

// ReasonReboot is the Reason of an EvChargerOnline from a charger that came
// back with a new boot_id.
const ReasonReboot = "reboot"

// Source says who caused an event: "app", "operator:<name>", "charger",
// "payscore" or "timer" (docs/contract.md §1, history `by`).
type Source string

// The fixed sources; operators are Operator(name).
const (
	ByApp      Source = "app"
	ByCharger  Source = "charger"
	ByPayScore Source = "payscore"
	ByTimer    Source = "timer"
)

// Operator is the source for an operator's action.
func Operator(name string) Source { return Source("operator:" + name) }

// IsOperator reports whether src is an operator.
func (src Source) IsOperator() bool { return len(src) > 9 && src[:9] == "operator:" }

// HistoryEntry is one transition in a session's history (docs/contract.md §1).
type HistoryEntry struct {
	At    time.Time `json:"at"`
	From  State     `json:"from"`
	To    State     `json:"to"`
	Event EventType `json:"event"` // the row of Table that fired
	By    Source    `json:"by"`
	// Note is a short human explanation (a cancel reason, an operator's reason,
	// why a time was not trusted). Optional.
	Note string `json:"note,omitempty"`
}

// Timer is a timer the session has armed and not yet seen fire or disarmed.
// A firing timer whose ID is not in the session's list is stale and ignored,
// so a disarm that never reached the store is harmless.
type Timer struct {
	ID    string    `json:"id"`
	Kind  TimerKind `json:"kind"`
	DueAt time.Time `json:"due_at"`
}

// Payment is the money side of a session after completion.
type Payment struct {
	// Deductions counts the deductions started (registrations asked for):
	// the number of the current or last one. Each deduction is a
	// registration then one debit (docs/payscore.md §6).
	Deductions int `json:"attempts"`
	// Failures counts deductions that failed.
	Failures int `json:"failures"`
	// Registered is true while a deduction registration is live (registered
	// and not yet known failed or paid): at most one at a time (invariant 5).
	Registered bool `json:"registered,omitempty"`
	// OutTradeNo is the live or last registration's WeChat deduction number.
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// RegisterSeqID is the registration's hf_seq_id (deduct_hf_seq_id).
	RegisterSeqID string `json:"register_seq_id,omitempty"`
	// Debited is the deduction whose payscorepay was asked for; each
	// registration is debited at most once (invariant 5).
	Debited int `json:"debit_attempt,omitempty"`
	// Debit identifiers kept for refunds: the payscorepay call's req_date and
	// hf_seq_id, or for the user's own payment the notification's
	// trans_req_date and trans_hf_seq_id.
	ReqDate  string    `json:"req_date,omitempty"`
	HfSeqID  string    `json:"hf_seq_id,omitempty"`
	PaidFen  money.Fen `json:"paid_fen,omitempty"`
	ByUser   bool      `json:"by_user,omitempty"` // the user paid in WeChat themselves
	LastFail string    `json:"last_failure,omitempty"`
}

// Refund is one refund asked for on a paid session. The machine gives it
// its ID and number when it accepts the request, from the record it applies
// to: the store's compare-and-set on the version then settles a race (the
// loser re-applies to the new record and gets the next number, or a
// refusal), so two refunds never share a number, hence a req_seq_id.
type Refund struct {
	ID string `json:"id"`
	// No numbers the refund among the session's refunds (1, 2, …): its
	// req_seq_id. Records written before it was kept have 0; their number
	// is their position (see RefundNo).
	No        int       `json:"no,omitempty"`
	AmountFen money.Fen `json:"amount_fen"`
	Reason    string    `json:"reason"`
	By        Source    `json:"by"`
	At        time.Time `json:"at"`
	// Status is "pending", "succeeded" or "failed".
	Status  string `json:"status"`
	HfSeqID string `json:"hf_seq_id,omitempty"`
	// Key is the caller's idempotency key, when one was given.
	Key string `json:"key,omitempty"`
}

// Refund statuses.
const (
	RefundPending   = "pending"
	RefundSucceeded = "succeeded"
	RefundFailed    = "failed"
)

// Session is the persisted record of one charging session. The machine
// (Apply) is its only writer; everything else reads it. The zero values of
// times mean "not yet".
type Session struct {
	ID      string `json:"id"`
	Version int64  `json:"version"` // set by the store: one more per committed transition
	State   State  `json:"state"`

	CancelReason string `json:"cancel_reason,omitempty"`
	Flags        []Flag `json:"flags,omitempty"`

	ChargerID    string       `json:"charger_id"`
	Connector    int          `json:"connector"`
	OpenID       string       `json:"openid"`
	MaxAmountFen money.Fen    `json:"max_amount_fen"`
	MaxEnergyWh  int64        `json:"max_energy_wh"`
	Tariff       money.Tariff `json:"tariff"`

	// Pay Score service order (Huifu's names stay at this boundary).
	OutOrderNo string `json:"out_order_no,omitempty"`
	Package    string `json:"package,omitempty"`
	// CreateReqDate is the create call's req_date (yyyyMMdd, Beijing time).
	// Later calls are dated the day they are sent (docs/payscore.md §3).
	CreateReqDate string `json:"create_req_date,omitempty"`

	CreatedAt   time.Time `json:"created_at"`
	ConfirmedAt time.Time `json:"confirmed_at,omitzero"`
	// ConfirmedBy is the verified source that showed USER_CONFIRM.
	ConfirmedBy string `json:"confirmed_by,omitempty"`

	// Charger commands.
	StartCmdID  string    `json:"start_cmd_id,omitempty"`
	StartSentAt time.Time `json:"start_sent_at,omitzero"`
	// StartAnsweredAt is when the charger acknowledged the start (accepted;
	// a rejection cancels the session). Zero: not answered yet.
	StartAnsweredAt time.Time `json:"start_answered_at,omitzero"`
	StopCount       int       `json:"stop_count,omitempty"`
	// StopsAnswered is the number of the latest stop the charger has
	// acknowledged (stops are numbered 1…StopCount).
	StopsAnswered int       `json:"stops_answered,omitempty"`
	StopSentAt    time.Time `json:"stop_sent_at,omitzero"`
	StopBy        Source    `json:"stop_by,omitempty"`

	// Metering. Registers are the charger's meter register in Wh.
	StartedAt    time.Time   `json:"started_at,omitzero"`
	StartMeterWh int64       `json:"start_meter_wh,omitempty"`
	LastMeterWh  int64       `json:"last_meter_wh,omitempty"`
	LastMeterAt  time.Time   `json:"last_meter_at,omitzero"`
	LastSeq      int64       `json:"last_seq,omitempty"`
	LastHeardAt  time.Time   `json:"last_heard_at,omitzero"`
	Split        money.Split `json:"split,omitempty"`

	// The end of charging, once known.
	EndKnown   bool      `json:"end_known,omitempty"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
	EndMeterWh int64     `json:"end_meter_wh,omitempty"`
	EndReason  string    `json:"end_reason,omitempty"`
	// PendingEnd keeps an `ended` that arrived before `started` (messages of
	// one charger may be reordered); it is applied when `started` arrives.
	PendingEnd *PendingEnd `json:"pending_end,omitempty"`

	// Billing, fixed when the end is known.
	EnergyWh  int64        `json:"energy_wh"`
	AmountFen money.Fen    `json:"amount_fen"`
	Lines     []money.Line `json:"lines,omitempty"`
	// EndTime is the end_time sent (or to be sent) with complete.
	EndTime        time.Time `json:"end_time,omitzero"`
	CompleteSentAt time.Time `json:"complete_sent_at,omitzero"`
	CompletedAt    time.Time `json:"completed_at,omitzero"`

	Payment Payment   `json:"payment"`
	PaidAt  time.Time `json:"paid_at,omitzero"`
	Refunds []Refund  `json:"refunds,omitempty"`

	Timers []Timer `json:"timers,omitempty"`
	// Seq numbers the effects and timers this session has asked for, so their
	// ids are deterministic.
	Seq int64 `json:"seq"`
	// UpdatedAt is the time of the last event that changed the record.
	UpdatedAt time.Time `json:"updated_at"`
}

// PendingEnd is a charger `ended` event seen before its `started`.
type PendingEnd struct {
	At      time.Time `json:"at"`
	MeterWh int64     `json:"meter_wh"`
	Reason  string    `json:"reason"`
}

// HasFlag reports whether f is set.
func (s *Session) HasFlag(f Flag) bool { return slices.Contains(s.Flags, f) }

// TimerByKind returns the armed timer of kind k, if any.
func (s *Session) TimerByKind(k TimerKind) (Timer, bool) {
	for _, t := range s.Timers {
		if t.Kind == k {
			return t, true
		}
	}
	return Timer{}, false
}

// TimerByID returns the armed timer id, if any.
func (s *Session) TimerByID(id string) (Timer, bool) {
	for _, t := range s.Timers {
		if t.ID == id {
			return t, true
		}
	}
	return Timer{}, false
}

// RefundsCommittedFen is what is promised back to the user: the refunds
// that succeeded or are still pending (not the failed ones).
func (s *Session) RefundsCommittedFen() money.Fen {
	var sum money.Fen
	for _, r := range s.Refunds {
		if r.Status != RefundFailed {
			sum += r.AmountFen
		}
	}
	return sum
}

// RefundsSucceededFen is what Huifu has refunded.
func (s *Session) RefundsSucceededFen() money.Fen {
	var sum money.Fen
	for _, r := range s.Refunds {
		if r.Status == RefundSucceeded {
			sum += r.AmountFen
		}
	}
	return sum
}

// RefundableFen is what may still be refunded: paid, less what is committed.
func (s *Session) RefundableFen() money.Fen { return s.Payment.PaidFen - s.RefundsCommittedFen() }

// RefundByID returns refund id with its number (No, or its position for
// records written before No was kept).
func (s *Session) RefundByID(id string) (Refund, bool) {
	for i, r := range s.Refunds {
		if r.ID == id {
			if r.No == 0 {
				r.No = i + 1
			}
			return r, true
		}
	}
	return Refund{}, false
}

// RefundByKey returns the refund asked for with Idempotency-Key key.
func (s *Session) RefundByKey(key string) (Refund, bool) {
	if key == "" {
		return Refund{}, false
	}
	for _, r := range s.Refunds {
		if r.Key == key {
			return s.RefundByID(r.ID)
		}
	}
	return Refund{}, false
}

// Clone returns a deep copy (slices are not shared), so a machine step never
// changes the caller's record.
func (s Session) Clone() Session {
	s.Flags = slices.Clone(s.Flags)
	s.Split = slices.Clone(s.Split)
	s.Lines = slices.Clone(s.Lines)
	s.Refunds = slices.Clone(s.Refunds)
	s.Timers = slices.Clone(s.Timers)
	s.Tariff.Periods = slices.Clone(s.Tariff.Periods)
	if s.PendingEnd != nil {
		pe := *s.PendingEnd
		s.PendingEnd = &pe
	}
	return s
}
