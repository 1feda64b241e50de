package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// EventType names an input to the machine. The names appear in the session
// history (`event`).
type EventType string

// The events. Each carries its time (At) and its source (By).
const (
	// EvCreate opens a session: the Pay Score order was created. It is the
	// only event accepted by New, never by Apply.
	EvCreate EventType = "create"
	// EvConfirm: USER_CONFIRM is known from a verified source (a verified
	// notification, or a query of the order showing DOING+USER_CONFIRM).
	EvConfirm EventType = "confirm"
	// EvStartAccepted / EvStartRejected: the charger's ack of our start
	// (CmdID). Accepted only means "will try": charging begins with started.
	EvStartAccepted EventType = "start_accepted"
	EvStartRejected EventType = "start_rejected"
	// EvStopAccepted / EvStopRejected: the charger's ack of stop CmdID.
	EvStopAccepted EventType = "stop_accepted"
	EvStopRejected EventType = "stop_rejected"
	// EvStarted / EvEnded: the charger's txn events.
	EvStarted EventType = "started"
	EvEnded   EventType = "ended"
	// EvMeter: a meter sample.
	EvMeter EventType = "meter"
	// EvStop: the user (app) or an operator asks to stop.
	EvStop EventType = "stop"
	// EvCancel: the app cancels before charging.
	EvCancel EventType = "cancel"
	// EvClose: an operator ends a stuck session by hand.
	EvClose EventType = "close"
	// EvChargerOffline / EvChargerOnline: presence of the session's charger.
	EvChargerOffline EventType = "charger_offline"
	EvChargerOnline  EventType = "charger_online"
	// EvOrderCompleted: the complete call succeeded (or a query shows
	// DOING+MCH_COMPLETE after we asked for it).
	EvOrderCompleted EventType = "order_completed"
	// EvOrderClosed: the order is REVOKED or EXPIRED on Pay Score's side.
	EvOrderClosed EventType = "order_closed"
	// EvDeductionRegistered: a deduction registration succeeded.
	EvDeductionRegistered EventType = "deduction_registered"
	// EvDebitFailed: a deduction failed (registration refused, debit
	// refused, or found failed by query).
	EvDebitFailed EventType = "debit_failed"
	// EvDebitSent: payscorepay accepted the debit of deduction Deduction and is
	// processing it; HfSeqID and ReqDate are kept for a later refund.
	EvDebitSent EventType = "debit_sent"
	// EvPaid: DONE+USER_PAID is known from a verified source.
	EvPaid EventType = "paid"
	// EvDeductNow: an operator asks for a deduction now.
	EvDeductNow EventType = "deduct_now"
	// EvRefund: an operator asks for a refund (AmountFen, Reason, and the
	// caller's Idempotency-Key in Key); the machine gives the refund its id
	// and number. EvRefundSucceeded / EvRefundFailed report the outcome of
	// refund RefundID.
	EvRefund          EventType = "refund"
	EvRefundSucceeded EventType = "refund_succeeded"
	EvRefundFailed    EventType = "refund_failed"
	// EvTimer: an armed timer is due.
	EvTimer EventType = "timer"
	// EvReconcileMismatch: the daily reconciliation found a difference
	// between this session's money and Huifu's trade bill (Reason says
	// which); the session is flagged reconcile_mismatch.
	EvReconcileMismatch EventType = "reconcile_mismatch"
)

// EventTypes lists every event Apply accepts (EvCreate is New's).
var EventTypes = []EventType{EvConfirm, EvStartAccepted, EvStartRejected, EvStarted, EvEnded, EvMeter,
	EvStop, EvStopAccepted, EvStopRejected, EvCancel, EvClose, EvChargerOffline, EvChargerOnline, EvOrderCompleted, EvOrderClosed,
	EvDeductionRegistered, EvDebitSent, EvDebitFailed, EvPaid, EvDeductNow, EvRefund, EvRefundSucceeded,
	EvRefundFailed, EvTimer, EvReconcileMismatch}

// TimerKind names a timer.
type TimerKind string

// The timers of docs/contract.md §1 plus the order poll.
const (
	TimerConfirm    TimerKind = "confirm_timeout"
	TimerStart      TimerKind = "start_timeout"
	TimerStop       TimerKind = "stop_timeout"
	TimerOffline    TimerKind = "offline_grace"
	TimerDebitRetry TimerKind = "debit_retry"
	TimerPoll       TimerKind = "poll"
)

// TimerKinds lists every timer kind.
var TimerKinds = []TimerKind{TimerConfirm, TimerStart, TimerStop, TimerOffline, TimerDebitRetry, TimerPoll}

