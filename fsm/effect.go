package fsm

import (
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// EffectKind names something the engine must do because of a transition.
type EffectKind string

// The effects. The machine only describes them; the engine persists them with
// the transition (the outbox) and performs them afterwards, retrying until done
// or settled by a query. Every effect carries what makes it idempotent.
const (
	// EffSendStart publishes `start` (CmdID, Deadline, MaxEnergyWh). The ONLY
	// place a start is ever asked for is the confirm transition.
	EffSendStart EffectKind = "send_start"
	// EffSendStop publishes `stop` (CmdID).
	EffSendStop EffectKind = "send_stop"
	// EffCancelOrder cancels the Pay Score order (Reason, repeated on retry).
	EffCancelOrder EffectKind = "cancel_order"
	// EffCompleteOrder completes the order (AmountFen, Lines, EndTime). The
	// engine clamps EndTime to the moment of the call if needed and reports
	// the time it sent in EvOrderCompleted.
	EffCompleteOrder EffectKind = "complete_order"
	// EffRegisterDeduction registers deduction number Deduction.
	EffRegisterDeduction EffectKind = "register_deduction"
	// EffDebit calls payscorepay for deduction Deduction (OutTradeNo).
	EffDebit EffectKind = "debit"
	// EffQueryOrder queries the order (the reconciler's poll).
	EffQueryOrder EffectKind = "query_order"
	// EffRefund refunds RefundID (AmountFen); RefundNo numbers it among the
	// session's refunds (its req_seq_id).
	EffRefund EffectKind = "refund"
	// EffArmTimer asks for EvTimer{TimerID: ID} at DueAt.
	EffArmTimer EffectKind = "arm_timer"
	// EffDisarmTimer withdraws the timer TimerID (an optimisation: a stale
	// timer that fires anyway is ignored by the machine).
	EffDisarmTimer EffectKind = "disarm_timer"
)

// EffectKinds lists every effect kind.
var EffectKinds = []EffectKind{EffSendStart, EffSendStop, EffCancelOrder, EffCompleteOrder,
	EffRegisterDeduction, EffDebit, EffQueryOrder, EffRefund, EffArmTimer, EffDisarmTimer}

// Effect is one thing to do, as plain data.
type Effect struct {
	// ID is unique and deterministic: "<session>/<seq>". A timer's ID is its
	// timer id.
	ID      string     `json:"id"`
	Kind    EffectKind `json:"kind"`
	Session string     `json:"session"`
	// DueAt is when to perform it: the event's time for immediate effects,
	// the expiry for timers.
	DueAt time.Time `json:"due_at"`

	Timer   TimerKind `json:"timer,omitempty"`    // EffArmTimer
	TimerID string    `json:"timer_id,omitempty"` // EffDisarmTimer

	ChargerID   string    `json:"charger_id,omitempty"`
	Connector   int       `json:"connector,omitempty"`
	CmdID       string    `json:"cmd_id,omitempty"`
	Deadline    time.Time `json:"deadline,omitzero"`
	MaxEnergyWh int64     `json:"max_energy_wh,omitempty"`

	OutOrderNo string       `json:"out_order_no,omitempty"`
	AmountFen  money.Fen    `json:"amount_fen,omitempty"`
	Lines      []money.Line `json:"lines,omitempty"`
	StartTime  time.Time    `json:"start_time,omitzero"`
	EndTime    time.Time    `json:"end_time,omitzero"`
	Deduction  int          `json:"attempt,omitempty"` // the deduction's number (register, debit)
	OutTradeNo string       `json:"out_trade_no,omitempty"`
	Reason     string       `json:"reason,omitempty"`
	RefundID   string       `json:"refund_id,omitempty"`
	RefundNo   int          `json:"refund_no,omitempty"`
	// OrgReqDate / OrgHfSeqID locate the payment a refund refers to.
	OrgReqDate string `json:"org_req_date,omitempty"`
	OrgHfSeqID string `json:"org_hf_seq_id,omitempty"`
}
