package sandbox_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// TestBillControlAPI drives the bill edits and the hold over HTTP, as
// `chargeflow sandbox` serves them, and reads the file a client downloads.
func TestBillControlAPI(t *testing.T) {
	sb, srv := start(t, sandbox.Options{})
	postJSON := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := postJSON("/_sandbox/bills/edits", `{"date":"20261203","op":"add","line":{"req_seq_id":"X1","hf_seq_id":"HF1","amount_fen":120}}`); c != 200 {
		t.Fatalf("add: %d", c)
	}
	if c := postJSON("/_sandbox/bills/edits", `{"date":"20261203","op":"alter","match":"HF1","line":{"status":"F"}}`); c != 200 {
		t.Fatalf("alter: %d", c)
	}
	for _, bad := range []string{`{"date":"2026-12-03","op":"add","line":{"hf_seq_id":"H"}}`, `{"date":"20261203","op":"drop"}`,
		`{"date":"20261203","op":"burn","match":"x"}`, `{"date":"20261203","op":"add"}`, `not json`} {
		if c := postJSON("/_sandbox/bills/edits", bad); c != 400 {
			t.Errorf("%s: %d, want 400", bad, c)
		}
	}
	resp, err := http.Get(srv.URL + "/_sandbox/bills/20261203/lines")
	if err != nil {
		t.Fatal(err)
	}
	var lines []sandbox.BillLine
	json.NewDecoder(resp.Body).Decode(&lines)
	resp.Body.Close()
	if len(lines) != 1 || lines[0].Amount != 120 || lines[0].Status != "F" || lines[0].ReqDate != "20261203" {
		t.Fatalf("lines %+v", lines)
	}
	resp, err = http.Get(srv.URL + "/_sandbox/bills/20261203")
	if err != nil {
		t.Fatal(err)
	}
	file, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p, err := payscore.ParseBill(file)
	if err != nil || len(p.Problems) != 0 || len(p.Lines) != 1 || p.Lines[0].Status != "F" || p.Lines[0].Amount != 120 || p.SummaryCount != 1 {
		t.Fatalf("served file: %+v %v", p, err)
	}
	if c := postJSON("/_sandbox/bills/hold", `{"on":true}`); c != 200 {
		t.Fatalf("hold: %d", c)
	}
	resp, err = http.Get(srv.URL + "/_sandbox/bills/20261203")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("held file: %d", resp.StatusCode)
	}
	sb.HoldBills(false)
}
