package session_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

func TestCreateIdempotent(t *testing.T) {
	h := newHarness(t, boltStore(t))
	h.charger("CP-I")
	app := session.Caller{Role: "app", Name: "miniprogram"}
	req := session.CreateRequest{ChargerID: "CP-I", Connector: 1, OpenID: "o", MaxAmountFen: 5000}

	first, err := h.eng.CreateIdempotent(bg, app, "k1", req)
	if err != nil || first.Replayed || first.Refused != nil || first.SessionID == "" || len(first.View) == 0 {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := h.eng.CreateIdempotent(bg, app, "k1", req)
	if err != nil || !again.Replayed || !bytes.Equal(again.View, first.View) || again.SessionID != first.SessionID {
		t.Fatalf("replay: %+v %v", again, err)
	}
	other := req
	other.Connector = 2
	if _, err := h.eng.CreateIdempotent(bg, app, "k1", other); session.ErrorCode(err) != session.CodeConflict {
		t.Fatalf("another body: %v", err)
	}
	if _, err := h.eng.CreateIdempotent(bg, session.Caller{Role: "operator", Name: "alice"}, "k1", other); err != nil {
		t.Fatalf("another caller's key: %v", err)
	}
	if _, err := h.eng.CreateIdempotent(bg, app, "", req); session.ErrorCode(err) != session.CodeInvalid {
		t.Fatalf("no key: %v", err)
	}
	// A client error is not kept: the same key works once fixed.
	bad := session.CreateRequest{ChargerID: "CP-NEW", Connector: 1, OpenID: "o", MaxAmountFen: 5000}
	if _, err := h.eng.CreateIdempotent(bg, app, "k2", bad); session.ErrorCode(err) != session.CodeNotFound {
		t.Fatalf("unknown charger: %v", err)
	}
	h.charger("CP-NEW")
	if a, err := h.eng.CreateIdempotent(bg, app, "k2", bad); err != nil || a.Replayed {
		t.Fatalf("after registering: %+v %v", a, err)
	}
}

// TestCreateIdempotentReplaysOldRecords: a refusal kept by an earlier
// version (the problem document, status 502) is still the key's answer.
func TestCreateIdempotentReplaysOldRecords(t *testing.T) {
	st := boltStore(t)
	h := newHarness(t, st)
	app := session.Caller{Role: "app", Name: "miniprogram"}
	req := session.CreateRequest{ChargerID: "CP-O", Connector: 1, OpenID: "o", MaxAmountFen: 5000}
	b, _ := json.Marshal(req)
	sum := sha256.Sum256([]byte("POST /v1/sessions\napp\nminiprogram\n" + string(b)))
	key := "create-session\x00app\x00miniprogram\x00old"
	hash := hex.EncodeToString(sum[:])
	if _, _, err := st.PutIdempotency(bg, key, hash, session.DefaultIdempotencyTTL); err != nil {
		t.Fatal(err)
	}
	problem := `{"type":"https://chargeflow.dev/problems/payment_refused","title":"Payment refused","status":502,"detail":"Pay Score refused the order: no","code":"payment_refused","instance":"/v1/sessions"}` + "\n"
	if err := st.SaveIdempotentResponse(bg, key, store.IdemRecord{RequestHash: hash, SessionID: "s-old", Status: 502, Body: []byte(problem)}); err != nil {
		t.Fatal(err)
	}
	a, err := h.eng.CreateIdempotent(bg, app, "old", req)
	if err != nil || !a.Replayed || a.Refused == nil || a.Refused.Code != session.CodePaymentRefused || a.Refused.Message != "Pay Score refused the order: no" {
		t.Fatalf("old refusal: %+v %v", a, err)
	}
}
