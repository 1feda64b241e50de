package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chargeflow/chargeflow/internal/openapitest"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// chromiumPath is Debian's chromium, which .ci/run installs when missing.
const chromiumPath = "/usr/bin/chromium"

// TestBoardInBrowser drives the operators' live board in headless Chromium
// against `chargeflow serve --dev` (run in this process; its demo traffic
// starts sessions by itself): sign in, watch a new session appear and reach
// charging without a reload, open its timeline, stop it through the UI with
// the confirm dialog and watch it go to paid live, filter the table, refund
// part of it, and check the page wrote no console error.
//
// CHARGEFLOW_BOARD_SCREENSHOT=path also writes the final screenshot there
// (docs/board.png is taken that way).
func TestBoardInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the board's browser test needs Debian's chromium at %s (.ci/run installs it; by hand: apt-get update && apt-get install -y chromium): %v", chromiumPath, err)
	}
	// A webhook receiver that refuses everything: its failing deliveries
	// show under "Needs attention".
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer refuser.Close()
	base := startDevServe(t, "CHARGEFLOW_WEBHOOK_URL", refuser.URL, "CHARGEFLOW_WEBHOOK_SECRET", "whsec-board-0123456789",
		"CHARGEFLOW_WEBHOOK_RETRY", "200ms")

	// The browser: Debian's chromium, a fresh profile, nothing that calls out
	// (this machine's network is closed).
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1440, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	// Console errors and uncaught exceptions, from the first page on.
	var (
		mu       sync.Mutex
		problems []string
	)
	if err := chromedp.Do(ctx); err != nil { // starts the browser and its tab
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()

	shots := t.TempDir()
	if d := os.Getenv("CHARGEFLOW_BOARD_SHOTS"); d != "" { // keep them after the test
		shots = d
	}
	shot := func(name string) string {
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Logf("screenshot %s: %v", name, err)
			return ""
		}
		p := filepath.Join(shots, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			p := shot("failed.png")
			t.Fatalf("%s: %v (screenshot %s)", what, err, p)
		}
	}
	// until polls a JavaScript expression until it is truthy and returns
	// its value.
	until := func(what, expr string, timeout time.Duration) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Poll[string](expr,
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
		if err != nil {
			p := shot("failed.png")
			t.Fatalf("waiting for %s: %v (screenshot %s)", what, err, p)
		}
		return v
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}

	// Sign in once; the token stays in the tab's sessionStorage.
	step("sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), devOperatorToken),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#board")),
	)
	until("the live feed", `document.querySelector('#conn').dataset.state === 'live' && 'live'`, 15*time.Second)
	if got := eval(`sessionStorage.getItem('chargeflow.operator-token') || ''`); got != devOperatorToken {
		t.Fatalf("token in sessionStorage: %q", got)
	}
	// A mark that a reload would wipe.
	eval(`window.__sameDocument = 'yes'`)
	until("the chargers", `document.querySelectorAll('#chargers .charger').length === 4 && 'ok'`, 10*time.Second)
	// The reconciliation panel: the days reconciled so far, or none yet.
	until("the reconciliation panel", `(document.querySelector('#reconciliations li.day') ||
		!document.querySelector('#reconciliations-empty').hidden) && 'ok'`, 10*time.Second)
	until("a failing webhook needs attention", `[...document.querySelectorAll('#attention li .why')].map(e => e.textContent).find(t => /webhook session\.\w+ failing \(\d+ attempts\): HTTP 503/.test(t)) || ''`, 30*time.Second)

	// A session created after the page loaded appears and reaches charging
	// through the feed alone.
	seen := eval(`window.__seen = [...document.querySelectorAll('#sessions-body tr')].map(r => r.dataset.id); JSON.stringify(window.__seen)`)
	t.Logf("sessions at load: %s", seen)
	id := until("a new session charging", `(() => {
		const r = [...document.querySelectorAll('#sessions-body tr[data-state="charging"]')].find(r => !window.__seen.includes(r.dataset.id));
		return r ? r.dataset.id : '';
	})()`, 40*time.Second)
	t.Logf("session %s is charging", id)
	row := chromedp.CSS(fmt.Sprintf(`#sessions-body tr[data-id=%q]`, id))

	// Its detail: the timeline so far.
	step("open the session", chromedp.Click(row), chromedp.WaitVisible(chromedp.CSS("#detail")))
	until("the timeline", `(() => {
		const to = [...document.querySelectorAll('#d-timeline li')].map(li => li.dataset.to);
		return to.includes('created') && to.includes('user_confirmed') && to.includes('charging') ? to.join(',') : '';
	})()`, 10*time.Second)
	if got := eval(`document.querySelector('#d-id').textContent`); got != id {
		t.Fatalf("the detail shows %q, want %q", got, id)
	}
	// Something to bill first (a session that delivered less than a fen's
	// worth is cancelled, not paid): the live amount, refreshed while open.
	// At least two fen, so that the ¥0.01 refund below is partial and the
	// session stays paid (refunding all of it would make it refunded).
	until("a live amount", `(() => { const r = document.querySelector('#d-live'); return r && Number(r.dataset.fen) >= 2 ? r.dataset.fen : ''; })()`, 30*time.Second)

	// Stop it through the UI, with the confirm dialog.
	step("stop with confirmation",
		chromedp.Click(chromedp.CSS("#act-stop")),
		chromedp.WaitVisible(chromedp.CSS("#confirm[open] #confirm-ok")),
	)
	if txt := eval(`document.querySelector('#confirm-text').textContent`); !strings.Contains(txt, id) {
		t.Fatalf("the confirm dialog does not name the session: %q", txt)
	}
	step("confirm the stop", chromedp.Click(chromedp.CSS("#confirm-ok")))
	until("the dialog to close", `!document.querySelector('#confirm').open && 'closed'`, 10*time.Second)

	// …and it moves to paid live, in the detail and in the table.
	until("paid", fmt.Sprintf(`document.querySelector('#d-state').dataset.state === 'paid' &&
		document.querySelector('#sessions-body tr[data-id=%q]')?.dataset.state === 'paid' && 'paid'`, id), 40*time.Second)
	until("the whole timeline", `(() => {
		const li = [...document.querySelectorAll('#d-timeline li')];
		const stop = li.find(l => l.dataset.event === 'stop');
		return stop && stop.textContent.includes('operator:dev') && li.some(l => l.dataset.to === 'paid') ? 'ok' : '';
	})()`, 10*time.Second)
	amount := eval(`document.querySelector('#d-amount').textContent`)
	if !strings.HasPrefix(amount, "¥") || !strings.Contains(amount, ".") {
		t.Fatalf("amount shown as %q, want yuan", amount)
	}
	if amount == "¥0.01" {
		t.Fatalf("billed %s: the ¥0.01 refund below would refund all of it", amount)
	}

	// Refund ¥0.01 of it, with the dialog's amount and reason.
	step("open the refund dialog",
		chromedp.Click(chromedp.CSS("#act-refund")),
		chromedp.WaitVisible(chromedp.CSS("#confirm[open] #confirm-amount")),
	)
	if got, want := eval(`document.querySelector('#confirm-amount').value`), strings.TrimPrefix(amount, "¥"); got != want {
		t.Fatalf("the refund dialog offers %q, want the whole amount %q", got, want)
	}
	eval(`document.querySelector('#confirm-amount').value = ''`)
	step("refund with confirmation",
		chromedp.SendKeys(chromedp.CSS("#confirm-amount"), "0.01"),
		chromedp.SendKeys(chromedp.CSS("#confirm-reason"), "browser test goodwill"),
		chromedp.Click(chromedp.CSS("#confirm-ok")),
	)
	until("the refund", `(() => {
		const r = document.querySelector('#d-refunds tr[data-status]');
		return r && r.textContent.includes('¥0.01') && r.textContent.includes('browser test goodwill') ? r.dataset.status : '';
	})()`, 20*time.Second)
	shot("detail.png")

	// Filters: by state, then by charger too.
	charger := eval(fmt.Sprintf(`document.querySelector('#sessions-body tr[data-id=%q]').dataset.charger`, id))
	step("close the detail", chromedp.Click(chromedp.CSS("#detail-close")))
	setFilter := func(sel, value string) {
		eval(fmt.Sprintf(`(() => { const s = document.querySelector(%q); s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); return ''; })()`, sel, value))
	}
	setFilter("#f-state", "paid")
	until("only paid sessions", fmt.Sprintf(`(() => {
		const rows = [...document.querySelectorAll('#sessions-body tr')];
		return rows.length > 0 && rows.every(r => r.dataset.state === 'paid') && rows.some(r => r.dataset.id === %q) ? String(rows.length) : '';
	})()`, id), 10*time.Second)
	setFilter("#f-charger", charger)
	until("only paid sessions of "+charger, fmt.Sprintf(`(() => {
		const rows = [...document.querySelectorAll('#sessions-body tr')];
		return rows.length > 0 && rows.every(r => r.dataset.state === 'paid' && r.dataset.charger === %q) ? String(rows.length) : '';
	})()`, charger), 10*time.Second)
	step("clear the filters", chromedp.Click(chromedp.CSS("#f-clear")))
	until("all sessions again", `document.querySelector('#f-state').value === '' && document.querySelectorAll('#sessions-body tr:not([data-state="paid"])').length > 0 && 'ok'`, 20*time.Second)

	// Counters come from /v1/stats.
	until("the counters", `Number(document.querySelector('.count[data-state="paid"] b').textContent) >= 1 && 'ok'`, 10*time.Second)
	if eval(`window.__sameDocument || ''`) != "yes" {
		t.Fatal("the page was reloaded")
	}

	p := shot("board.png")
	if p == "" {
		t.Fatal("no screenshot")
	}
	t.Logf("screenshot: %s", p)
	if dst := os.Getenv("CHARGEFLOW_BOARD_SCREENSHOT"); dst != "" {
		b, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(dst, b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page wrote %d console error(s):\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

// startDevServe runs `chargeflow serve --dev` (demo traffic on) in this
// process on free ports and returns the base URL to talk to it at: a proxy
// that checks every exchange against the service's OpenAPI document
// (internal/openapitest). The test's cleanup stops both.
func startDevServe(t *testing.T, extraEnv ...string) string {
	t.Helper()
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := map[string]string{
		"CHARGEFLOW_HTTP_ADDR":   fmt.Sprintf("127.0.0.1:%d", port),
		"CHARGEFLOW_PUBLIC_URL":  base,
		"CHARGEFLOW_DATA_DIR":    t.TempDir(),
		"CHARGEFLOW_MQTT_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
	}
	for i := 0; i+1 < len(extraEnv); i += 2 {
		env[extraEnv[i]] = extraEnv[i+1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	out, errOut := &syncBuffer{}, &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"serve", "--dev"}, func(k string) string { return env[k] }, out, errOut)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve --dev: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve --dev did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("service log:\n%s", tail(errOut.String()))
			if d := os.Getenv("CHARGEFLOW_BOARD_SHOTS"); d != "" {
				_ = os.WriteFile(filepath.Join(d, "service.log"), []byte(errOut.String()), 0o644)
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "chargeflow ready:") {
		select {
		case err := <-done:
			t.Fatalf("serve --dev exited: %v\n%s", err, tail(errOut.String()))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve --dev not ready after 30s:\n%s", tail(errOut.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The URL actually in use (--dev moves off a taken port).
	for _, f := range strings.Fields(out.String()) {
		if v, ok := strings.CutPrefix(f, "http="); ok {
			base = v
		}
	}
	return validatingProxy(t, base)
}

// validatingProxy puts a reverse proxy in front of base whose every exchange
// (event streams flow through unbuffered) is checked against the document
// base serves, and returns the proxy's URL.
func validatingProxy(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	srv := httptest.NewServer(openapitest.Handler(t, rp))
	t.Cleanup(srv.Close)
	return srv.URL
}
