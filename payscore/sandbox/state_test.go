package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// durable is one life of a sandbox with a state file: the sandbox, its HTTP
// server and a client rebuilt from its ClientConfig.
type durable struct {
	sb     *sandbox.Sandbox
	srv    *httptest.Server
	client *payscore.Client
	tr     *http.Transport
	notTr  *http.Transport
}

func (d *durable) close() {
	d.sb.Close()
	d.srv.Close()
	d.tr.CloseIdleConnections()
	d.notTr.CloseIdleConnections()
}

func startDurable(t *testing.T, file string, now func() time.Time, notifyURL string) *durable {
	t.Helper()
	d := &durable{tr: &http.Transport{}, notTr: &http.Transport{}}
	sb, err := sandbox.New(sandbox.Options{StateFile: file, Now: now, NotifyBackoff: time.Millisecond,
		NotifyClient: &http.Client{Transport: d.notTr}})
	if err != nil {
		t.Fatal(err)
	}
	d.sb = sb
	d.srv = httptest.NewServer(sb.Handler())
	cfg, err := sb.ClientConfig(d.srv.URL)
	if err != nil {
		d.close()
		t.Fatal(err)
	}
	cfg.NotifyURL = notifyURL
	cfg.HTTPClient = &http.Client{Transport: d.tr}
	if d.client, err = payscore.New(cfg); err != nil {
		d.close()
		t.Fatal(err)
	}
	return d
}

// TestStateFileSurvivesRestart: an order created, confirmed and completed on
// one sandbox is registered, debited and paid on its successor; replays,
// numbering, keys and the ledger carry over.
func TestStateFileSurvivesRestart(t *testing.T) {
	var mu sync.Mutex
	clock := time.Date(2025, 6, 1, 2, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	notify := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		var d map[string]string
		_ = json.Unmarshal([]byte(r.PostForm.Get("resp_data")), &d)
		io.WriteString(w, payscore.AckPrefix+d["req_seq_id"])
	}))
	defer notify.Close()
	file := filepath.Join(t.TempDir(), "sub", "payscore-sandbox.json")
	ctx := context.Background()
	createReq := func(seq string) payscore.CreateOrderRequest {
		return payscore.CreateOrderRequest{ReqSeqID: seq, ReqDate: clock, ServiceIntroduction: "充电",
			RiskFund: payscore.RiskFund{Amount: 1000}, TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: "o1"}
	}
	firstCreate := createReq("DUR-C1")

	// Life A: create, confirm, complete.
	a := startDurable(t, file, now, notify.URL)
	res, err := a.client.CreateOrder(ctx, firstCreate)
	if err != nil {
		a.close()
		t.Fatal(err)
	}
	no, hf := res.OutOrderNo, res.HfSeqID
	if err := a.sb.Confirm(no); err != nil {
		a.close()
		t.Fatal(err)
	}
	advance(time.Hour)
	if err := a.client.CompleteOrder(ctx, payscore.CompleteOrderRequest{OutOrderNo: no, Amount: 300,
		TimeRange: payscore.TimeRange{End: now().Add(-time.Minute)}}); err != nil {
		a.close()
		t.Fatal(err)
	}
	huifuPub, merchantPriv := a.sb.PublicKey(), a.sb.MerchantPrivateKey()
	a.close()
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	// Life B: the same Huifu, the same order.
	b := startDurable(t, file, now, notify.URL)
	defer func() { b.close() }()
	if b.sb.PublicKey() != huifuPub || b.sb.MerchantPrivateKey() != merchantPriv {
		t.Fatal("keys changed across the restart")
	}
	if o, ok := b.sb.Order(no); !ok || o.StateDescription != payscore.StateDescMchComplete || o.Total != 300 || o.Completes != 1 || o.HfSeqID != hf {
		t.Fatalf("order after restart: %+v %v", o, ok)
	}
	// The create from before the restart replays; its twin with other data is a duplicate.
	again, err := b.client.CreateOrder(ctx, firstCreate)
	if err != nil || again.OutOrderNo != no || again.HfSeqID != hf {
		t.Fatalf("replayed create: %+v %v", again, err)
	}
	other := firstCreate
	other.ServiceIntroduction = "别的"
	if _, err := b.client.CreateOrder(ctx, other); !isCode(err, payscore.CodeDuplicate) {
		t.Fatalf("create with a used req_seq_id and other data: %v", err)
	}
	// Located by hf_seq_id and create req_seq_id: the indexes are back.
	for _, loc := range []payscore.OrderLocator{{HfSeqID: hf}, {ReqSeqID: firstCreate.ReqSeqID}} {
		if o, err := b.client.QueryOrder(ctx, loc); err != nil || o.OutOrderNo != no {
			t.Fatalf("query %+v: %+v %v", loc, o, err)
		}
	}
	reg, err := b.client.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{ReqSeqID: "DUR-R1", ReqDate: now(),
		Order: payscore.OrderLocator{OutOrderNo: no}})
	if err != nil {
		t.Fatal(err)
	}
	debit := payscore.DebitRequest{ReqSeqID: "DUR-D1", ReqDate: now(), DeductReqSeqID: reg.ReqSeqID,
		OutTradeNo: reg.OutTradeNo, GoodsDesc: "充电", ClientIP: "127.0.0.1"}
	dr, err := b.client.Debit(ctx, debit)
	if err != nil {
		t.Fatal(err)
	}
	o, err := b.client.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: no})
	if err != nil || !o.Paid() || o.Collection.PaidAmount != 300 {
		t.Fatalf("query after debit: %+v %v", o, err)
	}
	if led := b.sb.Ledger(); len(led) != 1 || led[no].Collected != 300 {
		t.Fatalf("ledger %+v", led)
	}
	// New numbers never collide with those of the previous life.
	res2, err := b.client.CreateOrder(ctx, createReq("DUR-C2"))
	if err != nil {
		t.Fatal(err)
	}
	if res2.OutOrderNo == no || res2.HfSeqID == hf || res2.HfSeqID == reg.HfSeqID || res2.HfSeqID == dr.HfSeqID {
		t.Fatalf("new numbers collide: %+v", res2)
	}
	if _, err := b.client.Refund(ctx, payscore.RefundRequest{ReqSeqID: "DUR-F1", ReqDate: now(), Amount: 100,
		OrgReqDate: dr.ReqDate, OrgHfSeqID: dr.HfSeqID}); err != nil {
		t.Fatal(err)
	}
	b.close()

	// Life C: the payment, its refund and the replay cache are still there;
	// a retried debit replays and is not counted twice.
	b = startDurable(t, file, now, notify.URL)
	if led := b.sb.Ledger(); len(led) != 1 || led[no].Collected != 300 || led[no].Refunded != 100 {
		t.Fatalf("ledger after second restart %+v", led)
	}
	if dr2, err := b.client.Debit(ctx, debit); err != nil || dr2.HfSeqID != dr.HfSeqID {
		t.Fatalf("replayed debit: %+v %v", dr2, err)
	}
	if o, _ := b.sb.Order(no); len(o.Payments) != 1 || len(o.Registrations) != 1 || o.Registrations[0].TransStat != payscore.TransSucceeded {
		t.Fatalf("order after second restart: %+v", o)
	}
	if len(b.sb.Orders()) != 2 {
		t.Fatalf("orders %v", b.sb.Orders())
	}
	if _, err := b.client.Refund(ctx, payscore.RefundRequest{ReqSeqID: "DUR-F2", ReqDate: now(), Amount: 201,
		OrgReqDate: dr.ReqDate, OrgHfSeqID: dr.HfSeqID}); err == nil {
		t.Fatal("refund beyond what is left after the restart accepted")
	}
}

