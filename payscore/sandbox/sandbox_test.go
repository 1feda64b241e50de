package sandbox_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, opts sandbox.Options) (*sandbox.Sandbox, *httptest.Server) {
	t.Helper()
	sb, err := sandbox.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() { sb.Close() })
	return sb, srv
}

// signLikeSDK signs the literal string with the merchant key using only the
// standard library: nothing of payscore's canonicalisation is involved.
func signLikeSDK(t *testing.T, sb *sandbox.Sandbox, signed string) string {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(sb.MerchantPrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	key, err := payscore.LoadPrivateKey(base64.StdEncoding.EncodeToString(der))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// post sends a raw body and returns the reply's data, checking Huifu's
// signature on it.
func post(t *testing.T, sb *sandbox.Sandbox, url, body string) map[string]string {
	t.Helper()
	resp, err := http.Post(url, "application/json;charset=UTF-8", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Data json.RawMessage `json:"data"`
		Sign string          `json:"sign"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("reply %s: %v", raw, err)
	}
	pub, _ := payscore.LoadPublicKey(sb.PublicKey())
	if err := payscore.NewRSAVerifier(pub).Verify(env.Data, env.Sign); err != nil {
		t.Fatalf("reply signature: %v", err)
	}
	var data map[string]string
	json.Unmarshal(env.Data, &data)
	return data
}

// TestSDKStyleRequests: requests built and signed the way Huifu's SDKs do,
// by hand. The Go SDK keeps "" values and its body escapes '&' as \u0026;
// the PHP/Python SDKs drop "" values. Both verify; a flipped byte does not.
func TestSDKStyleRequests(t *testing.T) {
	// The requests below are dated 2025-06-01: so is the sandbox's today.
	sb, srv := start(t, sandbox.Options{Now: func() time.Time { return time.Date(2025, 6, 1, 10, 0, 0, 0, payscore.Beijing) }})
	url := srv.URL + payscore.PathCreateOrder

	// Go SDK: the signed string keeps "" values, sorted, nothing escaped...
	signedGo := `{"attach":"","huifu_id":"6666000100000001","notify_url":"https://cf.example/n?a=1&b=<2>","openid":"o1",` +
		`"req_date":"20250601","req_seq_id":"SDKGO0001","risk_fund":"{\"name\":\"ESTIMATE_ORDER_COST\",\"amount\":500}",` +
		`"service_introduction":"充电服务","sub_appid":"","time_range":"{\"start_time\":\"OnAccept\"}"}`
	// ...while the body carries the same data in another order and spelling.
	bodyDataGo := `{"time_range":"{\"start_time\":\"OnAccept\"}","sub_appid":"","service_introduction":"\u5145\u7535\u670d\u52a1",` +
		`"risk_fund":"{\"name\":\"ESTIMATE_ORDER_COST\",\"amount\":500}","req_seq_id":"SDKGO0001","req_date":"20250601",` +
		`"openid":"o1","notify_url":"https://cf.example/n?a=1\u0026b=\u003c2\u003e","huifu_id":"6666000100000001","attach":""}`
	sigGo := signLikeSDK(t, sb, signedGo)
	envelope := func(data, sig string) string {
		return `{"sys_id":"6666000100000000","product_id":"PAYUN","data":` + data + `,"sign":"` + sig + `"}`
	}
	got := post(t, sb, url, envelope(bodyDataGo, sigGo))
	if got["resp_code"] != payscore.CodeSuccess || got["out_order_no"] == "" {
		t.Fatalf("Go SDK style refused: %v", got)
	}

	// PHP/Python SDK: "" values dropped from both.
	signedPHP := `{"huifu_id":"6666000100000001","notify_url":"https://cf.example/n","openid":"o1","req_date":"20250601",` +
		`"req_seq_id":"SDKPHP0001","risk_fund":"{\"name\":\"ESTIMATE_ORDER_COST\",\"amount\":500}",` +
		`"service_introduction":"充电服务","time_range":"{\"start_time\":\"OnAccept\"}"}`
	if got := post(t, sb, url, envelope(signedPHP, signLikeSDK(t, sb, signedPHP))); got["resp_code"] != payscore.CodeSuccess {
		t.Fatalf("PHP SDK style refused: %v", got)
	}

	// A flipped byte in the data, or in the signature, is refused and creates nothing.
	before := len(sb.Orders())
	flippedData := strings.Replace(bodyDataGo, `"openid":"o1"`, `"openid":"o2"`, 1)
	sigBytes, _ := base64.StdEncoding.DecodeString(sigGo)
	sigBytes[10] ^= 0x01
	flippedSig := base64.StdEncoding.EncodeToString(sigBytes)
	for name, body := range map[string]string{
		"data":      envelope(strings.Replace(flippedData, "SDKGO0001", "SDKGO0002", 1), sigGo),
		"signature": envelope(strings.Replace(bodyDataGo, "SDKGO0001", "SDKGO0003", 1), flippedSig),
		"unsigned":  `{"sys_id":"a","product_id":"b","data":` + bodyDataGo + `}`,
		"extra":     `{"sys_id":"a","product_id":"b","x":"1","data":` + signedPHP + `,"sign":"` + signLikeSDK(t, sb, signedPHP) + `"}`,
	} {
		got := post(t, sb, url, body)
		if got["resp_code"] != payscore.CodeBadParameter {
			t.Errorf("flipped %s accepted: %v", name, got)
		}
	}
	if len(sb.Orders()) != before {
		t.Fatal("a refused request created an order")
	}
}

func TestOptionsKeysAndIdentities(t *testing.T) {
	sb0, _ := start(t, sandbox.Options{})
	// Reuse sb0's generated merchant key as the given one; Huifu's key given too.
	sb, srv := start(t, sandbox.Options{MerchantPublicKey: sb0.MerchantPublicKey(), HuifuPrivateKey: sb0.MerchantPrivateKey(), HuifuID: "HF-A"})
	if sb.MerchantPrivateKey() != "" || sb.PublicKey() != sb0.MerchantPublicKey() {
		t.Fatal("given keys not used")
	}
	if _, err := sb.ClientConfig(srv.URL); err == nil {
		t.Fatal("ClientConfig without the merchant private key")
	}
	cfg, _ := sb0.ClientConfig(srv.URL)
	cfg.Verifier = payscore.NewRSAVerifier(mustPub(t, sb.PublicKey()))
	cfg.HuifuID = "HF-B"
	c, _ := payscore.New(cfg)
	_, err := c.QueryOrder(context.Background(), payscore.OrderLocator{OutOrderNo: "x"})
	if pe := new(payscore.Error); !asErr(err, &pe) || pe.Code != payscore.CodeMerchantConfig {
		t.Fatalf("wrong huifu_id: %v", err)
	}
	if _, err := sandbox.New(sandbox.Options{MerchantPublicKey: "garbage"}); err == nil {
		t.Fatal("bad key accepted")
	}
}

func mustPub(t *testing.T, s string) *rsa.PublicKey {
	k, err := payscore.LoadPublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func asErr(err error, target **payscore.Error) bool {
	e, ok := err.(*payscore.Error)
	if ok {
		*target = e
	}
	return ok
}

// TestControlAPI drives the sandbox the way `chargeflow sandbox` users do.
func TestControlAPI(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	sb, srv := start(t, sandbox.Options{NotifyBackoff: time.Millisecond, NotifyRetries: 1,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	received := make(chan string, 16)
	notify := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		var d map[string]string
		json.Unmarshal([]byte(r.PostForm.Get("resp_data")), &d)
		received <- d["state_description"] + d["trans_stat"]
		io.WriteString(w, payscore.AckPrefix+d["req_seq_id"])
	}))
	defer notify.Close()
	cfg, err := sb.ClientConfig(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NotifyURL = notify.URL
	c, err := payscore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctl := func(method, path, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewBufferString(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		raw, _ := io.ReadAll(resp.Body)
		json.Unmarshal(raw, &v)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
		return v
	}
	create := func(seq string) string {
		res, err := c.CreateOrder(context.Background(), payscore.CreateOrderRequest{ReqSeqID: seq, ReqDate: time.Now(),
			ServiceIntroduction: "充电", RiskFund: payscore.RiskFund{Amount: 1000}, TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: "o"})
		if err != nil {
			t.Fatal(err)
		}
		return res.OutOrderNo
	}
	keys := ctl("GET", "/_sandbox/keys", "", 200)
	if keys["huifu_public_key"] != sb.PublicKey() || keys["merchant_private_key"] == "" {
		t.Fatalf("keys %v", keys)
	}
	no := create("CTL1")
	ctl("POST", "/_sandbox/orders/nope/confirm", "", 404)
	if o := ctl("POST", "/_sandbox/orders/"+no+"/refuse", "", 200); o["state"] != payscore.StateCreated || o["refused"] != true {
		t.Fatalf("refuse %v", o)
	}
	if o := ctl("POST", "/_sandbox/orders/"+no+"/confirm", "", 200); o["state_description"] != payscore.StateDescUserConfirm {
		t.Fatalf("confirm %v", o)
	}
	if got := <-received; got != payscore.StateDescUserConfirm {
		t.Fatalf("notification %q", got)
	}
	ctl("POST", "/_sandbox/orders/"+no+"/confirm", "", 409)
	ctl("POST", "/_sandbox/orders/"+no+"/pay", "", 409) // not completed yet
	mu.Lock()
	now = now.Add(time.Hour)
	end := now.Add(-time.Minute)
	mu.Unlock()
	if err := c.CompleteOrder(context.Background(), payscore.CompleteOrderRequest{OutOrderNo: no, Amount: 300, TimeRange: payscore.TimeRange{End: end}}); err != nil {
		t.Fatal(err)
	}
	ctl("POST", "/_sandbox/orders/"+no+"/pay", "", 200)
	if got := <-received; got != payscore.TransSucceeded {
		t.Fatalf("notification %q", got)
	}
	if led := ctl("GET", "/_sandbox/ledger", "", 200); led[no] == nil {
		t.Fatalf("ledger %v", led)
	}
	ctl("GET", "/_sandbox/orders/"+no, "", 200)
	ctl("GET", "/_sandbox/notifications", "", 200)

	ctl("POST", "/_sandbox/faults/debits", `{"n":1}`, 200)
	ctl("POST", "/_sandbox/faults/next", `{"path":"/v2/trade/payscore/serviceorder/query","n":1,"kind":"nonsense"}`, 400)
	ctl("POST", "/_sandbox/faults/next", `{"path":"/nope","n":1,"kind":"5xx"}`, 400)
	ctl("POST", "/_sandbox/faults/next", `{"path":"/v2/trade/payscore/serviceorder/query","n":1,"kind":"system_error"}`, 200)
	if _, err := c.QueryOrder(context.Background(), payscore.OrderLocator{OutOrderNo: no}); err != nil {
		t.Fatalf("query after one system error: %v", err)
	}
	ctl("POST", "/_sandbox/faults/notifications", `{"lose":1,"duplicate":false}`, 200)
	ctl("POST", "/_sandbox/faults/notifications", `{"bogus":1}`, 400)
	ctl("POST", "/_sandbox/auto-confirm", `{"delay":"bad"}`, 400)
	ctl("POST", "/_sandbox/auto-confirm", `{"delay":"5ms"}`, 200)
	no2 := create("CTL2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if o, _ := sb.Order(no2); o.StateDescription == payscore.StateDescUserConfirm {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("auto-confirm did not happen")
		}
		time.Sleep(2 * time.Millisecond)
	}
	// That confirmation's notification was the lost one.
	for _, d := range sb.Deliveries() {
		if d.OutOrderNo == no2 && !d.Lost {
			t.Fatalf("delivery %+v", d)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestCloseStopsEverything: pending deliveries and auto-confirm timers end
// with Close (goleak checks the rest).
func TestCloseStopsEverything(t *testing.T) {
	sb, err := sandbox.New(sandbox.Options{AutoConfirm: time.Hour, NotifyBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	cfg, _ := sb.ClientConfig(srv.URL)
	cfg.NotifyURL = "http://127.0.0.1:1/unreachable"
	c, _ := payscore.New(cfg)
	res, err := c.CreateOrder(context.Background(), payscore.CreateOrderRequest{ReqSeqID: "CLOSE1", ReqDate: time.Now(),
		ServiceIntroduction: "充电", RiskFund: payscore.RiskFund{Amount: 1000}, TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	sb.Confirm(res.OutOrderNo) // its delivery will wait an hour for a retry
	sb.Close()
	c2 := &http.Client{}
	c2.CloseIdleConnections()
}
