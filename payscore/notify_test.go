package payscore_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
)

type applied struct{ got []payscore.Notification }

func (a *applied) apply(_ context.Context, n payscore.Notification) error {
	a.got = append(a.got, n)
	return nil
}

func serve(h http.Handler, method, contentType, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/notify/huifu/payscore", strings.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

const formType = "application/x-www-form-urlencoded"

func TestNotifyHandler(t *testing.T) {
	k := payscoretest.HuifuKeys(t)
	confirm := payscoretest.UserConfirmed("CR0001s1", "20250601", "SO1", "openid1")
	pay := payscoretest.PaymentSucceeded("DB0001s1", "20250601", "SO1", "HF9", "12.30")
	good := payscoretest.SignedForm(t, k.Signer, confirm)
	form, _ := url.ParseQuery(good)
	badSig := url.Values{"resp_data": {form.Get("resp_data")}, "sign": {strings.Repeat("A", 340) + "=="}}.Encode()
	tampered := url.Values{"resp_data": {strings.Replace(form.Get("resp_data"), "SO1", "SO2", 1)}, "sign": {form.Get("sign")}}.Encode()
	noSign := url.Values{"resp_data": {form.Get("resp_data")}}.Encode()
	noData := url.Values{"sign": {form.Get("sign")}}.Encode()
	notJSON := func() string {
		f, _ := payscore.SignNotification(k.Signer, "not json")
		return f.Encode()
	}()
	noSeq := payscoretest.SignedForm(t, k.Signer, map[string]string{"out_order_no": "SO1"})
	badAmt := payscoretest.SignedForm(t, k.Signer, payscoretest.PaymentSucceeded("DB1", "20250601", "SO1", "HF9", "12.345"))

	tests := []struct {
		name, method, body string
		status             int
		kind               payscore.NotificationKind
	}{
		{"user confirmed", http.MethodPost, good, 200, payscore.KindUserConfirmed},
		{"payment succeeded", http.MethodPost, payscoretest.SignedForm(t, k.Signer, pay), 200, payscore.KindPaymentSucceeded},
		{"unknown kind is acknowledged", http.MethodPost, payscoretest.SignedForm(t, k.Signer, map[string]string{"req_seq_id": "X1", "trans_stat": "F"}), 200, payscore.KindUnknown},
		{"extra form fields ignored", http.MethodPost, good + "&resp_code=99999999&resp_desc=x", 200, payscore.KindUserConfirmed},
		{"bad signature", http.MethodPost, badSig, 401, ""},
		{"tampered data", http.MethodPost, tampered, 401, ""},
		{"missing sign", http.MethodPost, noSign, 401, ""},
		{"empty body", http.MethodPost, "", 401, ""},
		{"missing resp_data", http.MethodPost, noData, 400, ""},
		// Verified but odd: acknowledged with what is there, never refused
		// (a refusal only makes Huifu send it again).
		{"signed but not JSON", http.MethodPost, notJSON, 200, payscore.KindUnknown},
		{"signed but no req_seq_id", http.MethodPost, noSeq, 200, payscore.KindUnknown},
		{"signed but bad trans_amt", http.MethodPost, badAmt, 200, payscore.KindPaymentSucceeded},
		{"too large", http.MethodPost, good + "&pad=" + strings.Repeat("x", payscore.DefaultMaxNotifyBody), 413, ""},
		{"GET", http.MethodGet, "", 405, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a applied
			w := serve(payscore.NotifyHandler(k.Verifier, a.apply, payscore.NotifyOptions{}), tc.method, formType, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				if len(a.got) != 0 {
					t.Fatal("applied a refused notification")
				}
				return
			}
			if len(a.got) != 1 || a.got[0].Kind != tc.kind {
				t.Fatalf("applied %+v", a.got)
			}
			if got := w.Body.String(); got != a.got[0].Ack() || !strings.HasPrefix(got, "RECV_ORD_ID_") || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
				t.Fatalf("ack %q", got)
			}
		})
	}

	// The decoded payment notification.
	n, err := payscore.VerifyNotificationForm(k.Verifier, mustForm(t, payscoretest.SignedForm(t, k.Signer, pay)))
	if err != nil || n.TransAmt != 1230 || n.TransHfSeqID != "HF9" || n.TransReqDate != "20250601" || n.Ack() != "RECV_ORD_ID_DB0001s1" {
		t.Fatalf("got %+v %v", n, err)
	}
}

