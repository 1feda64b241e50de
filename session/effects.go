package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

// commandTimeout bounds one publish to a charger: a broker that does not
// acknowledge within it is retried later rather than holding a worker.
const commandTimeout = 5 * time.Second

// Outcomes of an effect, for metrics.
const (
	outcomeDone    = "done"
	outcomeSkipped = "skipped"
)

// perform does one effect. It returns an outcome for metrics, or an error
// that Classify sorts: retryable or uncertain to try again later, final to
// give up and record an anomaly. Every effect that acts on a session first
// asks the machine whether the session still wants it (fsm.Machine.Wants),
// so an entry performed late or twice does no harm.
//
// rec, when not nil, is the session as the commit that asked for eff left it
// (the immediate path): the machine is asked about it instead of a reload.
func (e *Engine) perform(ctx context.Context, eff fsm.Effect, rec *fsm.Session) (string, error) {
	switch eff.Kind {
	case fsm.EffArmTimer:
		// The machine itself ignores a timer that is no longer armed.
		_, err := e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvTimer, At: e.now(), By: fsm.ByTimer, TimerID: eff.ID})
		return outcomeDone, ignoreRefused(err)
	case fsm.EffDisarmTimer:
		return outcomeSkipped, nil // the store drops the timer at commit
	case fsm.EffQueryOrder:
		return outcomeDone, e.reconcile(ctx, eff.Session)
	}
	var s fsm.Session
	if rec != nil && rec.ID == eff.Session {
		s = *rec
	} else {
		var err error
		if s, err = e.store.GetSession(ctx, eff.Session); err != nil {
			return "", err
		}
	}
	if ok, why := e.machine.Wants(s, eff, e.now()); !ok {
		e.log.Debug("effect no longer wanted", "session", s.ID, "effect", eff.Kind, "why", why)
		return outcomeSkipped, nil
	}
	if err := e.durableEffect(ctx, s, eff); err != nil { // session/durable.go
		return "", err
	}
	switch eff.Kind {
	case fsm.EffSendStart, fsm.EffSendStop:
		return e.command(ctx, s, eff) // sent again while unanswered (resend.go)
	case fsm.EffCancelOrder:
		return e.cancelOrder(ctx, eff)
	case fsm.EffCompleteOrder:
		return e.completeOrder(ctx, s, eff)
	case fsm.EffRegisterDeduction:
		return e.registerDeduction(ctx, s, eff)
	case fsm.EffDebit:
		return e.debit(ctx, s, eff)
	case fsm.EffRefund:
		return e.refund(ctx, s, eff)
	}
	return "", fmt.Errorf("unknown effect %q", eff.Kind)
}

func ignoreRefused(err error) error {
	var r *fsm.RefusedError
	if errors.As(err, &r) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// send publishes a command to the charger. A broker that does not take it
// is retried: the same cmd_id, which the charger de-duplicates.
func (e *Engine) send(ctx context.Context, eff fsm.Effect, c charger.Command) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	if err := e.cmd.SendCommand(ctx, eff.ChargerID, c); err != nil {
		return "", retry(fmt.Errorf("publish %s: %w", c.Type, err))
	}
	return outcomeDone, nil
}

func (e *Engine) cancelOrder(ctx context.Context, eff fsm.Effect) (string, error) {
	err := e.pay.CancelOrder(ctx, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: eff.OutOrderNo}, Reason: cancelReasonText(eff.Reason)})
	switch {
	case err == nil, payscore.IsOrderCanceled(err):
		return outcomeDone, nil
	case Classify(err) != ClassFinal:
		return "", fmt.Errorf("cancel order: %w", err)
	}
	// The order may be in a state that cannot be cancelled (revoked or
	// expired already, or completed): look, and settle.
	if o, qerr := e.pay.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: eff.OutOrderNo}); qerr == nil && o.Closed() {
		return outcomeDone, nil
	}
	return "", fmt.Errorf("cancel order %s: %w", eff.OutOrderNo, err)
}

func cancelReasonText(reason string) string {
	switch reason {
	case fsm.ReasonUserCancelled:
		return "用户取消"
	case fsm.ReasonConfirmTimeout:
		return "用户未确认"
	case fsm.ReasonChargerRejected, fsm.ReasonChargerNeverStarted:
		return "充电桩未启动"
	case fsm.ReasonNoEnergy:
		return "未充电"
	case fsm.ReasonClosedByOperator:
		return "运营人员关闭"
	}
	return "订单取消"
}

