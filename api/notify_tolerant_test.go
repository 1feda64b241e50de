package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
)

// TestNotifyIncomplete: verified notifications with missing or extra fields
// are acknowledged with what they carry — never refused, which would only
// make Huifu send them again until it gives up — and applied by
// out_order_no when they have one, kept as an anomaly when not
// (docs/payscore.md §5).
func TestNotifyIncomplete(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	v := st.create(t, "CP1", 1)

	// User confirmed, without req_seq_id or req_date, with fields nobody
	// documented and a number where a string was expected.
	confirm := map[string]any{"out_order_no": v.OutOrderNo, "state": payscore.StateDoing,
		"state_description": payscore.StateDescUserConfirm, "openid": v.OpenID, "resp_code": "00000000",
		"fee_amt": 0.01, "wx_data": map[string]any{"sub_mchid": "123"}}
	r := st.postForm(t, signed(t, st, confirm))
	if r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_"+v.OutOrderNo {
		t.Fatalf("confirm without req_seq_id: %d %q", r.status, r.body)
	}
	if got := st.view(t, v.ID); got.State != fsm.UserConfirmed {
		t.Fatalf("not applied: %s", got.State)
	}

	// Without out_order_no but with our req_seq_id: applied to the session
	// the req_seq_id names.
	v2 := st.create(t, "CP1", 2)
	o2, _ := st.sb.Order(v2.OutOrderNo)
	confirm2 := map[string]any{"req_seq_id": o2.ReqSeqID, "state": payscore.StateDoing, "state_description": payscore.StateDescUserConfirm}
	if r := st.postForm(t, signed(t, st, confirm2)); r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_"+o2.ReqSeqID {
		t.Fatalf("confirm without out_order_no: %d %q", r.status, r.body)
	}
	if got := st.view(t, v2.ID); got.State != fsm.UserConfirmed {
		t.Fatalf("not applied by req_seq_id: %s", got.State)
	}

	// A payment notification without out_order_no: acknowledged, kept.
	pay := map[string]any{"trans_hf_seq_id": "HFX1", "trans_amt": "1.00", "trans_stat": "S"}
	r = st.postForm(t, signed(t, st, pay))
	if r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_HFX1" {
		t.Fatalf("payment without out_order_no: %d %q", r.status, r.body)
	}
	// Not even JSON: acknowledged, kept.
	form, err := payscore.SignNotification(st.keys.Signer, "not json")
	if err != nil {
		t.Fatal(err)
	}
	if r := st.postForm(t, form.Encode()); r.status != http.StatusOK || string(r.body) != "RECV_ORD_ID_" {
		t.Fatalf("not JSON: %d %q", r.status, r.body)
	}
	var an AnomalyList
	st.mustStatus(t, req{method: "GET", path: "/v1/anomalies", token: operatorToken}, http.StatusOK).json(t, &an)
	n := 0
	for _, a := range an.Anomalies {
		if strings.Contains(a.Reason, "without out_order_no") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("anomalies %+v", an.Anomalies)
	}
}

func signed(t *testing.T, st *stack, fields map[string]any) string {
	t.Helper()
	b, err := payscore.CanonicalJSON(fields)
	if err != nil {
		t.Fatal(err)
	}
	form, err := payscore.SignNotification(st.keys.Signer, string(b))
	if err != nil {
		t.Fatal(err)
	}
	return form.Encode()
}
