package payscore_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// benchData is a typical create request's data.
var benchData = map[string]string{
	"huifu_id": "6666000100000001", "notify_url": "https://cf.example/notify/huifu/payscore", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
	"req_date": "20250601", "req_seq_id": "CR000101jbz3k5q8r9t2v4w6x8y0a2c4", "risk_fund": `{"name":"ESTIMATE_ORDER_COST","amount":5000}`,
	"service_introduction": "充电服务", "time_range": `{"start_time":"OnAccept"}`,
}

// BenchmarkSign: canonical serialisation + RSA-2048 signature, per call.
func BenchmarkSign(b *testing.B) {
	k := payscoretest.HuifuKeys(b)
	for b.Loop() {
		data, err := payscore.CanonicalJSON(benchData)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.Signer.Sign(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify: RSA-2048 verification of a reply's raw data, per call.
func BenchmarkVerify(b *testing.B) {
	k := payscoretest.HuifuKeys(b)
	data, _ := payscore.CanonicalJSON(benchData)
	sig, _ := k.Signer.Sign(data)
	for b.Loop() {
		if err := k.Verifier.Verify(data, sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateToPaid: the whole request sequence of a paid session
// (create, confirm, complete, register, debit, query) against the sandbox
// over loopback HTTP, with real signatures both ways.
func BenchmarkCreateToPaid(b *testing.B) {
	sb, err := sandbox.New(sandbox.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	huifu := httptest.NewServer(sb.Handler())
	defer huifu.Close()
	cfg, _ := sb.ClientConfig(huifu.URL)
	notify := httptest.NewServer(payscore.NotifyHandler(cfg.Verifier, func(context.Context, payscore.Notification) error { return nil }, payscore.NotifyOptions{}))
	defer notify.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	cfg.NotifyURL, cfg.HTTPClient = notify.URL, &http.Client{Transport: tr}
	c, _ := payscore.New(cfg)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		session := fmt.Sprintf("bench%08d", i)
		now := time.Now()
		created, err := c.CreateOrder(ctx, payscore.CreateOrderRequest{
			ReqSeqID: payscore.ReqSeqID(session, payscore.StepCreate, 1, payscore.FormatDate(now)), ReqDate: now, ServiceIntroduction: "充电服务",
			RiskFund: payscore.RiskFund{Amount: 5000}, TimeRange: payscore.TimeRange{Start: now.Add(-time.Hour)}, OpenID: "o",
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := sb.Confirm(created.OutOrderNo); err != nil {
			b.Fatal(err)
		}
		if err := c.CompleteOrder(ctx, payscore.CompleteOrderRequest{OutOrderNo: created.OutOrderNo, Amount: 1230,
			TimeRange: payscore.TimeRange{End: now.Add(-time.Minute)}}); err != nil {
			b.Fatal(err)
		}
		reg, err := c.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{ReqSeqID: payscore.ReqSeqID(session, payscore.StepRegister, 1, payscore.FormatDate(now)),
			ReqDate: now, Order: payscore.OrderLocator{OutOrderNo: created.OutOrderNo}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Debit(ctx, payscore.DebitRequest{ReqSeqID: payscore.ReqSeqID(session, payscore.StepDebit, 1, payscore.FormatDate(now)), ReqDate: now,
			DeductReqSeqID: reg.ReqSeqID, OutTradeNo: reg.OutTradeNo, GoodsDesc: "充电费用", ClientIP: "203.0.113.7"}); err != nil {
			b.Fatal(err)
		}
		o, err := c.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: created.OutOrderNo})
		if err != nil || !o.Paid() {
			b.Fatalf("not paid: %+v %v", o, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
}
