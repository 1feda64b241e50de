package session_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// TestCreateIdempotentAfterCrash: a creation whose process was killed
// while serving it (its key's record left in flight by an earlier process
// of this instance) runs again at once with the record's session id; one
// in flight under another instance still gets the 409 "retry".
func TestCreateIdempotentAfterCrash(t *testing.T) {
	st := boltStore(t)
	h := newHarness(t, st) // instance "test"
	h.charger("CP-C")
	app := session.Caller{Role: "app", Name: "miniprogram"}
	req := session.CreateRequest{ChargerID: "CP-C", Connector: 1, OpenID: "o", MaxAmountFen: 5000}
	b, _ := json.Marshal(req)
	sum := sha256.Sum256([]byte("POST /v1/sessions\napp\nminiprogram\n" + string(b)))
	hash := hex.EncodeToString(sum[:])
	inFlight := func(key, id, owner string) {
		t.Helper()
		k := "create-session\x00app\x00miniprogram\x00" + key
		if _, _, err := st.PutIdempotency(bg, k, hash, session.DefaultIdempotencyTTL); err != nil {
			t.Fatal(err)
		}
		if err := st.SaveIdempotentResponse(bg, k, store.IdemRecord{RequestHash: hash, SessionID: id, Body: []byte("in-flight:" + owner)}); err != nil {
			t.Fatal(err)
		}
	}
	inFlight("other", "s-other", "elsewhere/some-boot")
	if _, err := h.eng.CreateIdempotent(bg, app, "other", req); session.ErrorCode(err) != session.CodeConflict {
		t.Fatalf("in flight on another instance: %v", err)
	}
	inFlight("crashed", "01m8crashed0000000000000000", "test/an-earlier-boot")
	a, err := h.eng.CreateIdempotent(bg, app, "crashed", req)
	if err != nil || a.Replayed || a.SessionID != "01m8crashed0000000000000000" {
		t.Fatalf("after the crash: %+v %v", a, err)
	}
}
