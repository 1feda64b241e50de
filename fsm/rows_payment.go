package fsm

import (
	"fmt"
	"time"
)

// The Pay Score order after the charging: completion, deductions (a
// registration then a debit, docs/payscore.md §6) and the payment.

var (
	completeAsked  = guard("complete was asked for", func(st *step) bool { return !st.s.CompleteSentAt.IsZero() })
	orderCompleted = guard("the order is completed", func(st *step) bool { return !st.s.CompletedAt.IsZero() })
	// registrationAwaited: the event answers the registration of the
	// current deduction, asked for and not yet answered (invariant 5).
	registrationAwaited = guard("the registration of this deduction is awaited", func(st *step) bool {
		return st.s.Payment.awaitsRegistration(st.e.Deduction)
	})
	newDebitAnswer = guard("a new answer to this deduction's debit", func(st *step) bool {
		p := &st.s.Payment
		return st.e.Deduction == p.Debited && st.e.HfSeqID != "" && p.HfSeqID != st.e.HfSeqID &&
			(st.e.OutTradeNo == "" || st.e.OutTradeNo == p.OutTradeNo)
	})
	currentDeduction = guard("it is about the current deduction", func(st *step) bool {
		p := &st.s.Payment
		return st.e.Deduction == p.Deductions && (st.e.OutTradeNo == "" || st.e.OutTradeNo == p.OutTradeNo || !p.Registered)
	})
	deductionInFlight = guardNot("a deduction is in flight", "no deduction is in flight", func(st *step) bool { return !st.s.Payment.idle() })
	// registrationAsked: a registration is asked for and not answered.
	registrationAsked = guard("its registration is awaited", func(st *step) bool {
		p := &st.s.Payment
		return !p.Registered && p.Failures < p.Deductions
	})
)

// awaitsRegistration reports whether registration n is asked for and not
// yet answered: it is the current deduction, none is registered, and it
// neither failed nor was debited.
func (p *Payment) awaitsRegistration(n int) bool {
	return n == p.Deductions && !p.Registered && p.Failures < n && p.Debited < n
}

// idle reports whether no deduction is in flight: every deduction
// started has failed (invariant 5: at most one live registration).
func (p *Payment) idle() bool { return !p.Registered && p.Failures >= p.Deductions }

var doOrderClosed = action("cancel (order_revoked or order_expired)", func(st *step) error {
	s, e := &st.s, st.e
	s.CancelReason = ReasonOrderRevoked
	if e.OrderState == "EXPIRED" {
		s.CancelReason = ReasonOrderExpired
	}
	st.note(e.OrderState)
	st.enterCancelled()
	return nil
})

var doOrderCompleted = action("register deduction 1", func(st *step) error {
	s, e := &st.s, st.e
	s.CompletedAt = e.At
	if !e.EndTime.IsZero() {
		s.EndTime = e.EndTime
	}
	st.registerDeduction()
	return nil
})

var doRegistered = action("debit this registration (once); poll", func(st *step) error {
	s, e := &st.s, st.e
	p := &s.Payment
	p.Registered = true
	p.OutTradeNo = e.OutTradeNo
	p.RegisterSeqID = e.HfSeqID
	// Invariant 5: the one debit of this registration.
	p.Debited = e.Deduction
	eff := st.effect(EffDebit)
	eff.Deduction = e.Deduction
	eff.OutTradeNo = e.OutTradeNo
	eff.AmountFen = s.AmountFen
	st.arm(TimerPoll, e.At.Add(st.m.cfg.PollInterval))
	return nil
})

var doDebitSent = action("keep the debit's hf_seq_id and req_date for refunds", func(st *step) error {
	st.s.Payment.HfSeqID, st.s.Payment.ReqDate = st.e.HfSeqID, st.e.ReqDate
	return nil
})

var doDeductionFailed = action("count the failure; arm the debit retry (flag payment_overdue after enough)", func(st *step) error {
	p := &st.s.Payment
	p.Registered = false
	p.Failures++
	p.LastFail = st.e.Reason
	st.note(st.e.Reason)
	if p.Failures >= st.m.cfg.OverdueAfter {
		st.flag(FlagPaymentOverdue)
	}
	st.arm(TimerDebitRetry, st.e.At.Add(st.m.backoff(p.Failures)))
	return nil
})

// doPaid: DONE+USER_PAID is known (invariant 6: once).
var doPaid = action("record the payment (and whether the user paid it themselves)", func(st *step) error {
	s, e := &st.s, st.e
	p := &s.Payment
	p.ByUser = st.paidByUser()
	p.Registered = false
	p.PaidFen = s.AmountFen
	if e.AmountFen > 0 {
		if e.AmountFen != s.AmountFen {
			st.anomaly(fmt.Sprintf("paid %s, billed %s", e.AmountFen.Yuan(), s.AmountFen.Yuan()))
		}
		p.PaidFen = e.AmountFen
	}
	if e.HfSeqID != "" {
		p.HfSeqID, p.ReqDate = e.HfSeqID, e.ReqDate
	}
	if s.CompletedAt.IsZero() {
		s.CompletedAt = e.At
	}
	s.PaidAt = e.At
	return nil
})

// paidByUser decides whether a payment is the user's own (主动支付) rather
// than our debit, from the record it applies to: no debit of ours was in
// flight (the session was not deducting), or the payment's hf_seq_id is
// known and is not our debit's.
func (st *step) paidByUser() bool {
	p := &st.s.Payment
	if st.from != Deducting {
		return true
	}
	return st.e.HfSeqID != "" && p.HfSeqID != "" && st.e.HfSeqID != p.HfSeqID
}

var doDeductNow = action("register a deduction now", func(st *step) error {
	st.disarm(TimerDebitRetry)
	st.registerDeduction()
	return nil
})

func (st *step) registerDeduction() {
	s := &st.s
	s.Payment.Deductions++
	eff := st.effect(EffRegisterDeduction)
	eff.Deduction = s.Payment.Deductions
	eff.OutOrderNo = s.OutOrderNo
	eff.AmountFen = s.AmountFen
	st.res.Changed = true
}

func (m *Machine) backoff(failures int) time.Duration {
	i := min(failures, len(m.cfg.DebitRetry)) - 1
	return m.cfg.DebitRetry[max(i, 0)]
}
