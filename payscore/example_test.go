package payscore_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// Example shows one charging session's payment, end to end, against the
// sandbox: create → (user confirms) → complete → register → debit → paid.
func Example() {
	// The sandbox's clock (Huifu's) runs an hour ahead so that the example
	// needn't wait for a real charging session to end.
	huifuNow := func() time.Time { return time.Now().Add(time.Hour) }
	sb, err := sandbox.New(sandbox.Options{Now: huifuNow})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Close()
	huifu := httptest.NewServer(sb.Handler())
	defer huifu.Close()

	cfg, _ := sb.ClientConfig(huifu.URL) // in production: LoadPrivateKey / LoadPublicKey from config
	paid := make(chan payscore.Notification, 4)
	notify := httptest.NewServer(payscore.NotifyHandler(cfg.Verifier, func(_ context.Context, n payscore.Notification) error {
		paid <- n // the engine applies it idempotently; here we just pass it on
		return nil
	}, payscore.NotifyOptions{}))
	defer notify.Close()
	cfg.NotifyURL = notify.URL + "/notify/huifu/payscore"
	client, err := payscore.New(cfg)
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	const session = "01jbz3k5q8r9t2v4w6x8y0a2c4"
	// Each step is sent as an Attempt dated the (Beijing) day it is sent:
	// Huifu refuses any other req_date. Re-sent the same day, it is the same
	// request; on a later day it is a new attempt, sent only after a query
	// showed the earlier one did not execute.
	day := huifuNow()
	start := time.Now()

	created, err := client.CreateOrder(ctx, payscore.CreateOrderRequest{
		ReqSeqID:            payscore.AttemptOn(session, payscore.StepCreate, 1, day).ReqSeqID,
		ReqDate:             day,
		ServiceIntroduction: "充电服务",
		RiskFund:            payscore.RiskFund{Amount: 5000, Description: "充电预估费用"}, // 50.00 yuan, the spending cap
		TimeRange:           payscore.TimeRange{Start: start},
		OpenID:              "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
	})
	if err != nil {
		log.Fatal(err) // payscore.IsUncertain(err): query by ReqSeqID before anything else
	}
	fmt.Println("created:", created.State)

	sb.Confirm(created.OutOrderNo) // the user confirms in WeChat
	if n := <-paid; n.Kind == payscore.KindUserConfirmed {
		order, _ := client.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: created.OutOrderNo})
		fmt.Println("confirmed:", order.UserConfirmed()) // only now may charging start
	}

	stop := start.Add(30 * time.Minute) // the charger's measured stop time
	err = client.CompleteOrder(ctx, payscore.CompleteOrderRequest{
		OutOrderNo: created.OutOrderNo,
		Amount:     1230,
		TimeRange:  payscore.TimeRange{End: stop},
		PostPayments: []payscore.PostItem{
			{Name: "电费", Amount: 830},
			{Name: "服务费", Amount: 400},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	reg, err := client.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{
		ReqSeqID: payscore.AttemptOn(session, payscore.StepRegister, 1, day).ReqSeqID,
		ReqDate:  day,
		Order:    payscore.OrderLocator{OutOrderNo: created.OutOrderNo},
	})
	if err != nil {
		log.Fatal(err)
	}
	debit, err := client.Debit(ctx, payscore.DebitRequest{
		ReqSeqID:       payscore.AttemptOn(session, payscore.StepDebit, 1, day).ReqSeqID,
		ReqDate:        day,
		DeductReqSeqID: reg.ReqSeqID,
		OutTradeNo:     reg.OutTradeNo,
		GoodsDesc:      "充电费用",
		ClientIP:       "203.0.113.7",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("debit:", debit.TransStat)
	n := <-paid
	fmt.Println("notified:", n.Kind, n.TransAmt.Yuan())
	order, _ := client.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: created.OutOrderNo})
	fmt.Println("paid:", order.Paid())
	http.DefaultClient.CloseIdleConnections()
	// Output:
	// created: CREATED
	// confirmed: true
	// debit: P
	// notified: payment_succeeded 12.30
	// paid: true
}

func ExampleReqSeqID() {
	fmt.Println(payscore.ReqSeqID("01jbz3k5q8r9t2v4w6x8y0a2c4", payscore.StepDebit, 2, "20250601"))
	// Output: DB00022025060101jbz3k5q8r9t2v4w6x8y0a2c4
}

func ExampleClampEndTime() {
	start := time.Date(2025, 6, 1, 10, 0, 0, 0, payscore.Beijing)
	now := time.Date(2025, 6, 1, 10, 30, 0, 0, payscore.Beijing)
	measured := now.Add(2 * time.Minute) // the charger's clock runs fast
	end, clamped := payscore.ClampEndTime(measured, start, now, 5*time.Second)
	fmt.Println(payscore.FormatDateTime(end), clamped)
	// Output: 20250601102955 true
}

// ExampleIsUncertain shows how the engine treats an error from a step.
func ExampleIsUncertain() {
	err := error(&payscore.Error{Endpoint: payscore.PathCompleteOrder, HTTPStatus: 502, Uncertain: true, Retryable: true})
	switch {
	case payscore.IsUncertain(err):
		fmt.Println("query the order, then decide")
	case payscore.IsRetryable(err):
		fmt.Println("send the same request again later")
	default:
		fmt.Println("refused: handle the business error")
	}
	// Output: query the order, then decide
}
