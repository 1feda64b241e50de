package fsm

import "strconv"

// Refunds of a paid session. The machine gives each refund its id and
// number from the record it applies to, so two concurrent refunds never
// share one (the store's compare-and-set makes the loser re-apply).

var (
	keyUsed = guardNot("a refund was asked for with this Idempotency-Key", "no refund was asked for with this Idempotency-Key", func(st *step) bool {
		_, ok := st.s.RefundByKey(st.e.Key)
		return ok
	})
	keyOtherRefund = guard("the refund asked for with this Idempotency-Key was for another amount or reason", func(st *step) bool {
		r, ok := st.s.RefundByKey(st.e.Key)
		return ok && (r.AmountFen != st.e.AmountFen || r.Reason != st.e.Reason)
	})
	withinRefundable = guard("the amount is within what is left to refund", func(st *step) bool {
		return st.e.AmountFen <= st.s.RefundableFen()
	})
	pendingRefund = guard("the refund is pending", func(st *step) bool {
		r, ok := st.s.RefundByID(st.e.RefundID)
		return ok && r.Status == RefundPending
	})
	refundsAll = guard("with it everything paid is refunded", func(st *step) bool {
		r, _ := st.s.RefundByID(st.e.RefundID)
		return st.s.RefundsSucceededFen()+r.AmountFen >= st.s.Payment.PaidFen
	})
)

var doRefund = action("number the refund; refund it", func(st *step) error {
	s, e := &st.s, st.e
	no := len(s.Refunds) + 1
	id := "r" + strconv.Itoa(no)
	s.Refunds = append(s.Refunds, Refund{ID: id, No: no, AmountFen: e.AmountFen, Reason: e.Reason, By: e.By, At: e.At,
		Status: RefundPending, Key: e.Key})
	eff := st.effect(EffRefund)
	eff.RefundID, eff.RefundNo, eff.AmountFen, eff.Reason = id, no, e.AmountFen, e.Reason
	eff.OrgReqDate, eff.OrgHfSeqID = s.Payment.ReqDate, s.Payment.HfSeqID
	return nil
})

var doRefundSucceeded = action("mark the refund succeeded", func(st *step) error {
	r := st.refund()
	r.Status = RefundSucceeded
	r.HfSeqID = st.e.HfSeqID
	return nil
})

var doRefundFailed = action("mark the refund failed", func(st *step) error {
	st.refund().Status = RefundFailed
	return nil
})

// refund is the session's refund the event names (a guard found it).
func (st *step) refund() *Refund {
	for i := range st.s.Refunds {
		if st.s.Refunds[i].ID == st.e.RefundID {
			return &st.s.Refunds[i]
		}
	}
	panic("fsm: refund " + st.e.RefundID + " vanished between guard and action")
}