// completeOrder completes the Pay Score order with the billed amount and the
// measured end, clamped at the moment of the call (invariant 3). Complete is
// accepted once: any failure is settled by a query before trying again.
func (e *Engine) completeOrder(ctx context.Context, s fsm.Session, eff fsm.Effect) (string, error) {
	// WeChat refuses an end_time later than its own clock at the call, with
	// no tolerance. Rather than move the measured end, call a moment later:
	// the margin covers a small difference between our clock and WeChat's.
	margin := e.machine.Config().CompleteClockMargin
	if notBefore := eff.EndTime.Add(margin); e.now().Before(notBefore) {
		return "", deferUntil(notBefore) // not a failure: the worker is free meanwhile
	}
	end, clamped := payscore.ClampEndTime(eff.EndTime, s.ConfirmedAt, e.now(), margin)
	if clamped && !end.Equal(eff.EndTime) {
		e.log.Info("end_time clamped at call", "session", s.ID, "charger", s.ChargerID, "out_order_no", s.OutOrderNo,
			"measured", eff.EndTime, "sent", end)
	}
	items := make([]payscore.PostItem, 0, len(eff.Lines))
	for _, l := range eff.Lines {
		items = append(items, payscore.PostItem{Name: l.Name, Amount: l.AmountFen})
	}
	err := e.pay.CompleteOrder(ctx, payscore.CompleteOrderRequest{OutOrderNo: eff.OutOrderNo, Amount: eff.AmountFen,
		TimeRange: payscore.TimeRange{End: end}, PostPayments: items})
	if err == nil {
		_, err = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvOrderCompleted, At: e.now(), By: fsm.ByPayScore, EndTime: end})
		return outcomeDone, ignoreRefused(err)
	}
	// Did an earlier attempt get through? Ask.
	o, qerr := e.pay.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: eff.OutOrderNo})
	if qerr == nil && (o.StateDescription == payscore.StateDescMchComplete || o.State == payscore.StateDone) {
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvOrderCompleted, At: e.now(), By: fsm.ByPayScore, EndTime: end})
		if aerr == nil && o.Paid() {
			_, aerr = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvPaid, At: e.now(), By: fsm.ByPayScore, AmountFen: o.Collection.PaidAmount})
		}
		return outcomeDone, ignoreRefused(aerr)
	}
	// Not completed: a retry is safe. Keep trying — the money is owed — and
	// let an operator see why when Pay Score refused for good.
	if Classify(err) == ClassFinal {
		e.anomaly(ctx, store.Anomaly{SessionID: s.ID, ChargerID: s.ChargerID, Reason: "complete refused: " + err.Error()})
	}
	return "", retry(fmt.Errorf("complete order: %w", err))
}

// registerDeduction registers deduction n (a new registration per
// deduction: a failed debit needs a new one).
func (e *Engine) registerDeduction(ctx context.Context, s fsm.Session, eff fsm.Effect) (string, error) {
	a, late := e.dated(s.ID, payscore.StepRegister, eff.Deduction, eff.DueAt)
	var reg *payscore.Registration
	var err error
	if late { // the midnight rule: did an earlier day's attempt register it?
		if reg, err = e.earlierRegistration(ctx, s); err != nil {
			return "", err
		}
	}
	if reg == nil {
		reg, err = e.pay.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{
			ReqSeqID: a.ReqSeqID, ReqDate: e.now(), Order: payscore.OrderLocator{OutOrderNo: s.OutOrderNo},
		})
	}
	if payscore.IsDuplicate(err) {
		// This deduction was registered before: find it.
		st, qerr := e.pay.QueryDeduction(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
		if qerr != nil {
			return "", fmt.Errorf("query deduction: %w", qerr)
		}
		reg, err = &payscore.Registration{OutTradeNo: st.OutTradeNo, HfSeqID: st.HfSeqID}, nil
	}
	if err != nil {
		if payscore.IsOrderDone(err) {
			return outcomeDone, e.reconcile(ctx, s.ID) // paid already (the user's own payment)
		}
		if Classify(err) != ClassFinal {
			return "", fmt.Errorf("register deduction: %w", err)
		}
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Deduction: eff.Deduction,
			Reason: "registration refused: " + payscoreReason(err)})
		return outcomeDone, ignoreRefused(aerr)
	}
	_, err = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDeductionRegistered, At: e.now(), By: fsm.ByPayScore,
		Deduction: eff.Deduction, OutTradeNo: reg.OutTradeNo, HfSeqID: reg.HfSeqID})
	return outcomeDone, ignoreRefused(err)
}

