package payscore_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
)

// fakeHuifu answers every request with data (raw bytes, as given) signed
// over signedBytes, and records the request body.
func fakeHuifu(t *testing.T, data, signedBytes string) (*payscore.Client, *[]byte) {
	t.Helper()
	k := payscoretest.HuifuKeys(t)
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		sig, _ := k.Signer.Sign([]byte(signedBytes))
		sj, _ := json.Marshal(sig)
		io.WriteString(w, `{"data": `+data+`, "sign": `+string(sj)+`}`)
	}))
	t.Cleanup(srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := payscore.New(payscore.Config{BaseURL: srv.URL, SysID: "sys", ProductID: "prod", HuifuID: "hf",
		NotifyURL: "https://cf.example/notify/huifu/payscore", Signer: k.Signer, Verifier: k.Verifier,
		HTTPClient: &http.Client{Transport: tr}, MaxSends: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c, &body
}

func TestReplyVerifiedOverRawBytes(t *testing.T) {
	// Not canonical (order, spaces): verifies only over the raw bytes.
	data := `{"resp_code": "00000000", "resp_desc":"ok", "out_order_no":"SO1", "hf_seq_id":"H1"}`
	c, body := fakeHuifu(t, data, data)
	res, err := c.CreateOrder(bg, payscore.CreateOrderRequest{ReqSeqID: "CR0001x", ReqDate: mustTime(t, "2025-06-01T00:00:00Z"),
		ServiceIntroduction: "充电", RiskFund: payscore.RiskFund{Amount: 100}, TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	// Missing package and state are tolerated [decided].
	if res.OutOrderNo != "SO1" || res.Package != "" || res.State != "" {
		t.Fatalf("got %+v", res)
	}
	// The request is the four-member envelope with data exactly as signed.
	var env map[string]json.RawMessage
	if err := json.Unmarshal(*body, &env); err != nil || len(env) != 4 {
		t.Fatalf("envelope %s", *body)
	}
	want := `{"huifu_id":"hf","notify_url":"https://cf.example/notify/huifu/payscore","openid":"o","req_date":"20250601","req_seq_id":"CR0001x",` +
		`"risk_fund":"{\"name\":\"ESTIMATE_ORDER_COST\",\"amount\":100}","service_introduction":"充电","time_range":"{\"start_time\":\"OnAccept\"}"}`
	if string(env["data"]) != want {
		t.Fatalf("data\n got %s\nwant %s", env["data"], want)
	}
	var sign string
	json.Unmarshal(env["sign"], &sign)
	if err := payscoretest.HuifuKeys(t).Verifier.Verify(env["data"], sign); err != nil {
		t.Fatalf("request signature: %v", err)
	}
}

func TestReplyVerifiedOverCanonicalFallback(t *testing.T) {
	// Re-spaced by a proxy after signing: the canonical form still verifies.
	data := `{ "state":"DONE", "resp_code":"00000000", "out_order_no":"SO1", "total_amount": 1234,` +
		` "collection": {"state":"USER_PAID","total_amount":1234,"paid_amount":1234,"details":[{"seq":1,"amount":1234,"paid_type":"MCH"}]} }`
	canon, err := payscore.Canonicalize([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := fakeHuifu(t, data, string(canon))
	o, err := c.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "SO1"})
	if err != nil {
		t.Fatal(err)
	}
	// collection as an object and total_amount as a number are tolerated.
	if !o.Paid() || o.TotalAmount != 1234 || o.Collection.PaidAmount != 1234 || len(o.Collection.Details) != 1 {
		t.Fatalf("got %+v", o)
	}
}

func TestReplyWithWrongSignatureIsRefused(t *testing.T) {
	data := `{"resp_code":"00000000","out_order_no":"SO1"}`
	c, _ := fakeHuifu(t, data, `{"resp_code":"00000000","out_order_no":"SO2"}`)
	_, err := c.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "SO1"})
	if !errors.Is(err, payscore.ErrNoValidSignature) || !payscore.IsUncertain(err) {
		t.Fatalf("got %v", err)
	}
}

// TestMalformedCollectionIsUnreadable: a verified reply that cannot be read
// is Final (an anomaly to record), not uncertain: settling it by query would
// only get the same reply again (docs/payscore.md §3).
func TestMalformedCollectionIsUnreadable(t *testing.T) {
	data := `{"collection":"{not json","resp_code":"00000000"}`
	c, _ := fakeHuifu(t, data, data)
	_, err := c.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "SO1"})
	if !errors.Is(err, payscore.ErrUnreadableReply) || payscore.Classify(err) != payscore.Final {
		t.Fatalf("got %v (%v)", err, payscore.Classify(err))
	}
}

func TestWeChatNamesInDesc(t *testing.T) {
	for _, tc := range []struct {
		desc string
		is   func(error) bool
	}{
		{"ORDER_DONE:订单已完成", payscore.IsOrderDone},
		{"[ORDER_CANCELED] 已取消", payscore.IsOrderCanceled},
		{"INVALID_ORDER_STATE", payscore.IsInvalidOrderState},
		{"ORDER_NOT_EXIST 订单不存在", payscore.IsOrderNotExist},
		{"PARAM_ERROR", payscore.IsParamError},
		{"FREQUENCY_LIMITED", payscore.IsFrequencyLimited},
	} {
		data := `{"resp_code":"21000000","resp_desc":"` + tc.desc + `"}`
		c, _ := fakeHuifu(t, data, data)
		err := c.CancelOrder(bg, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: "SO1"}, Reason: "r"})
		if !tc.is(err) || payscore.IsUncertain(err) || payscore.IsRetryable(err) {
			t.Errorf("%s: got %v", tc.desc, err)
		}
	}
}

func TestConfigRequired(t *testing.T) {
	if _, err := payscore.New(payscore.Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
}
