package main

// chargeflow sandbox credentials and chargeflow payscore check (docs/go-live.md).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

func init() { commands["payscore"] = runPayScore }

// runSandboxCredentials prints the CHARGEFLOW_* lines (a config file) that
// point serve or payscore check at a sandbox: read from its state file, or
// asked of the running sandbox at --base-url.
func runSandboxCredentials(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sandbox credentials", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateFile := fs.String("state-file", "", "the sandbox's state file (default: ask the running sandbox at --base-url)")
	baseURL := fs.String("base-url", "http://localhost:8090", "where the sandbox serves")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cr sandbox.Credentials
	if *stateFile != "" {
		var err error
		if cr, err = sandbox.StateCredentials(*stateFile); err != nil {
			return err
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*baseURL, "/")+"/_sandbox/keys", nil)
		if err != nil {
			return fmt.Errorf("--base-url: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("sandbox credentials: %w (is the sandbox running at %s?)", err, *baseURL)
		}
		defer resp.Body.Close()
		var keys map[string]string
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&keys); err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("sandbox credentials: %s answered %s", *baseURL, resp.Status)
		}
		cr = sandbox.Credentials{SysID: keys["sys_id"], ProductID: keys["product_id"], HuifuID: keys["huifu_id"],
			ServiceID: keys["service_id"], MerchantPrivateKey: keys["merchant_private_key"], HuifuPublicKey: keys["huifu_public_key"]}
		if cr.MerchantPrivateKey == "" {
			return fmt.Errorf("sandbox credentials: the sandbox at %s was given its merchant key from outside", *baseURL)
		}
	}
	fmt.Fprintf(stdout, "# chargeflow sandbox credentials: the Pay Score sandbox at %s\n", *baseURL)
	for _, kv := range [][2]string{
		{"CHARGEFLOW_HUIFU_BASE_URL", strings.TrimRight(*baseURL, "/")},
		{"CHARGEFLOW_HUIFU_SYS_ID", cr.SysID}, {"CHARGEFLOW_HUIFU_PRODUCT_ID", cr.ProductID},
		{"CHARGEFLOW_HUIFU_MERCHANT_ID", cr.HuifuID}, {"CHARGEFLOW_HUIFU_PRIVATE_KEY", cr.MerchantPrivateKey},
		{"CHARGEFLOW_HUIFU_PUBLIC_KEY", cr.HuifuPublicKey}, {"CHARGEFLOW_PAYSCORE_SERVICE_ID", cr.ServiceID},
	} {
		fmt.Fprintf(stdout, "%s=%s\n", kv[0], kv[1])
	}
	return nil
}

// errCheckFailed is payscore check's failure: the report says which step.
var errCheckFailed = errors.New("payscore check: a step failed (see above)")