// debit sends payscorepay for the registration of deduction n — once: a
// retry the same day re-sends the SAME req_seq_id, which Huifu recognises;
// a retry on a later day first settles the earlier day's attempt by query
// (session/attempts.go).
func (e *Engine) debit(ctx context.Context, s fsm.Session, eff fsm.Effect) (string, error) {
	a, late := e.dated(s.ID, payscore.StepDebit, eff.Deduction, eff.DueAt)
	if late { // the midnight rule: was it sent on an earlier day?
		if settled, err := e.debitSettled(ctx, s, eff); settled || err != nil {
			return outcomeDone, err
		}
	}
	// One locator of the registration: its hf_seq_id when Huifu gave one,
	// else its req_seq_id — dated the day the debit came due, which is the
	// day the registration answered (the debit is due at that answer).
	res, err := e.pay.Debit(ctx, payscore.DebitRequest{
		ReqSeqID: a.ReqSeqID, ReqDate: e.now(),
		DeductReqSeqID: payscore.AttemptOn(s.ID, payscore.StepRegister, eff.Deduction, eff.DueAt).ReqSeqID, DeductHfSeqID: s.Payment.RegisterSeqID,
		OutTradeNo: eff.OutTradeNo, GoodsDesc: e.cfg.GoodsDesc, ClientIP: e.cfg.ClientIP,
	})
	if payscore.IsDuplicate(err) {
		return outcomeDone, e.reconcile(ctx, s.ID) // sent before: the facts decide
	}
	if err != nil {
		if Classify(err) != ClassFinal {
			return "", fmt.Errorf("debit: %w", err)
		}
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Deduction: eff.Deduction,
			OutTradeNo: eff.OutTradeNo, Reason: "debit refused: " + payscoreReason(err)})
		return outcomeDone, ignoreRefused(aerr)
	}
	if res.HfSeqID != "" {
		if _, err := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitSent, At: e.now(), By: fsm.ByPayScore, Deduction: eff.Deduction,
			OutTradeNo: eff.OutTradeNo, HfSeqID: res.HfSeqID, ReqDate: res.ReqDate}); ignoreRefused(err) != nil {
			return "", err
		}
	}
	switch res.TransStat {
	case payscore.TransFailed:
		_, err = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Deduction: eff.Deduction,
			OutTradeNo: eff.OutTradeNo, Reason: "debit failed"})
		return outcomeDone, ignoreRefused(err)
	case payscore.TransSucceeded:
		return outcomeDone, e.reconcile(ctx, s.ID) // confirm DONE+USER_PAID from the order itself
	}
	return outcomeDone, nil // processing: the notification or the poll settles it
}

// reconcile queries the order (and, while deducting, the deduction) and
// hands the machine what the facts show; the machine decides what they mean
// for the session as it is when the event is applied. It is the poll's work
// and the settlement of every uncertain call.
func (e *Engine) reconcile(ctx context.Context, id string) error {
	s, err := e.store.GetSession(ctx, id)
	if err != nil {
		return ignoreRefused(err)
	}
	if ok, _ := e.machine.Wants(s, fsm.Effect{Kind: fsm.EffQueryOrder}, e.now()); !ok {
		return nil
	}
	o, err := e.pay.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
	if err != nil {
		return fmt.Errorf("query order: %w", err)
	}
	now := e.now()
	var ev *fsm.Event
	switch {
	case o.UserConfirmed():
		ev = &fsm.Event{Type: fsm.EvConfirm, At: now, By: fsm.ByPayScore, Reason: "query"}
	case o.Paid():
		ev = &fsm.Event{Type: fsm.EvPaid, At: now, By: fsm.ByPayScore, AmountFen: o.Collection.PaidAmount}
	case o.Closed():
		ev = &fsm.Event{Type: fsm.EvOrderClosed, At: now, By: fsm.ByPayScore, OrderState: o.State}
	case s.State == fsm.Deducting:
		// The deduction the query is about is the one being debited when
		// the session was read; the machine ignores the answer if the
		// session has moved on to another since.
		d, err := e.pay.QueryDeduction(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
		if err != nil {
			return fmt.Errorf("query deduction: %w", err)
		}
		if d.TransStat == payscore.TransFailed {
			ev = &fsm.Event{Type: fsm.EvDebitFailed, At: now, By: fsm.ByPayScore, Deduction: s.Payment.Debited,
				OutTradeNo: d.OutTradeNo, Reason: "debit failed (query)"}
		}
	}
	if ev == nil {
		return nil
	}
	_, err = e.Apply(ctx, id, *ev)
	return ignoreRefused(err)
}

func (e *Engine) refund(ctx context.Context, s fsm.Session, eff fsm.Effect) (string, error) {
	r, _ := s.RefundByID(eff.RefundID) // the machine wants it: it is pending
	a, late := e.dated(eff.Session, payscore.StepRefund, r.No, eff.DueAt)
	if late { // the midnight rule: was it sent on an earlier day?
		if settled, err := e.refundSettled(ctx, s, eff, r.No, eff.DueAt); settled || err != nil {
			return outcomeDone, err
		}
	}
	res, err := e.pay.Refund(ctx, payscore.RefundRequest{
		ReqSeqID: a.ReqSeqID, ReqDate: e.now(),
		Amount: eff.AmountFen, OrgReqDate: eff.OrgReqDate, OrgHfSeqID: eff.OrgHfSeqID, Remark: eff.Reason,
	})
	if err != nil {
		if Classify(err) != ClassFinal {
			return "", fmt.Errorf("refund: %w", err)
		}
		_, aerr := e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvRefundFailed, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID, Reason: payscoreReason(err)})
		return outcomeDone, ignoreRefused(aerr)
	}
	switch res.TransStat {
	case payscore.TransSucceeded, "":
		_, err = e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvRefundSucceeded, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID, HfSeqID: res.HfSeqID})
	case payscore.TransFailed:
		_, err = e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvRefundFailed, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID})
	default:
		return "", retry(errors.New("refund processing")) // the same req_seq_id is asked again
	}
	return outcomeDone, ignoreRefused(err)
}
