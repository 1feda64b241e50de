package session_test

import (
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

// TestNotificationFindsItsOrder: a notification is applied to the session of
// its out_order_no, also when its req_seq_id names another session (the
// one-read lookup by req_seq_id is only taken when the two agree).
func TestNotificationFindsItsOrder(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st)
		a, b := h.created("CP-A"), h.created("CP-B")
		n := payscore.Notification{Kind: payscore.KindUserConfirmed, OutOrderNo: b.OutOrderNo,
			ReqSeqID: payscore.AttemptOn(a.ID, payscore.StepCreate, 1, h.now()).ReqSeqID}
		if err := h.eng.HandleNotification(bg, n); err != nil {
			t.Fatal(err)
		}
		if got := h.get(b.ID).State; got != fsm.UserConfirmed {
			t.Fatalf("the order's session is %s", got)
		}
		if got := h.get(a.ID).State; got != fsm.Created {
			t.Fatalf("the session the req_seq_id names is %s", got)
		}
		// without out_order_no, the req_seq_id's session
		n = payscore.Notification{Kind: payscore.KindUserConfirmed, ReqSeqID: payscore.AttemptOn(a.ID, payscore.StepCreate, 1, h.now()).ReqSeqID}
		if err := h.eng.HandleNotification(bg, n); err != nil {
			t.Fatal(err)
		}
		if got := h.get(a.ID).State; got != fsm.UserConfirmed {
			t.Fatalf("the req_seq_id's session is %s", got)
		}
	})
}
