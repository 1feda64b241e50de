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

// perform does one effect. It returns an outcome for metrics, or an error:
// errRetry (or a transient error) to try again later, any other error to
// give up and record an anomaly. Every case first checks that the session
// still wants the effect, so an entry performed late or twice does no harm.
func (e *Engine) perform(ctx context.Context, eff fsm.Effect) (string, error) {
	switch eff.Kind {
	case fsm.EffArmTimer:
		_, err := e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvTimer, At: e.now(), By: fsm.ByTimer, TimerID: eff.ID})
		return "done", ignoreRefused(err)
	case fsm.EffDisarmTimer:
		return "skipped", nil // the store drops the timer at commit
	case fsm.EffSendStart:
		return e.sendStart(ctx, eff)
	case fsm.EffSendStop:
		ctx, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		err := e.cmd.SendCommand(ctx, eff.ChargerID, charger.Command{CmdID: eff.CmdID, Type: charger.CmdStop,
			SessionID: eff.Session, Connector: eff.Connector})
		if err != nil {
			return "", retry(fmt.Errorf("publish stop: %w", err))
		}
		return "done", nil
	case fsm.EffCancelOrder:
		return e.cancelOrder(ctx, eff)
	case fsm.EffCompleteOrder:
		return e.completeOrder(ctx, eff)
	case fsm.EffRegisterDeduction:
		return e.registerDeduction(ctx, eff)
	case fsm.EffDebit:
		return e.debit(ctx, eff)
	case fsm.EffQueryOrder:
		return "done", e.reconcile(ctx, eff.Session)
	case fsm.EffRefund:
		return e.refund(ctx, eff)
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

// payErr turns a Pay Score failure into a retry when it may succeed later.
func payErr(what string, err error) error {
	err = fmt.Errorf("%s: %w", what, err)
	if payscore.IsRetryable(err) || payscore.IsUncertain(err) || payscore.IsFrequencyLimited(err) {
		return retry(err)
	}
	return err
}

// sendStart publishes the start command — only while the session is still
// user_confirmed (invariant 1) and before the command's deadline, so a stale
// start never reaches a charger.
func (e *Engine) sendStart(ctx context.Context, eff fsm.Effect) (string, error) {
	s, err := e.store.GetSession(ctx, eff.Session)
	if err != nil {
		return "", err
	}
	now := e.now()
	if s.State != fsm.UserConfirmed || s.StartCmdID != eff.CmdID || s.ConfirmedAt.IsZero() {
		return "skipped", nil
	}
	if !eff.Deadline.IsZero() && now.After(eff.Deadline) {
		return "skipped", nil // the start timeout settles the session
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	err = e.cmd.SendCommand(ctx, eff.ChargerID, charger.Command{CmdID: eff.CmdID, Type: charger.CmdStart,
		SessionID: eff.Session, Connector: eff.Connector, Deadline: eff.Deadline, MaxEnergyWh: eff.MaxEnergyWh})
	if err != nil {
		return "", retry(fmt.Errorf("publish start: %w", err))
	}
	if e.obs != nil {
		e.obs.ConfirmToStart(now.Sub(s.ConfirmedAt))
	}
	return "done", nil
}

func (e *Engine) cancelOrder(ctx context.Context, eff fsm.Effect) (string, error) {
	err := e.pay.CancelOrder(ctx, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: eff.OutOrderNo}, Reason: cancelReasonText(eff.Reason)})
	switch {
	case err == nil, payscore.IsOrderCanceled(err):
		return "done", nil
	case payscore.IsRetryable(err), payscore.IsUncertain(err), payscore.IsFrequencyLimited(err):
		return "", retry(fmt.Errorf("cancel order: %w", err))
	}
	// The order may be in a state that cannot be cancelled (revoked or
	// expired already, or completed): look, and settle.
	if o, qerr := e.pay.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: eff.OutOrderNo}); qerr == nil &&
		(o.State == payscore.StateRevoked || o.State == payscore.StateExpired) {
		return "done", nil
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
// accepted once: anything uncertain is settled by a query before trying again.
func (e *Engine) completeOrder(ctx context.Context, eff fsm.Effect) (string, error) {
	s, err := e.store.GetSession(ctx, eff.Session)
	if err != nil {
		return "", err
	}
	if s.State != fsm.Stopping || !s.CompletedAt.IsZero() {
		return "skipped", nil
	}
	// WeChat refuses an end_time later than its own clock at the call, with
	// no tolerance. Rather than move the measured end, call a moment later:
	// the margin covers a small difference between our clock and WeChat's.
	if notBefore := eff.EndTime.Add(e.cfg.EndTimeMargin); e.now().Before(notBefore) {
		return "", deferUntil(notBefore) // not a failure: the worker is free meanwhile
	}
	end, clamped := payscore.ClampEndTime(eff.EndTime, s.ConfirmedAt, e.now(), e.cfg.EndTimeMargin)
	if clamped && !end.Equal(eff.EndTime) {
		e.log.Info("end_time clamped at call", "session", s.ID, "charger", s.ChargerID, "out_order_no", s.OutOrderNo,
			"measured", eff.EndTime, "sent", end)
	}
	items := make([]payscore.PostItem, 0, len(eff.Lines))
	for _, l := range eff.Lines {
		items = append(items, payscore.PostItem{Name: l.Name, Amount: l.AmountFen})
	}
	err = e.pay.CompleteOrder(ctx, payscore.CompleteOrderRequest{OutOrderNo: eff.OutOrderNo, Amount: eff.AmountFen,
		TimeRange: payscore.TimeRange{End: end}, PostPayments: items})
	if err == nil {
		_, err = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvOrderCompleted, At: e.now(), By: fsm.ByPayScore, EndTime: end})
		return "done", ignoreRefused(err)
	}
	// Did an earlier attempt get through? Ask.
	o, qerr := e.pay.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: eff.OutOrderNo})
	if qerr == nil && (o.StateDescription == payscore.StateDescMchComplete || o.State == payscore.StateDone) {
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvOrderCompleted, At: e.now(), By: fsm.ByPayScore, EndTime: end})
		if aerr == nil && o.State == payscore.StateDone && o.Collection.State == payscore.CollectionUserPaid {
			_, aerr = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvPaid, At: e.now(), By: fsm.ByPayScore, AmountFen: o.Collection.PaidAmount})
		}
		return "done", ignoreRefused(aerr)
	}
	// Not completed: a retry is safe. Keep trying — the money is owed — and
	// let an operator see the reason.
	if !payscore.IsRetryable(err) && !payscore.IsUncertain(err) {
		e.anomaly(ctx, store.Anomaly{SessionID: s.ID, ChargerID: s.ChargerID, Reason: "complete refused: " + err.Error()})
	}
	return "", retry(fmt.Errorf("complete order: %w", err))
}

