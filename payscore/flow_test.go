package payscore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

var bg = context.Background()

// TestEveryEndpoint walks the whole life of a session through all eight
// endpoints: create → confirm → complete → register → debit → paid → refund.
func TestEveryEndpoint(t *testing.T) {
	e := newEnv(t)
	const session = "01jbz3k5q8r9t2v4w6x8y0a2c4"
	created := e.create(t, session, 5000)
	if created.OutOrderNo == "" || created.HfSeqID == "" || created.Package == "" || created.State != payscore.StateCreated {
		t.Fatalf("create reply: %+v", created)
	}
	no := created.OutOrderNo

	// The order can be found by each of the three locators.
	for _, loc := range []payscore.OrderLocator{{OutOrderNo: no}, {HfSeqID: created.HfSeqID}, {ReqSeqID: payscore.ReqSeqID(session, payscore.StepCreate, 1, payscore.FormatDate(e.clock.Now()))}} {
		o, err := e.client.QueryOrder(bg, loc)
		if err != nil || o.OutOrderNo != no || o.State != payscore.StateCreated {
			t.Fatalf("query %+v: %+v %v", loc, o, err)
		}
	}

	if err := e.sb.Confirm(no); err != nil {
		t.Fatal(err)
	}
	conf := e.waitNotification(t, payscore.KindUserConfirmed, no, 1)
	if conf.ReqSeqID != payscore.ReqSeqID(session, payscore.StepCreate, 1, payscore.FormatDate(e.clock.Now())) || conf.OpenID != testOpenID || conf.ReqDate != payscore.FormatDate(e.clock.Now()) {
		t.Fatalf("confirm notification: %+v", conf)
	}
	if o := e.query(t, no); !o.UserConfirmed() {
		t.Fatalf("after confirm: %+v", o)
	}

	if err := e.client.CompleteOrder(bg, e.completeReq(no, 1234)); err != nil {
		t.Fatal(err)
	}
	o := e.query(t, no)
	if !o.Completed() || o.Collection.State != payscore.CollectionUserPaying || o.TotalAmount != 1234 || o.Collection.PayingAmount != 1234 {
		t.Fatalf("after complete: %+v", o)
	}

	reg := e.register(t, session, 1, no)
	if reg.OutTradeNo == "" || reg.HfSeqID == "" {
		t.Fatalf("registration: %+v", reg)
	}
	ds, err := e.client.QueryDeduction(bg, payscore.OrderLocator{OutOrderNo: no})
	if err != nil || ds.OutTradeNo != reg.OutTradeNo || ds.TransStat != payscore.TransProcessing {
		t.Fatalf("query deduction: %+v %v", ds, err)
	}

	debit, err := e.client.Debit(bg, e.debitReq(session, 1, reg))
	if err != nil {
		t.Fatal(err)
	}
	if debit.HfSeqID == "" || debit.TransStat != payscore.TransProcessing || debit.RespCode != payscore.CodeAccepted {
		t.Fatalf("debit: %+v", debit)
	}
	paid := e.waitNotification(t, payscore.KindPaymentSucceeded, no, 1)
	if paid.TransAmt != 1234 || paid.TransHfSeqID != debit.HfSeqID || paid.TransReqDate != debit.ReqDate || paid.ReqSeqID != payscore.ReqSeqID(session, payscore.StepDebit, 1, payscore.FormatDate(e.clock.Now())) {
		t.Fatalf("payment notification: %+v (debit %+v)", paid, debit)
	}
	if o := e.query(t, no); !o.Paid() || o.Collection.PaidAmount != 1234 || len(o.Collection.Details) != 1 {
		t.Fatalf("after debit: %+v", o)
	}
	if ds, _ := e.client.QueryDeduction(bg, payscore.OrderLocator{OutOrderNo: no}); ds.TransStat != payscore.TransSucceeded {
		t.Fatalf("deduction after debit: %+v", ds)
	}

	refund := func(n int, amt money.Fen) (*payscore.RefundResult, error) {
		return e.client.Refund(bg, payscore.RefundRequest{
			ReqSeqID: payscore.ReqSeqID(session, payscore.StepRefund, n, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(), Amount: amt,
			OrgReqDate: debit.ReqDate, OrgHfSeqID: debit.HfSeqID, Remark: "test",
		})
	}
	r1, err := refund(1, 234)
	if err != nil || r1.TransStat != payscore.TransSucceeded || r1.HfSeqID == "" {
		t.Fatalf("refund: %+v %v", r1, err)
	}
	if _, err := refund(2, 1001); !payscore.IsParamError(err) && !isCode(err, payscore.CodeLogicError) {
		t.Fatalf("over-refund: %v", err)
	}
	if _, err := refund(3, 1000); err != nil {
		t.Fatalf("refund rest: %v", err)
	}
	led := e.sb.Ledger()[no]
	if led.Collected != 1234 || led.Refunded != 1234 {
		t.Fatalf("ledger: %+v", led)
	}
}

func isCode(err error, code string) bool {
	var pe *payscore.Error
	return errors.As(err, &pe) && pe.Code == code
}

// TestUserPaysThemselves: 主动支付 after a debit failed; the refund uses the
// notification's trans_req_date / trans_hf_seq_id.
func TestUserPaysThemselves(t *testing.T) {
	e := newEnv(t)
	const session = "01jbz3k5q8r9t2v4w6x8y0u5er"
	no := e.completed(t, session, 800)
	e.sb.FailDebits(1)
	reg := e.register(t, session, 1, no)
	if _, err := e.client.Debit(bg, e.debitReq(session, 1, reg)); err != nil {
		t.Fatal(err)
	}
	if o := e.query(t, no); o.Paid() {
		t.Fatal("failed debit paid the order")
	}
	if err := e.sb.PayByUser(no); err != nil {
		t.Fatal(err)
	}
	n := e.waitNotification(t, payscore.KindPaymentSucceeded, no, 1)
	if n.TransHfSeqID == "" || n.TransReqDate == "" || n.TransAmt != 800 {
		t.Fatalf("notification: %+v", n)
	}
	if !e.query(t, no).Paid() {
		t.Fatal("not paid")
	}
	// A debit after the user paid is refused as ORDER_DONE (even with a fresh registration).
	if _, err := e.client.RegisterDeduction(bg, payscore.RegisterDeductionRequest{ReqSeqID: payscore.ReqSeqID(session, payscore.StepRegister, 2, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(), Order: payscore.OrderLocator{OutOrderNo: no}}); !payscore.IsOrderDone(err) {
		t.Fatalf("register after paid: %v", err)
	}
	if _, err := e.client.Refund(bg, payscore.RefundRequest{ReqSeqID: payscore.ReqSeqID(session, payscore.StepRefund, 1, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(),
		Amount: 800, OrgReqDate: n.TransReqDate, OrgHfSeqID: n.TransHfSeqID}); err != nil {
		t.Fatal(err)
	}
	if led := e.sb.Ledger()[no]; led.Collected != 800 || led.Refunded != 800 {
		t.Fatalf("ledger %+v", led)
	}
}

// TestRules covers the WeChat rules of docs/payscore.md §6 as the sandbox enforces
// them, each through the real client over HTTP.
func TestRules(t *testing.T) {
	tests := []struct {
		name  string
		opts  []envOption
		check func(t *testing.T, e *env)
	}{
		{"complete before confirm is refused", nil, func(t *testing.T, e *env) {
			no := e.create(t, "r1", 1000).OutOrderNo
			err := e.client.CompleteOrder(bg, e.completeReq(no, 500))
			if !payscore.IsInvalidOrderState(err) || payscore.IsUncertain(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"complete is accepted once", nil, func(t *testing.T, e *env) {
			no := e.completed(t, "r2", 500)
			err := e.client.CompleteOrder(bg, e.completeReq(no, 500))
			if !payscore.IsInvalidOrderState(err) {
				t.Fatalf("second complete: %v", err)
			}
			if o, _ := e.sb.Order(no); o.Completes != 1 {
				t.Fatalf("completes = %d", o.Completes)
			}
		}},
		{"end_time later than the complete call is refused", nil, func(t *testing.T, e *env) {
			no := e.confirmed(t, "r3", 1000)
			req := e.completeReq(no, 500)
			req.TimeRange.End = e.clock.Now().Add(time.Second)
			if err := e.client.CompleteOrder(bg, req); !payscore.IsParamError(err) {
				t.Fatalf("got %v", err)
			}
			req.TimeRange.End = e.clock.Now() // exactly the call time is allowed
			if err := e.client.CompleteOrder(bg, req); err != nil {
				t.Fatalf("end == now: %v", err)
			}
			if o, _ := e.sb.Order(no); !o.EndTime.Equal(e.clock.Now().Truncate(time.Second)) {
				t.Fatalf("end time recorded %v", o.EndTime)
			}
		}},
		{"end_time must be after the start", nil, func(t *testing.T, e *env) {
			no := e.confirmed(t, "r4", 1000) // OnAccept: start = confirm time
			err := e.client.Call(bg, payscore.PathCompleteOrder, map[string]string{
				"huifu_id": e.client.HuifuID(), "out_order_no": no, "ord_amt": "5.00",
				"time_range": `{"end_time":"` + payscore.FormatDateTime(e.clock.Now().Add(-time.Hour)) + `"}`,
			}, nil)
			if !payscore.IsParamError(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"end_time is Beijing time", nil, func(t *testing.T, e *env) {
			no := e.confirmed(t, "r4b", 1000)
			e.clock.Advance(time.Hour)
			// now − 30 min written as UTC wall time would be 8 h earlier than
			// meant, i.e. before the start: the client must convert.
			req := e.completeReq(no, 500)
			req.TimeRange.End = e.clock.Now().Add(-30 * time.Minute).UTC()
			if err := e.client.CompleteOrder(bg, req); err != nil {
				t.Fatalf("got %v", err)
			}
		}},
		{"total above the risk fund is refused", nil, func(t *testing.T, e *env) {
			no := e.confirmed(t, "r5", 1000)
			if err := e.client.CompleteOrder(bg, e.completeReq(no, 1001)); !payscore.IsParamError(err) {
				t.Fatalf("got %v", err)
			}
			if err := e.client.CompleteOrder(bg, e.completeReq(no, 1000)); err != nil {
				t.Fatalf("total == risk fund: %v", err)
			}
		}},
		{"payments minus discounts must equal the total", nil, func(t *testing.T, e *env) {
			no := e.confirmed(t, "r6", 1000)
			req := e.completeReq(no, 500)
			req.PostDiscounts = []payscore.PostItem{{Name: "优惠", Amount: 100}}
			if err := e.client.CompleteOrder(bg, req); !errors.Is(err, payscore.ErrInvalidRequest) {
				t.Fatalf("client check: %v", err)
			}
			// The sandbox enforces it too, for requests that bypass the check.
			err := e.client.Call(bg, payscore.PathCompleteOrder, map[string]string{
				"huifu_id": e.client.HuifuID(), "out_order_no": no, "ord_amt": "5.00",
				"time_range":     `{"end_time":"` + payscore.FormatDateTime(e.clock.Now().Add(-time.Minute)) + `"}`,
				"post_payments":  `[{"name":"电费","amount":500}]`,
				"post_discounts": `[{"name":"优惠","amount":100}]`,
			}, nil)
			if !payscore.IsParamError(err) {
				t.Fatalf("sandbox check: %v", err)
			}
			req.PostPayments = []payscore.PostItem{{Name: "电费", Amount: 600}}
			if err := e.client.CompleteOrder(bg, req); err != nil {
				t.Fatalf("600 − 100 = 500: %v", err)
			}
		}},
		{"registration is single use", nil, func(t *testing.T, e *env) {
			no := e.completed(t, "r7", 500)
			e.sb.FailDebits(1)
			reg := e.register(t, "r7", 1, no)
			if _, err := e.client.Debit(bg, e.debitReq("r7", 1, reg)); err != nil {
				t.Fatal(err)
			}
			if _, err := e.client.Debit(bg, e.debitReq("r7", 2, reg)); !payscore.IsInvalidOrderState(err) {
				t.Fatalf("second debit on one registration: %v", err)
			}
		}},
		{"registration lives 24 hours", nil, func(t *testing.T, e *env) {
			no := e.completed(t, "r8", 500)
			reg := e.register(t, "r8", 1, no)
			e.clock.Advance(24 * time.Hour)
			if _, err := e.client.Debit(bg, e.debitReq("r8", 1, reg)); !payscore.IsInvalidOrderState(err) {
				t.Fatalf("debit of expired registration: %v", err)
			}
			if ds, _ := e.client.QueryDeduction(bg, payscore.OrderLocator{OutOrderNo: no}); ds.TransStat != payscore.TransFailed {
				t.Fatalf("expired registration shows %+v", ds)
			}
			reg2 := e.register(t, "r8", 2, no) // an expired one is no longer live
			if _, err := e.client.Debit(bg, e.debitReq("r8", 2, reg2)); err != nil {
				t.Fatal(err)
			}
			e.waitNotification(t, payscore.KindPaymentSucceeded, no, 1)
		}},
		{"one live registration at a time", nil, func(t *testing.T, e *env) {
			no := e.completed(t, "r9", 500)
			e.register(t, "r9", 1, no)
			_, err := e.client.RegisterDeduction(bg, payscore.RegisterDeductionRequest{ReqSeqID: payscore.ReqSeqID("r9", payscore.StepRegister, 2, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(), Order: payscore.OrderLocator{OutOrderNo: no}})
			if !payscore.IsInvalidOrderState(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"registration needs a completed order", nil, func(t *testing.T, e *env) {
			no := e.confirmed(t, "r10", 500)
			_, err := e.client.RegisterDeduction(bg, payscore.RegisterDeductionRequest{ReqSeqID: payscore.ReqSeqID("r10", payscore.StepRegister, 1, payscore.FormatDate(e.clock.Now())), ReqDate: e.clock.Now(), Order: payscore.OrderLocator{OutOrderNo: no}})
			if !payscore.IsInvalidOrderState(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"cancel in CREATED and in USER_CONFIRM; twice is ORDER_CANCELED", nil, func(t *testing.T, e *env) {
			a := e.create(t, "r11a", 500).OutOrderNo
			b := e.confirmed(t, "r11b", 500)
			for _, no := range []string{a, b} {
				if err := e.client.CancelOrder(bg, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: no}, Reason: "用户取消"}); err != nil {
					t.Fatal(err)
				}
				if o := e.query(t, no); o.State != payscore.StateRevoked || !o.Closed() {
					t.Fatalf("after cancel: %+v", o)
				}
			}
			err := e.client.CancelOrder(bg, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: a}, Reason: "用户取消"})
			if !payscore.IsOrderCanceled(err) {
				t.Fatalf("second cancel: %v", err)
			}
			if err := e.client.CompleteOrder(bg, e.completeReq(b, 100)); !payscore.IsOrderCanceled(err) {
				t.Fatalf("complete after cancel: %v", err)
			}
		}},
		{"no cancel after complete by default", nil, func(t *testing.T, e *env) {
			no := e.completed(t, "r12", 500)
			err := e.client.CancelOrder(bg, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: no}, Reason: "x"})
			if !payscore.IsInvalidOrderState(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"cancel after complete only without a live registration (configured)", []envOption{withSandbox(func(o *sandbox.Options) { o.AllowCancelAfterComplete = true })}, func(t *testing.T, e *env) {
			no := e.completed(t, "r13", 500)
			e.register(t, "r13", 1, no)
			cancel := payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: no}, Reason: "x"}
			if err := e.client.CancelOrder(bg, cancel); !payscore.IsInvalidOrderState(err) {
				t.Fatalf("cancel with live registration: %v", err)
			}
			e.clock.Advance(25 * time.Hour)
			if err := e.client.CancelOrder(bg, cancel); err != nil {
				t.Fatalf("cancel once the registration expired: %v", err)
			}
		}},
		{"CREATED expires after 30 days", nil, func(t *testing.T, e *env) {
			no := e.create(t, "r14", 500).OutOrderNo
			e.clock.Advance(30 * 24 * time.Hour)
			if o := e.query(t, no); o.State != payscore.StateExpired || !o.Closed() {
				t.Fatalf("got %+v", o)
			}
			if err := e.sb.Confirm(no); err == nil {
				t.Fatal("confirmed an expired order")
			}
		}},
		{"refusal leaves the order CREATED", nil, func(t *testing.T, e *env) {
			no := e.create(t, "r15", 500).OutOrderNo
			if err := e.sb.Refuse(no); err != nil {
				t.Fatal(err)
			}
			if o := e.query(t, no); o.State != payscore.StateCreated {
				t.Fatalf("got %+v", o)
			}
			if n := e.countNotifications(payscore.KindUserConfirmed, no); n != 0 {
				t.Fatalf("%d confirm notifications", n)
			}
		}},
		{"without openid the debit fails silently", nil, func(t *testing.T, e *env) {
			req := e.createReq("r16", 1000)
			d := map[string]string{ // bypasses the client's openid check
				"req_seq_id": req.ReqSeqID, "req_date": payscore.FormatDate(req.ReqDate), "huifu_id": e.client.HuifuID(),
				"service_introduction": "充电", "notify_url": "http://127.0.0.1:1/none",
				"risk_fund": `{"name":"ESTIMATE_ORDER_COST","amount":1000}`, "time_range": `{"start_time":"OnAccept"}`,
			}
			var out struct {
				OutOrderNo string `json:"out_order_no"`
			}
			if err := e.client.Call(bg, payscore.PathCreateOrder, d, &out); err != nil {
				t.Fatal(err)
			}
			e.sb.Confirm(out.OutOrderNo)
			e.clock.Advance(time.Hour)
			if err := e.client.CompleteOrder(bg, e.completeReq(out.OutOrderNo, 500)); err != nil {
				t.Fatal(err)
			}
			reg := e.register(t, "r16", 1, out.OutOrderNo)
			if _, err := e.client.Debit(bg, e.debitReq("r16", 1, reg)); err != nil {
				t.Fatal(err)
			}
			if o := e.query(t, out.OutOrderNo); o.Paid() {
				t.Fatal("paid without openid")
			}
			if ds, _ := e.client.QueryDeduction(bg, payscore.OrderLocator{OutOrderNo: out.OutOrderNo}); ds.TransStat != payscore.TransFailed {
				t.Fatalf("deduction %+v", ds)
			}
		}},
		{"same req_seq_id and data replays; other data is a duplicate", nil, func(t *testing.T, e *env) {
			first := e.create(t, "r17", 500)
			again := e.create(t, "r17", 500)
			if again.OutOrderNo != first.OutOrderNo || len(e.sb.Orders()) != 1 {
				t.Fatalf("replay made a new order: %+v vs %+v", again, first)
			}
			_, err := e.client.CreateOrder(bg, e.createReq("r17", 600))
			if !payscore.IsDuplicate(err) || !payscore.IsUncertain(err) {
				t.Fatalf("other data under one id: %v", err)
			}
		}},
		{"duplicates rejected when configured", []envOption{withSandbox(func(o *sandbox.Options) { o.RejectDuplicates = true })}, func(t *testing.T, e *env) {
			e.create(t, "r18", 500)
			_, err := e.client.CreateOrder(bg, e.createReq("r18", 500))
			if !payscore.IsDuplicate(err) || !payscore.IsUncertain(err) || payscore.IsRetryable(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"unknown order", nil, func(t *testing.T, e *env) {
			_, err := e.client.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "SO-nope"})
			if !payscore.IsOrderNotExist(err) || payscore.IsUncertain(err) || payscore.IsRetryable(err) {
				t.Fatalf("got %v", err)
			}
		}},
		{"invalid requests are refused before sending", nil, func(t *testing.T, e *env) {
			long := e.createReq("r19", 500)
			long.ServiceIntroduction = "一二三四五六七八九十一二三四五六七八九十一"
			noOpen := e.createReq("r19", 500)
			noOpen.OpenID = ""
			for _, err := range []error{
				func() error { _, err := e.client.CreateOrder(bg, long); return err }(),
				func() error { _, err := e.client.CreateOrder(bg, noOpen); return err }(),
				e.client.CancelOrder(bg, payscore.CancelOrderRequest{Reason: "x"}),
				e.client.CompleteOrder(bg, payscore.CompleteOrderRequest{OutOrderNo: "x", Amount: 100}),
				e.client.CompleteOrder(bg, payscore.CompleteOrderRequest{OutOrderNo: "x", Amount: 100, TimeRange: payscore.TimeRange{End: e.clock.Now()},
					PostPayments: []payscore.PostItem{{Name: "a", Amount: 50}, {Name: "a", Amount: 50}}}),
			} {
				if !errors.Is(err, payscore.ErrInvalidRequest) {
					t.Errorf("got %v", err)
				}
			}
			if n := e.calls.sends(payscore.PathCreateOrder) + e.calls.sends(payscore.PathCompleteOrder); n != 0 {
				t.Fatalf("%d requests sent", n)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, newEnv(t, tc.opts...))
		})
	}
}
