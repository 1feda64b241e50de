package session

// The midnight rule (docs/payscore.md §3): Huifu takes a request only with
// the req_date of the day it is sent. A step's logical attempt (deduction n,
// refund n) is therefore sent as the Attempt dated today; when it came due
// on an earlier Beijing day, an attempt of it may have been sent on that
// day and executed, so it is first settled by query — only a query showing
// it did not execute lets a new attempt dated today go out.

import (
	"context"
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
)

// dated returns the attempt of logical attempt n of step to send now, and
// whether an attempt of it may have been sent on an earlier day (it came
// due before today, Beijing time).
func (e *Engine) dated(id string, step payscore.Step, n int, due time.Time) (payscore.Attempt, bool) {
	a := payscore.AttemptOn(id, step, n, e.now())
	return a, !due.IsZero() && payscore.FormatDate(due) < a.ReqDate
}

// earlierRegistration settles a registration that may have been made on an
// earlier day: the order's latest registration, live and unknown to the
// session, is that one. nil means none was made.
func (e *Engine) earlierRegistration(ctx context.Context, s fsm.Session) (*payscore.Registration, error) {
	st, err := e.pay.QueryDeduction(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
	if payscore.IsOrderNotExist(err) {
		return nil, nil // no registration at all
	}
	if err != nil {
		return nil, fmt.Errorf("settle registration of an earlier day: %w", err)
	}
	if st.TransStat == payscore.TransProcessing && st.OutTradeNo != "" && st.OutTradeNo != s.Payment.OutTradeNo {
		return &payscore.Registration{OutTradeNo: st.OutTradeNo, HfSeqID: st.HfSeqID}, nil
	}
	return nil, nil
}

// debitSettled settles a debit that may have been sent on an earlier day,
// from the registration it spends: still live (P) means it was not sent, and
// false is returned; spent (S, or F: failed or expired) means the facts
// decide, and they are handed to the machine.
func (e *Engine) debitSettled(ctx context.Context, s fsm.Session, eff fsm.Effect) (bool, error) {
	st, err := e.pay.QueryDeduction(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
	if err != nil {
		return false, fmt.Errorf("settle debit of an earlier day: %w", err)
	}
	if st.OutTradeNo != eff.OutTradeNo {
		return false, retry(fmt.Errorf("settle debit of an earlier day: the order's registration is %q, not %q", st.OutTradeNo, eff.OutTradeNo))
	}
	switch st.TransStat {
	case payscore.TransProcessing:
		return false, nil
	case payscore.TransFailed:
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Deduction: eff.Deduction,
			OutTradeNo: eff.OutTradeNo, Reason: "debit failed (settled by query)"})
		return true, ignoreRefused(aerr)
	}
	return true, e.reconcile(ctx, s.ID) // spent: the order shows the payment
}

// refundSettled settles refund n when attempts of it may have been sent on
// the days from due to yesterday: each day's attempt is asked for. A refund
// found done or in progress is handed to the machine (or waited for);
// false means none of them executed.
func (e *Engine) refundSettled(ctx context.Context, s fsm.Session, eff fsm.Effect, n int, due time.Time) (bool, error) {
	today := payscore.FormatDate(e.now())
	for day := due; payscore.FormatDate(day) < today; day = day.AddDate(0, 0, 1) {
		a := payscore.AttemptOn(s.ID, payscore.StepRefund, n, day)
		st, err := e.pay.QueryRefund(ctx, payscore.RefundQuery{OrgReqDate: a.ReqDate, OrgReqSeqID: a.ReqSeqID})
		if payscore.IsOrderNotExist(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("settle refund of %s: %w", a.ReqDate, err)
		}
		switch st.TransStat {
		case payscore.TransSucceeded:
			_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvRefundSucceeded, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID, HfSeqID: st.HfSeqID})
			return true, ignoreRefused(aerr)
		case payscore.TransProcessing:
			return true, retry(fmt.Errorf("refund of %s still processing", a.ReqDate))
		}
	}
	return false, nil
}
