package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// reconcileCLI runs `chargeflow reconcile --date date` with the stack's
// settings (serve must be stopped: the embedded store is one process's).
func (s *stack) reconcileCLI(date string) (code int, out string) {
	s.t.Helper()
	var stdout, stderr syncBuffer
	err := run(context.Background(), []string{"reconcile", "--date", date}, s.getenv, &stdout, &stderr)
	if err != nil {
		return exitCode(err), stdout.String() + stderr.String()
	}
	return 0, stdout.String()
}

// TestReconcileAfterChaos runs sessions through Huifu faults (5xx before
// and after execution, system errors, silent debit failures), lost and
// duplicated notifications, partial refunds and a restart of the service
// in the middle, then reconciles the day against the sandbox's bill: the
// books agree exactly. A difference injected into the bill afterwards is
// reported by the command (exit 1), flagged on its session, served by
// GET /v1/reconciliations[/{date}] and counted by /metrics.
func TestReconcileAfterChaos(t *testing.T) {
	const n = 8
	s := newStackWith(t, "embedded", n, "", "CHARGEFLOW_RECONCILE_AT", "off")
	sb := s.sb
	sb.DuplicateNotifications(true)
	sb.LoseNotifications(4)
	sb.FailDebits(2)
	for _, f := range []struct {
		path string
		kind sandbox.FaultKind
	}{{payscore.PathDebit, sandbox.FaultExecuted5xx}, {payscore.PathDebit, sandbox.Fault5xx},
		{payscore.PathCompleteOrder, sandbox.Fault5xx}, {payscore.PathRegisterDeduction, sandbox.FaultExecuted5xx},
		{payscore.PathRefund, sandbox.FaultExecuted5xx}, {payscore.PathRefund, sandbox.FaultSystemError}} {
		if err := sb.FailNext(f.path, 1, f.kind); err != nil {
			t.Fatal(err)
		}
	}

	ids := make([]string, n)
	for i := range n {
		if i == n/2 {
			// A restart while the first half is completing and being debited.
			s.restart()
			for c := range n {
				s.waitCharger(fmt.Sprintf("CP-%d", c+1), true)
			}
		}
		v := s.charge(fmt.Sprintf("CP-%d", i+1), 5000)
		s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
		ids[i] = v.ID
	}
	for _, id := range ids {
		s.waitState(id, "paid")
	}
	// Partial refunds on three sessions, one of them asked for twice.
	for i, id := range ids[:3] {
		for range 1 + i%2 {
			s.mustDo("POST", "/v1/sessions/"+id+"/refund", opsToken, map[string]any{"amount_fen": 1, "reason": "goodwill"}, 202,
				"Idempotency-Key", "chaos-refund-"+id)
		}
	}
	for _, id := range ids[:3] {
		s.waitFor("refund of "+id, func() bool {
			g := s.get(id)
			return len(g.Refunds) == 1 && g.Refunds[0].Status == "succeeded"
		})
	}
	var billed int64
	for _, id := range ids {
		billed += s.get(id).AmountFen
	}

	victim := s.get(ids[n-1])
	date := time.Now().In(money.Beijing).Format("2006-01-02")
	s.stop()
	// A bill Huifu has not generated yet: the command could not run.
	sb.HoldBills(true)
	if code, out := s.reconcileCLI(date); code != 2 || !strings.Contains(out, "not ready") {
		t.Fatalf("held bill: exit %d\n%s", code, out)
	}
	sb.HoldBills(false)
	code, out := s.reconcileCLI(date)
	if code != 0 || !strings.Contains(out, "matched — "+fmt.Sprint(n+3)+" matched, 0 differences") {
		t.Fatalf("reconcile after chaos: exit %d\n%s", code, out)
	}
	var collected int64
	for _, l := range sb.Ledger() {
		collected += int64(l.Collected)
	}
	if collected != billed {
		t.Fatalf("sandbox collected %d fen, sessions billed %d", collected, billed)
	}

	// Huifu's bill now shows one debit for one fen more than we billed.
	var debitHf string
	for _, l := range sb.BillLines(payscore.FormatDate(time.Now())) {
		if l.Kind == payscore.BillDebit && int64(l.Amount) == victim.AmountFen && strings.HasSuffix(l.ReqSeqID, victim.ID) {
			debitHf = l.HfSeqID
		}
	}
	if debitHf == "" {
		t.Fatalf("no bill line for %s", victim.ID)
	}
	if err := sb.EditBill(sandbox.BillEdit{Date: payscore.FormatDate(time.Now()), Op: sandbox.BillAlter, Match: debitHf,
		Line: sandbox.BillLine{Amount: money.Fen(victim.AmountFen + 1)}}); err != nil {
		t.Fatal(err)
	}
	code, out = s.reconcileCLI(date)
	if code != 1 || !strings.Contains(out, "amount_mismatch") || !strings.Contains(out, victim.ID) {
		t.Fatalf("reconcile with a difference: exit %d\n%s", code, out)
	}
	if code, out := s.reconcileCLI("2026-02-30"); code != 2 {
		t.Fatalf("bad date: exit %d\n%s", code, out)
	}
	var help syncBuffer
	if err := run(context.Background(), []string{"reconcile", "--help"}, s.getenv, &help, &help); err != nil || !strings.Contains(help.String(), "Exit 0") {
		t.Fatalf("help: %v %s", err, help.String())
	}

	// Back up with the daily run due since midnight: it reconciles
	// yesterday (nothing happened then) by itself.
	s.env["CHARGEFLOW_RECONCILE_AT"] = "00:00"
	s.start()
	s.waitCharger("CP-1", true)
	yesterday := time.Now().In(money.Beijing).AddDate(0, 0, -1).Format("2006-01-02")
	s.waitFor("the daily run of "+yesterday, func() bool {
		st, _ := s.do("GET", "/v1/reconciliations/"+yesterday, opsToken, nil)
		return st == 200
	})
	var list struct {
		Reconciliations []struct {
			Date        string `json:"date"`
			Status      string `json:"status"`
			Matched     int    `json:"matched"`
			Differences int    `json:"differences"`
		} `json:"reconciliations"`
	}
	if err := json.Unmarshal(s.mustDo("GET", "/v1/reconciliations", opsToken, nil, 200), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Reconciliations) != 2 || list.Reconciliations[0].Date != date || list.Reconciliations[0].Differences != 1 ||
		list.Reconciliations[0].Matched != n+2 || list.Reconciliations[0].Status != "differences" ||
		list.Reconciliations[1].Date != yesterday || list.Reconciliations[1].Status != "matched" {
		t.Fatalf("list %+v", list)
	}
	s.mustDo("GET", "/v1/reconciliations", appToken, nil, 403)
	var rep struct {
		Lines []struct {
			Outcome        string `json:"outcome"`
			SessionID      string `json:"session_id"`
			OurAmountFen   int64  `json:"our_amount_fen"`
			HuifuAmountFen int64  `json:"huifu_amount_fen"`
		} `json:"lines"`
		Sessions []struct {
			ID    string   `json:"id"`
			Flags []string `json:"flags"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal(s.mustDo("GET", "/v1/reconciliations/"+date, opsToken, nil, 200), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Lines) != 1 || rep.Lines[0].Outcome != "amount_mismatch" || rep.Lines[0].SessionID != victim.ID ||
		rep.Lines[0].HuifuAmountFen != victim.AmountFen+1 || len(rep.Sessions) != 1 || rep.Sessions[0].ID != victim.ID {
		t.Fatalf("report %+v", rep)
	}
	if !s.get(victim.ID).hasFlag("reconcile_mismatch") || s.get(ids[0]).hasFlag("reconcile_mismatch") {
		t.Fatal("flags: the victim is not flagged, or an innocent is")
	}
	s.mustDo("GET", "/v1/reconciliations/2026-01-01", opsToken, nil, 404)
	s.mustDo("GET", "/v1/reconciliations/yesterday", opsToken, nil, 400)
	_, metrics := s.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(metrics), "chargeflow_reconcile_open_differences 1") {
		t.Fatal("/metrics has no open difference")
	}
}