func runPayScore(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: chargeflow payscore check [--config file] [--openid id]")
		return errors.New("payscore: unknown subcommand")
	}
	fs := flag.NewFlagSet("payscore check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "config file of CHARGEFLOW_*=value lines (the environment wins)")
	openID := fs.String("openid", "chargeflow-go-live-probe", "the openid create is sent with (a test user of the merchant's mini-program)")
	timeout := fs.Duration("timeout", 15*time.Second, "per step")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	vals := map[string]string{}
	if *configFile != "" {
		var err error
		if vals, err = readConfigFile(*configFile); err != nil {
			return err
		}
	}
	// As serve reads them: the environment before the file, and NAME_FILE
	// (a file holding the value, for secrets) beside NAME.
	var unreadable []string
	get := func(k string) string {
		for _, src := range []func(string) string{getenv, func(k string) string { return vals[k] }} {
			if v := src(k); v != "" {
				return v
			}
			if f := src(k + "_FILE"); f != "" {
				b, err := os.ReadFile(f)
				if err != nil {
					unreadable = append(unreadable, fmt.Sprintf("%s_FILE: %v", k, err))
					return ""
				}
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
	var missing []string
	need := func(k string) string {
		v := get(k)
		if v == "" {
			missing = append(missing, k)
		}
		return v
	}
	cfg := payscore.Config{BaseURL: need("CHARGEFLOW_HUIFU_BASE_URL"), SysID: need("CHARGEFLOW_HUIFU_SYS_ID"),
		ProductID: need("CHARGEFLOW_HUIFU_PRODUCT_ID"), HuifuID: need("CHARGEFLOW_HUIFU_MERCHANT_ID"),
		ServiceID: need("CHARGEFLOW_PAYSCORE_SERVICE_ID"), MaxSends: 1, Timeout: *timeout}
	priv, pub := need("CHARGEFLOW_HUIFU_PRIVATE_KEY"), need("CHARGEFLOW_HUIFU_PUBLIC_KEY")
	if len(unreadable) > 0 {
		return fmt.Errorf("payscore check: %s", strings.Join(unreadable, "; "))
	}
	if len(missing) > 0 {
		return fmt.Errorf("payscore check: missing %s", strings.Join(missing, ", "))
	}
	key, err := payscore.LoadPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("CHARGEFLOW_HUIFU_PRIVATE_KEY: %w", err)
	}
	hpub, err := payscore.LoadPublicKey(pub)
	if err != nil {
		return fmt.Errorf("CHARGEFLOW_HUIFU_PUBLIC_KEY: %w", err)
	}
	cfg.Signer, cfg.Verifier = payscore.NewRSASigner(key), payscore.NewRSAVerifier(hpub)
	cfg.NotifyURL = strings.TrimRight(firstNonEmptyString(get("CHARGEFLOW_PUBLIC_URL"), "http://localhost:8080"), "/") + "/notify/huifu/payscore"
	tap := &wireTap{next: http.DefaultTransport}
	cfg.HTTPClient = &http.Client{Transport: tap}
	client, err := payscore.New(cfg)
	if err != nil {
		return err
	}
	p := probe{client: client, tap: tap, out: stdout}
	if !p.run(ctx, *openID) {
		return errCheckFailed
	}
	fmt.Fprintln(stdout, "payscore check: every step passed")
	return nil
}

func firstNonEmptyString(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// wireTap keeps the data of the last request and reply, to print them. The
// probe is sequential: one request at a time.
type wireTap struct {
	next      http.RoundTripper
	sent, got []byte
}

func (t *wireTap) RoundTrip(r *http.Request) (*http.Response, error) {
	t.sent, t.got = nil, nil
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(b))
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(b, &env)
		t.sent = env.Data // data holds no secret: the keys never travel
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(b, &env) == nil && len(env.Data) > 0 {
		t.got = env.Data
	} else {
		t.got = b
	}
	return resp, nil
}

// probe runs create (0.01 yuan) → query → cancel and reports each step.
type probe struct {
	client *payscore.Client
	tap    *wireTap
	out    io.Writer
}

func (p *probe) run(ctx context.Context, openID string) bool {
	id := fmt.Sprintf("probe%d", time.Now().UnixNano())
	now := time.Now()
	fields := []decided{
		{"service_id", "the configured CHARGEFLOW_PAYSCORE_SERVICE_ID"},
		{"risk_fund", "a JSON string; amount in fen [decided]: 1 = 0.01 yuan"},
		{"post_payments", "a JSON string; amount in fen [decided]"},
		{"location", "a JSON string {start_location, end_location} [decided]"},
		{"attach", "free text returned with the order [decided]"},
		{"openid", "required in practice: without it every debit fails"},
	}
	var created *payscore.CreateOrderResponse
	ok := p.step(ctx, 1, "create", func(ctx context.Context) (string, error) {
		var err error
		created, err = p.client.CreateOrder(ctx, payscore.CreateOrderRequest{
			ReqSeqID: payscore.AttemptOn(id, payscore.StepCreate, 1, now).ReqSeqID, ReqDate: now,
			ServiceIntroduction: "上线检查", OpenID: openID, Attach: "chargeflow payscore check",
			RiskFund:     payscore.RiskFund{Name: payscore.RiskFundEstimate, Amount: 1, Description: "上线检查"},
			TimeRange:    payscore.TimeRange{StartOnAccept: true},
			PostPayments: []payscore.PostItem{{Name: "上线检查", Amount: 1}},
			Location:     &payscore.Location{Start: "上线检查"},
		})
		if err != nil {
			return "", err
		}
		note := fmt.Sprintf("reply fields: out_order_no %q; package %s [decided: for wx.openBusinessView]; state %s [decided]",
			created.OutOrderNo, present(created.Package), present(created.State))
		if created.OutOrderNo == "" {
			return note, errors.New("the reply carries no out_order_no")
		}
		return note, nil
	}, fields)
	if !ok {
		fmt.Fprintln(p.out, "  (if create did execute, the order stays CREATED and expires unconfirmed after 30 days: no money moves)")
		fmt.Fprintln(p.out, "step 2 query: skipped (create failed)\nstep 3 cancel: skipped (create failed)")
		return false
	}
	loc := payscore.OrderLocator{OutOrderNo: created.OutOrderNo}
	ok = p.step(ctx, 2, "query", func(ctx context.Context) (string, error) {
		o, err := p.client.QueryOrder(ctx, loc)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("order: state %s %s; total_amount and collection come after complete [decided: fen; collection a JSON string], read tolerantly either way",
			o.State, o.StateDescription), nil
	}, nil) && ok
	ok = p.step(ctx, 3, "cancel", func(ctx context.Context) (string, error) {
		return "", p.client.CancelOrder(ctx, payscore.CancelOrderRequest{Order: loc, Reason: "上线检查"})
	}, nil) && ok
	fmt.Fprintln(p.out, "not exercised by the probe (no user confirms it): complete_time [decided: yyyyMMddHHmmss], the debit's fields; the first real session settles them")
	return ok
}

type decided struct{ name, what string }

func present(s string) string {
	if s == "" {
		return "absent"
	}
	return "present"
}

// step runs one call and prints what was sent, what came back, whether the
// signature verified, the verdict on each field named and the call's note.
func (p *probe) step(ctx context.Context, n int, name string, call func(context.Context) (string, error), fields []decided) bool {
	note, err := call(ctx)
	fmt.Fprintf(p.out, "step %d %s\n", n, name)
	fmt.Fprintf(p.out, "  sent: %s\n", orNone(p.tap.sent))
	fmt.Fprintf(p.out, "  reply: %s\n", orNone(p.tap.got))
	var pe *payscore.Error
	isPE := errors.As(err, &pe)
	switch {
	case err == nil || (isPE && pe.Verified):
		fmt.Fprintln(p.out, "  signature: verified")
	case isPE && errors.Is(err, payscore.ErrNotSigned):
		fmt.Fprintln(p.out, "  signature: NOT verified: the reply is not signed")
	case isPE && errors.Is(err, payscore.ErrNoValidSignature):
		fmt.Fprintln(p.out, "  signature: NOT verified: it does not match CHARGEFLOW_HUIFU_PUBLIC_KEY (wrong key, or the reply was altered)")
	default:
		fmt.Fprintln(p.out, "  signature: no reply to verify")
	}
	desc := ""
	if isPE {
		desc = pe.Desc
	}
	for _, f := range fields {
		verdict := "accepted"
		switch {
		case err != nil && strings.Contains(desc, f.name):
			verdict = "REFUSED: " + desc
		case err != nil:
			verdict = "not judged (the step failed)"
		}
		fmt.Fprintf(p.out, "  field %s (%s): %s\n", f.name, f.what, verdict)
	}
	if note != "" {
		fmt.Fprintf(p.out, "  %s\n", note)
	}
	if err != nil {
		fmt.Fprintf(p.out, "  FAIL: %s failed: %v\n", name, err)
		return false
	}
	fmt.Fprintln(p.out, "  PASS")
	return true
}

func orNone(b []byte) string {
	if len(b) == 0 {
		return "(nothing)"
	}
	return string(b)
}