// registerDeduction registers deduction attempt n (a new registration per
// attempt: a failed debit needs a new one).
func (e *Engine) registerDeduction(ctx context.Context, eff fsm.Effect) (string, error) {
	s, err := e.store.GetSession(ctx, eff.Session)
	if err != nil {
		return "", err
	}
	p := s.Payment
	if s.State != fsm.Completed || p.Attempts != eff.Attempt || p.Registered || p.Failures >= p.Attempts {
		return "skipped", nil
	}
	reg, err := e.pay.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{
		ReqSeqID: payscore.ReqSeqID(s.ID, payscore.StepRegister, eff.Attempt), ReqDate: eff.DueAt,
		Order: payscore.OrderLocator{OutOrderNo: s.OutOrderNo},
	})
	if payscore.IsDuplicate(err) {
		// This attempt was registered before: find it.
		st, qerr := e.pay.QueryDeduction(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
		if qerr != nil {
			return "", payErr("query deduction", qerr)
		}
		reg, err = &payscore.Registration{OutTradeNo: st.OutTradeNo}, nil
	}
	if err != nil {
		if payscore.IsOrderDone(err) {
			return "done", e.reconcile(ctx, s.ID) // paid already (the user's own payment)
		}
		if perr := payErr("register deduction", err); errors.As(perr, new(errRetry)) {
			return "", perr
		}
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Attempt: eff.Attempt,
			Reason: "registration refused: " + payscoreReason(err)})
		return "done", ignoreRefused(aerr)
	}
	_, err = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDeductionRegistered, At: e.now(), By: fsm.ByPayScore,
		Attempt: eff.Attempt, OutTradeNo: reg.OutTradeNo, HfSeqID: reg.HfSeqID})
	return "done", ignoreRefused(err)
}

