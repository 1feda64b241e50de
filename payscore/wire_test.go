package payscore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// TestMidnightStopsRetries: a retry inside Call that would cross Beijing
// midnight is not sent with the first day's req_date (Huifu refuses it):
// Call stops with ErrReqDateStale, still retryable, and the attempt dated
// the new day goes through (docs/payscore.md §3).
func TestMidnightStopsRetries(t *testing.T) {
	var clk *clock
	midnightAfterFirstSend := func(_ *sandbox.Options, c *payscore.Config) {
		c.MaxSends = 3
		c.Observer = payscore.ObserverFunc(func(i payscore.CallInfo) {
			if i.Send == 1 {
				clk.Advance(time.Second) // 23:59:59.5 → 00:00:00.5
			}
		})
	}
	e := newEnv(t, midnightAfterFirstSend)
	clk = e.clock
	e.clock.Advance(mustTime(t, "2025-06-01T15:59:59.5Z").Sub(e.clock.Now())) // 23:59:59.5 Beijing
	e.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.Fault5xx)
	req := e.createReq("mid1", 500)
	_, err := e.client.CreateOrder(bg, req)
	var pe *payscore.Error
	if !errors.Is(err, payscore.ErrReqDateStale) || payscore.Classify(err) != payscore.Uncertain || !errors.As(err, &pe) || pe.Sends != 1 {
		t.Fatalf("got %v (%v)", err, payscore.Classify(err))
	}
	// The old day's request, re-sent as it was, is what Huifu refuses.
	if _, err := e.client.CreateOrder(bg, req); !payscore.IsParamError(err) || payscore.Classify(err) != payscore.Retryable {
		t.Fatalf("stale request: %v (%v)", err, payscore.Classify(err))
	}
	// Settled by query (not there), it goes anew, dated today.
	if _, err := e.client.QueryOrder(bg, payscore.OrderLocator{ReqSeqID: req.ReqSeqID}); !payscore.IsOrderNotExist(err) {
		t.Fatalf("query: %v", err)
	}
	res := e.create(t, "mid1", 500)
	o, _ := e.sb.Order(res.OutOrderNo)
	if o.ReqDate != "20250602" || o.ReqSeqID != payscore.ReqSeqID("mid1", payscore.StepCreate, 1, "20250602") {
		t.Fatalf("order %+v", o)
	}
}

// TestResponseCodesClassified: 91111119 is retried; an unknown code is
// uncertain (settle by query); a refused req_date is retryable with a new
// attempt; all through payscore.Classify.
func TestResponseCodesClassified(t *testing.T) {
	t.Run("channel busy is retried", func(t *testing.T) {
		e := newEnv(t)
		e.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultChannelBusy)
		e.create(t, "cb1", 500)
		if n := e.calls.sends(payscore.PathCreateOrder); n != 2 {
			t.Fatalf("%d sends", n)
		}
	})
	t.Run("channel busy throughout is retryable", func(t *testing.T) {
		e := newEnv(t, withSends(2))
		e.sb.FailNext(payscore.PathCreateOrder, 2, sandbox.FaultChannelBusy)
		_, err := e.client.CreateOrder(bg, e.createReq("cb2", 500))
		if c := payscore.Classify(err); c == payscore.Final || !payscore.IsRetryable(err) {
			t.Fatalf("%v: %v", c, err)
		}
	})
	t.Run("unknown code is uncertain", func(t *testing.T) {
		e := newEnv(t)
		e.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultUnknownCode)
		req := e.createReq("uc1", 500)
		_, err := e.client.CreateOrder(bg, req)
		if payscore.Classify(err) != payscore.Uncertain || payscore.IsRetryable(err) {
			t.Fatalf("%v: %v", payscore.Classify(err), err)
		}
		// It did execute: the query finds the order.
		if _, err := e.client.QueryOrder(bg, payscore.OrderLocator{ReqSeqID: req.ReqSeqID}); err != nil {
			t.Fatalf("query: %v", err)
		}
	})
	t.Run("stale req_date is retryable", func(t *testing.T) {
		data := `{"resp_code":"10000000","resp_desc":"PARAM_ERROR:请求日期必须是当前日期"}`
		c, _ := fakeHuifu(t, data, data)
		_, err := c.RegisterDeduction(bg, payscore.RegisterDeductionRequest{ReqSeqID: "RG1", ReqDate: time.Now(), Order: payscore.OrderLocator{OutOrderNo: "SO1"}})
		if payscore.Classify(err) != payscore.Retryable || !errors.Is(err, payscore.ErrReqDateStale) {
			t.Fatalf("%v: %v", payscore.Classify(err), err)
		}
	})
}