// TestNotificationTolerant: a verified notification with missing, extra,
// numeric or unreadable fields is decoded as far as it can be and
// acknowledged with the first serial it carries (docs/payscore.md §5).
func TestNotificationTolerant(t *testing.T) {
	k := payscoretest.HuifuKeys(t)
	for _, tc := range []struct {
		name, respData string
		kind           payscore.NotificationKind
		ack            string
		amt            int64
		unreadable     string
	}{
		{"complete payment", `{"out_order_no":"SO1","req_seq_id":"DB1","trans_amt":"12.30","trans_hf_seq_id":"HF9","trans_stat":"S"}`,
			payscore.KindPaymentSucceeded, "RECV_ORD_ID_DB1", 1230, ""},
		{"no req_seq_id: the debit's hf_seq_id", `{"out_order_no":"SO1","trans_amt":"12.30","trans_hf_seq_id":"HF9","trans_stat":"S"}`,
			payscore.KindPaymentSucceeded, "RECV_ORD_ID_HF9", 1230, ""},
		{"no serial but the order", `{"out_order_no":"SO1","state":"DOING","state_description":"USER_CONFIRM"}`,
			payscore.KindUserConfirmed, "RECV_ORD_ID_SO1", 0, ""},
		{"nothing at all", `{}`, payscore.KindUnknown, "RECV_ORD_ID_", 0, ""},
		{"amount as a number of yuan", `{"out_order_no":"SO1","req_seq_id":"DB1","trans_amt":12.3,"trans_stat":"S"}`,
			payscore.KindPaymentSucceeded, "RECV_ORD_ID_DB1", 1230, ""},
		{"extra and nested fields", `{"out_order_no":"SO1","req_seq_id":"DB1","trans_amt":"1.00","trans_stat":"S","wx_data":{"x":[1,2]},"fee_amt":0.01,"is_delay":true}`,
			payscore.KindPaymentSucceeded, "RECV_ORD_ID_DB1", 100, ""},
		{"unreadable amount", `{"out_order_no":"SO1","req_seq_id":"DB1","trans_amt":"12.345","trans_stat":"S"}`,
			payscore.KindPaymentSucceeded, "RECV_ORD_ID_DB1", 0, "trans_amt"},
		{"not JSON", `not json`, payscore.KindUnknown, "RECV_ORD_ID_", 0, "resp_data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form, err := payscore.SignNotification(k.Signer, tc.respData)
			if err != nil {
				t.Fatal(err)
			}
			var a applied
			w := serve(payscore.NotifyHandler(k.Verifier, a.apply, payscore.NotifyOptions{}), http.MethodPost, formType, form.Encode())
			if w.Code != 200 || w.Body.String() != tc.ack || len(a.got) != 1 {
				t.Fatalf("%d %q, applied %d", w.Code, w.Body, len(a.got))
			}
			n := a.got[0]
			if n.Kind != tc.kind || int64(n.TransAmt) != tc.amt || strings.Join(n.Unreadable, ",") != tc.unreadable || n.Raw != tc.respData {
				t.Fatalf("got %+v", n)
			}
		})
	}
}

func mustForm(t *testing.T, s string) url.Values {
	f, err := url.ParseQuery(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNotifyHandlerApplyErrorAsks500(t *testing.T) {
	k := payscoretest.HuifuKeys(t)
	h := payscore.NotifyHandler(k.Verifier, func(context.Context, payscore.Notification) error { return errors.New("store down") }, payscore.NotifyOptions{})
	w := serve(h, http.MethodPost, formType, payscoretest.SignedForm(t, k.Signer, payscoretest.UserConfirmed("a", "b", "c", "d")))
	if w.Code != 500 || strings.Contains(w.Body.String(), "RECV_ORD_ID") || strings.Contains(w.Body.String(), "store down") {
		t.Fatalf("%d %q", w.Code, w.Body)
	}
}

// FuzzNotification: whatever arrives, the handler never panics, answers 200
// only for a body whose signature verifies, answers 4xx otherwise, and
// applies nothing it refused.
func FuzzNotification(f *testing.F) {
	k := payscoretest.HuifuKeys(f)
	good := payscoretest.SignedForm(f, k.Signer, payscoretest.UserConfirmed("CR0001s1", "20250601", "SO1", "o"))
	f.Add(good)
	f.Add(payscoretest.SignedForm(f, k.Signer, payscoretest.PaymentSucceeded("DB1", "20250601", "SO1", "HF1", "1.00")))
	f.Add("resp_data=%7B%7D&sign=abc")
	f.Add("resp_data=&sign=")
	f.Add("%zz")
	f.Add(strings.Repeat("a=b&", 100))
	f.Fuzz(func(t *testing.T, body string) {
		var a applied
		h := payscore.NotifyHandler(k.Verifier, a.apply, payscore.NotifyOptions{MaxBodyBytes: 8 << 10})
		w := serve(h, http.MethodPost, formType, body)
		switch {
		case w.Code == 200:
			form, err := url.ParseQuery(body)
			if err != nil || k.Verifier.Verify([]byte(form.Get("resp_data")), form.Get("sign")) != nil {
				t.Fatalf("200 for an unverifiable body %q", body)
			}
			if len(a.got) != 1 || w.Body.String() != a.got[0].Ack() {
				t.Fatalf("applied %d, ack %q", len(a.got), w.Body)
			}
		case w.Code >= 400 && w.Code < 500:
			if len(a.got) != 0 {
				t.Fatal("applied a refused notification")
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
		io.Discard.Write(w.Body.Bytes())
	})
}
