// Package payscoretest helps other packages test code that receives Huifu
// notifications: it builds notification forms signed the way Huifu signs
// them, with a key pair generated once per test binary.
package payscoretest

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/chargeflow/chargeflow/payscore"
)

// Keys is a Huifu-side key pair for tests.
type Keys struct {
	Signer     payscore.Signer   // signs as Huifu would
	Verifier   payscore.Verifier // give this to the code under test
	PrivateKey string            // base64 PKCS#8
	PublicKey  string            // base64 PKIX
}

var (
	once sync.Once
	keys Keys
	err  error
)

// HuifuKeys returns a key pair generated once per process (RSA-2048
// generation is slow under -race).
func HuifuKeys(t testing.TB) Keys {
	t.Helper()
	once.Do(func() {
		var k *rsa.PrivateKey
		if k, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return
		}
		keys.Signer = payscore.NewRSASigner(k)
		keys.Verifier = payscore.NewRSAVerifier(&k.PublicKey)
		if keys.PrivateKey, err = payscore.EncodePrivateKey(k); err != nil {
			return
		}
		keys.PublicKey, err = payscore.EncodePublicKey(&k.PublicKey)
	})
	if err != nil {
		t.Fatalf("payscoretest keys: %v", err)
	}
	return keys
}

// RespData serialises notification fields the way Huifu does (compact,
// keys sorted, unescaped).
func RespData(t testing.TB, fields map[string]string) string {
	t.Helper()
	b, err := payscore.CanonicalJSON(fields)
	if err != nil {
		t.Fatalf("payscoretest: %v", err)
	}
	return string(b)
}

// SignedForm returns the url-encoded form body Huifu would post for fields,
// signed with signer.
func SignedForm(t testing.TB, signer payscore.Signer, fields map[string]string) string {
	t.Helper()
	form, err := payscore.SignNotification(signer, RespData(t, fields))
	if err != nil {
		t.Fatalf("payscoretest: %v", err)
	}
	return form.Encode()
}

// NewRequest returns a POST to target carrying the signed form of fields.
func NewRequest(t testing.TB, signer payscore.Signer, target string, fields map[string]string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(SignedForm(t, signer, fields)))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// UserConfirmed returns the fields of a user-confirmed notification.
func UserConfirmed(reqSeqID, reqDate, outOrderNo, openID string) map[string]string {
	return map[string]string{
		"resp_code": payscore.CodeSuccess, "resp_desc": "成功", "huifu_id": "6666000100000001",
		"req_seq_id": reqSeqID, "req_date": reqDate, "out_order_no": outOrderNo,
		"state": payscore.StateDoing, "state_description": payscore.StateDescUserConfirm, "openid": openID,
	}
}

// PaymentSucceeded returns the fields of a payment-success notification;
// amountYuan is trans_amt as Huifu sends it ("12.30").
func PaymentSucceeded(reqSeqID, reqDate, outOrderNo, transHfSeqID, amountYuan string) map[string]string {
	return map[string]string{
		"resp_code": payscore.CodeSuccess, "resp_desc": "成功", "huifu_id": "6666000100000001",
		"req_seq_id": reqSeqID, "req_date": reqDate, "out_order_no": outOrderNo,
		"trans_hf_seq_id": transHfSeqID, "trans_req_date": reqDate, "trans_amt": amountYuan,
		"trans_stat": payscore.TransSucceeded,
	}
}