// debit sends payscorepay for the registration of attempt n — once: a
// retry re-sends the SAME req_seq_id, which Huifu recognises.
func (e *Engine) debit(ctx context.Context, eff fsm.Effect) (string, error) {
	s, err := e.store.GetSession(ctx, eff.Session)
	if err != nil {
		return "", err
	}
	if s.State != fsm.Deducting || s.Payment.DebitAttempt != eff.Attempt {
		return "skipped", nil
	}
	res, err := e.pay.Debit(ctx, payscore.DebitRequest{
		ReqSeqID: payscore.ReqSeqID(s.ID, payscore.StepDebit, eff.Attempt), ReqDate: eff.DueAt,
		DeductReqSeqID: payscore.ReqSeqID(s.ID, payscore.StepRegister, eff.Attempt), DeductHfSeqID: s.Payment.RegisterSeqID,
		OutTradeNo: eff.OutTradeNo, GoodsDesc: e.cfg.GoodsDesc, ClientIP: e.cfg.ClientIP,
	})
	if payscore.IsDuplicate(err) {
		return "done", e.reconcile(ctx, s.ID) // sent before: the facts decide
	}
	if err != nil {
		if perr := payErr("debit", err); errors.As(perr, new(errRetry)) {
			return "", perr
		}
		_, aerr := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Attempt: eff.Attempt,
			Reason: "debit refused: " + payscoreReason(err)})
		return "done", ignoreRefused(aerr)
	}
	if res.HfSeqID != "" {
		if _, err := e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitSent, At: e.now(), By: fsm.ByPayScore, Attempt: eff.Attempt,
			HfSeqID: res.HfSeqID, ReqDate: res.ReqDate}); ignoreRefused(err) != nil {
			return "", err
		}
	}
	switch res.TransStat {
	case payscore.TransFailed:
		_, err = e.Apply(ctx, s.ID, fsm.Event{Type: fsm.EvDebitFailed, At: e.now(), By: fsm.ByPayScore, Attempt: eff.Attempt, Reason: "debit failed"})
		return "done", ignoreRefused(err)
	case payscore.TransSucceeded:
		return "done", e.reconcile(ctx, s.ID) // confirm DONE+USER_PAID from the order itself
	}
	return "done", nil // processing: the notification or the poll settles it
}

// reconcile queries the order (and, while deducting, the deduction) and
// applies what the facts show. It is the poll's work and the settlement of
// every uncertain call.
func (e *Engine) reconcile(ctx context.Context, id string) error {
	s, err := e.store.GetSession(ctx, id)
	if err != nil {
		return ignoreRefused(err)
	}
	if s.State.Terminal() {
		return nil
	}
	o, err := e.pay.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
	if err != nil {
		return payErr("query order", err)
	}
	now := e.now()
	var ev *fsm.Event
	switch {
	case o.State == payscore.StateDoing && o.StateDescription == payscore.StateDescUserConfirm && s.State == fsm.Created:
		ev = &fsm.Event{Type: fsm.EvConfirm, At: now, By: fsm.ByPayScore, Reason: "query"}
	case o.State == payscore.StateDone && o.Collection.State == payscore.CollectionUserPaid:
		ev = &fsm.Event{Type: fsm.EvPaid, At: now, By: fsm.ByPayScore, AmountFen: o.Collection.PaidAmount}
	case o.State == payscore.StateRevoked || o.State == payscore.StateExpired:
		ev = &fsm.Event{Type: fsm.EvOrderClosed, At: now, By: fsm.ByPayScore, OrderState: o.State}
	case s.State == fsm.Deducting:
		d, err := e.pay.QueryDeduction(ctx, payscore.OrderLocator{OutOrderNo: s.OutOrderNo})
		if err != nil {
			return payErr("query deduction", err)
		}
		if d.TransStat == payscore.TransFailed && (d.OutTradeNo == "" || d.OutTradeNo == s.Payment.OutTradeNo) {
			ev = &fsm.Event{Type: fsm.EvDebitFailed, At: now, By: fsm.ByPayScore, Attempt: s.Payment.DebitAttempt, Reason: "debit failed (query)"}
		}
	}
	if ev == nil {
		return nil
	}
	_, err = e.Apply(ctx, id, *ev)
	return ignoreRefused(err)
}

// refundNo is the refund's number among the session's refunds; an entry
// queued by a version that numbered it in Attempt still has it there.
func refundNo(eff fsm.Effect) int {
	if eff.RefundNo > 0 {
		return eff.RefundNo
	}
	return eff.Attempt
}

func (e *Engine) refund(ctx context.Context, eff fsm.Effect) (string, error) {
	res, err := e.pay.Refund(ctx, payscore.RefundRequest{
		ReqSeqID: payscore.ReqSeqID(eff.Session, payscore.StepRefund, refundNo(eff)), ReqDate: eff.DueAt,
		Amount: eff.AmountFen, OrgReqDate: eff.OrgReqDate, OrgHfSeqID: eff.OrgHfSeqID, Remark: eff.Reason,
	})
	if err != nil {
		if perr := payErr("refund", err); errors.As(perr, new(errRetry)) {
			return "", perr
		}
		_, aerr := e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvRefundFailed, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID, Reason: payscoreReason(err)})
		return "done", ignoreRefused(aerr)
	}
	switch res.TransStat {
	case payscore.TransSucceeded, "":
		_, err = e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvRefundSucceeded, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID, HfSeqID: res.HfSeqID})
	case payscore.TransFailed:
		_, err = e.Apply(ctx, eff.Session, fsm.Event{Type: fsm.EvRefundFailed, At: e.now(), By: fsm.ByPayScore, RefundID: eff.RefundID})
	default:
		return "", retry(errors.New("refund processing")) // the same req_seq_id is asked again
	}
	return "done", ignoreRefused(err)
}