// TestDebitOneLocator: payscorepay carries deduct_hf_seq_id when known and
// then not deduct_req_seq_id; the sandbox refuses a request with both.
func TestDebitOneLocator(t *testing.T) {
	e := newEnv(t)
	no := e.completed(t, "ol1", 300)
	reg := e.register(t, "ol1", 1, no)
	var sent map[string]string
	raw := e.rawRequest(t, payscore.PathDebit, func() {
		req := e.debitReq("ol1", 1, reg)
		req.DeductHfSeqID = reg.HfSeqID
		if _, err := e.client.Debit(bg, req); err != nil {
			t.Fatal(err)
		}
	})
	if err := json.Unmarshal(raw, &sent); err != nil || sent["deduct_hf_seq_id"] != reg.HfSeqID || sent["deduct_req_seq_id"] != "" {
		t.Fatalf("sent %v (%v)", sent, err)
	}

	no2 := e.completed(t, "ol2", 300)
	reg2 := e.register(t, "ol2", 1, no2)
	req := e.debitReq("ol2", 1, reg2)
	both := map[string]string{"req_seq_id": req.ReqSeqID, "req_date": payscore.FormatDate(req.ReqDate), "huifu_id": e.client.HuifuID(),
		"deduct_req_seq_id": reg2.ReqSeqID, "deduct_hf_seq_id": reg2.HfSeqID, "out_trade_no": reg2.OutTradeNo,
		"goods_desc": "充电", "risk_check_data": `{"ip_address":"203.0.113.7"}`}
	if err := e.client.Call(bg, payscore.PathDebit, both, nil); !payscore.IsParamError(err) {
		t.Fatalf("both locators: %v", err)
	}
}

// rawRequest captures the data of the request to path sent while fn runs.
func (e *env) rawRequest(t *testing.T, path string, fn func()) []byte {
	t.Helper()
	var got []byte
	e.sb.Inspect(func(p string, data []byte) {
		if p == path {
			got = bytes.Clone(data)
		}
	})
	defer e.sb.Inspect(nil)
	fn()
	return got
}

// TestQueryRepliesReadTolerantly: the same paid order, answered in every
// style the sandbox knows, reads the same; a reply that cannot be read is
// ErrUnreadableReply, Final (docs/payscore.md §3).
func TestQueryRepliesReadTolerantly(t *testing.T) {
	e := newEnv(t)
	no := e.completed(t, "tp1", 1230)
	reg := e.register(t, "tp1", 1, no)
	if _, err := e.client.Debit(bg, e.debitReq("tp1", 1, reg)); err != nil {
		t.Fatal(err)
	}
	want := e.query(t, no)
	if !want.Paid() || want.TotalAmount != 1230 || want.Collection.PaidAmount != 1230 || len(want.Collection.Details) != 1 {
		t.Fatalf("default style: %+v", want)
	}
	for _, style := range []sandbox.ReplyStyle{sandbox.StyleFenNumbers, sandbox.StyleYuanStrings, sandbox.StyleObjects, sandbox.StyleExtraFields} {
		t.Run(string(style), func(t *testing.T) {
			if err := e.sb.SetReplyStyle(style); err != nil {
				t.Fatal(err)
			}
			got := e.query(t, no)
			if got.TotalAmount != want.TotalAmount || got.Collection.State != want.Collection.State ||
				got.Collection.PaidAmount != want.Collection.PaidAmount || got.Collection.TotalAmount != want.Collection.TotalAmount ||
				len(got.Collection.Details) != 1 || got.Collection.Details[0] != want.Collection.Details[0] {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
	t.Run(string(sandbox.StyleUnreadable), func(t *testing.T) {
		e.sb.SetReplyStyle(sandbox.StyleUnreadable)
		_, err := e.client.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: no})
		if !errors.Is(err, payscore.ErrUnreadableReply) || payscore.Classify(err) != payscore.Final {
			t.Fatalf("%v: %v", payscore.Classify(err), err)
		}
	})
}

// TestAmountForms: the table of amount forms the tolerant reader accepts,
// through a real signed reply.
func TestAmountForms(t *testing.T) {
	for _, tc := range []struct {
		json string
		fen  money.Fen
		ok   bool
	}{
		{`1230`, 1230, true}, {`"1230"`, 1230, true}, {`"12.30"`, 1230, true}, {`"12.3"`, 1230, true},
		{`12.3`, 1230, true}, {`"0.01"`, 1, true}, {`" 7 "`, 7, true}, {`null`, 0, true}, {`""`, 0, true},
		{`"12.345"`, 0, false}, {`"abc"`, 0, false}, {`{}`, 0, false}, {`"1e3"`, 0, false}, {`"+5"`, 0, false},
	} {
		data := `{"resp_code":"00000000","out_order_no":"SO1","state":"DONE","total_amount":` + tc.json + `}`
		c, _ := fakeHuifu(t, data, data)
		o, err := c.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "SO1"})
		switch {
		case tc.ok && (err != nil || o.TotalAmount != tc.fen):
			t.Errorf("%s: %v %v", tc.json, o, err)
		case !tc.ok && !errors.Is(err, payscore.ErrUnreadableReply):
			t.Errorf("%s: accepted (%v)", tc.json, err)
		}
	}
}