// Event is one input to the machine. It is a flat record (no interfaces) so
// it is cheap to build, to persist and to decode; which fields matter depends
// on Type. At is when the engine received or decided the event: the machine's
// only notion of "now".
type Event struct {
	Type EventType `json:"type"`
	At   time.Time `json:"at"`
	By   Source    `json:"by"`

	// ChargerTime is the time the charger reported (txn ts, meter ts); the
	// machine decides whether it is credible against At.
	ChargerTime time.Time `json:"charger_time,omitzero"`
	MeterWh     int64     `json:"meter_wh,omitempty"`
	Seq         int64     `json:"seq,omitempty"`
	// Reason: a charger's ended/rejected reason, a cancel or close reason, a
	// refund reason, a failure description.
	Reason string `json:"reason,omitempty"`
	// CmdID is the command an ack answers.
	CmdID string `json:"cmd_id,omitempty"`
	// Offline marks a txn event that happened while the charger was offline.
	Offline bool `json:"offline,omitempty"`

	// Pay Score facts.
	OutOrderNo string `json:"out_order_no,omitempty"`
	Package    string `json:"package,omitempty"`
	OrderState string `json:"order_state,omitempty"` // for EvOrderClosed: REVOKED or EXPIRED
	Deduction  int    `json:"attempt,omitempty"`     // the deduction's number (1, 2, …)
	// OutTradeNo names the registration a deduction event is about ("" when
	// the source does not say).
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// HfSeqID and ReqDate identify a payment (EvDebitSent, EvPaid: what a
	// refund needs; the machine also tells the user's own payment from our
	// debit by it) or a refund (EvRefundSucceeded).
	HfSeqID   string    `json:"hf_seq_id,omitempty"`
	ReqDate   string    `json:"req_date,omitempty"`
	AmountFen money.Fen `json:"amount_fen,omitempty"`
	// RefundID names the refund an outcome is about (EvRefundSucceeded,
	// EvRefundFailed); an EvRefund's is given by the machine.
	RefundID string `json:"refund_id,omitempty"`
	// Key is the caller's idempotency key of an EvRefund, kept with it: a
	// second EvRefund with the same key is a no-op.
	Key string `json:"key,omitempty"`
	// EndTime is the end_time actually sent with complete (EvOrderCompleted).
	EndTime time.Time `json:"end_time,omitzero"`

	// TimerID identifies the timer that fired (EvTimer).
	TimerID string `json:"timer_id,omitempty"`

	// Creation parameters (EvCreate only).
	Create *CreateParams `json:"create,omitempty"`
}

// CreateParams are the facts a session is created with.
type CreateParams struct {
	ID            string       `json:"id"`
	ChargerID     string       `json:"charger_id"`
	Connector     int          `json:"connector"`
	OpenID        string       `json:"openid"`
	MaxAmountFen  money.Fen    `json:"max_amount_fen"`
	Tariff        money.Tariff `json:"tariff"`
	OutOrderNo    string       `json:"out_order_no"`
	Package       string       `json:"package,omitempty"`
	CreateReqDate string       `json:"create_req_date,omitempty"`
}

// ErrBadEvent is returned (wrapped) by DecodeEvent and Event.Validate.
var ErrBadEvent = errors.New("bad event")

// Validate checks that e is well-formed for its type; it does not look at any
// session. The engine validates everything that comes from outside before it
// becomes an Event, so a failure here is a programming error or bad stored data.
func (e Event) Validate() error {
	known := e.Type == EvCreate
	for _, t := range EventTypes {
		if t == e.Type {
			known = true
		}
	}
	switch {
	case !known:
		return fmt.Errorf("%w: unknown type %q", ErrBadEvent, e.Type)
	case e.At.IsZero():
		return fmt.Errorf("%w: %s without time", ErrBadEvent, e.Type)
	case e.By == "":
		return fmt.Errorf("%w: %s without source", ErrBadEvent, e.Type)
	}
	switch e.Type {
	case EvCreate:
		if e.Create == nil || e.Create.ID == "" || e.Create.ChargerID == "" || e.Create.Connector <= 0 ||
			e.Create.MaxAmountFen <= 0 || e.Create.OutOrderNo == "" {
			return fmt.Errorf("%w: create needs id, charger, connector, max amount and out_order_no", ErrBadEvent)
		}
	case EvMeter, EvStarted, EvEnded:
		if e.MeterWh < 0 {
			return fmt.Errorf("%w: %s with negative register", ErrBadEvent, e.Type)
		}
	case EvTimer:
		if e.TimerID == "" {
			return fmt.Errorf("%w: timer without id", ErrBadEvent)
		}
	case EvRefund:
		if e.AmountFen <= 0 {
			return fmt.Errorf("%w: refund needs a positive amount", ErrBadEvent)
		}
	case EvRefundSucceeded, EvRefundFailed:
		if e.RefundID == "" {
			return fmt.Errorf("%w: %s without refund id", ErrBadEvent, e.Type)
		}
	case EvDeductionRegistered, EvDebitFailed, EvDebitSent:
		if e.Deduction <= 0 {
			return fmt.Errorf("%w: %s without deduction number", ErrBadEvent, e.Type)
		}
	}
	return nil
}

// DecodeEvent decodes and validates a persisted or queued event.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}