// TestStateFileAutoConfirmRearmed: an order still CREATED when the sandbox
// restarts is confirmed by the successor's auto-confirmation.
func TestStateFileAutoConfirmRearmed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sb.json")
	a := startDurable(t, file, nil, "http://127.0.0.1:1/unreachable")
	res, err := a.client.CreateOrder(context.Background(), payscore.CreateOrderRequest{ReqSeqID: "AC1", ReqDate: time.Now(),
		ServiceIntroduction: "充电", RiskFund: payscore.RiskFund{Amount: 1000}, TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: "o"})
	a.close()
	if err != nil {
		t.Fatal(err)
	}
	sb, err := sandbox.New(sandbox.Options{StateFile: file, AutoConfirm: time.Millisecond,
		NotifyClient: &http.Client{Transport: &http.Transport{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if o, _ := sb.Order(res.OutOrderNo); o.StateDescription == payscore.StateDescUserConfirm {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("order of the previous life not confirmed")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestStateFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":   "{not json",
		"empty":     "",
		"truncated": `{"version":1,"seq":3,"orders":[{"out_order_no":"SO1"`,
		"version":   `{"version":99,"orders":[]}`,
		"key":       `{"version":1,"huifu_private_key":"bogus","orders":[]}`,
		"twice": `{"version":1,"orders":[{"out_order_no":"SO1","hf_seq_id":"HF1","req_seq_id":"R1"},` +
			`{"out_order_no":"SO1","hf_seq_id":"HF2","req_seq_id":"R2"}]}`,
	} {
		file := filepath.Join(dir, name+".json")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		sb, err := sandbox.New(sandbox.Options{StateFile: file})
		if err == nil {
			sb.Close()
			t.Errorf("%s: New accepted a corrupt state file", name)
			continue
		}
		if !strings.Contains(err.Error(), file) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
		if b, _ := os.ReadFile(file); string(b) != content {
			t.Errorf("%s: corrupt file overwritten", name)
		}
	}
	// A directory where the file should be: unreadable.
	if _, err := sandbox.New(sandbox.Options{StateFile: dir}); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("unreadable state file: %v", err)
	}
}

// TestNoStateFileWritesNothing: without StateFile the sandbox stays in memory.
func TestNoStateFileWritesNothing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	sb, srv := start(t, sandbox.Options{})
	cfg, _ := sb.ClientConfig(srv.URL)
	cfg.NotifyURL = "http://127.0.0.1:1/unreachable"
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cfg.HTTPClient = &http.Client{Transport: tr}
	c, _ := payscore.New(cfg)
	res, err := c.CreateOrder(context.Background(), payscore.CreateOrderRequest{ReqSeqID: "MEM1", ReqDate: time.Now(),
		ServiceIntroduction: "充电", RiskFund: payscore.RiskFund{Amount: 1000}, TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Refuse(res.OutOrderNo); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files written without StateFile: %v", entries)
	}
}

func isCode(err error, code string) bool {
	var pe *payscore.Error
	return errors.As(err, &pe) && pe.Code == code
}
