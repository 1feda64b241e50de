package session_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

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
	// Created, never claimed: its process died before sending anything.
	k := "create-session\x00app\x00miniprogram\x00unclaimed"
	if _, _, err := st.PutIdempotency(bg, k, hash, session.DefaultIdempotencyTTL); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.CreateIdempotent(bg, app, "unclaimed", req); session.ErrorCode(err) != session.CodeConflict {
		t.Fatalf("unclaimed, just created: %v", err)
	}
	h.ahead.Add(int64(6 * time.Second))
	if a, err := h.eng.CreateIdempotent(bg, app, "unclaimed", req); err != nil || a.Replayed || a.SessionID == "" {
		t.Fatalf("unclaimed for 6 s: %+v %v", a, err)
	}
	if _, err := h.eng.Cancel(bg, mustSessionID(t, h, "CP-C"), "app"); err != nil {
		t.Fatal(err)
	}

	inFlight("crashed", "01m8crashed0000000000000000", "test/an-earlier-boot")
	a, err := h.eng.CreateIdempotent(bg, app, "crashed", req)
	if err != nil || a.Replayed || a.SessionID != "01m8crashed0000000000000000" {
		t.Fatalf("after the crash: %+v %v", a, err)
	}
}

// mustSessionID is the active session on cp's connector 1.
func mustSessionID(t *testing.T, h *harness, cp string) string {
	t.Helper()
	s, err := h.st.ActiveSession(bg, cp, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s.ID
}
