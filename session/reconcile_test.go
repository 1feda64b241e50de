package session_test

import (
	"errors"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

func (h *harness) reconciler() *session.Reconciler {
	h.t.Helper()
	r, err := session.NewReconciler(session.ReconcilerConfig{Store: h.st, Bill: h.pay, Flagger: h.eng, Instance: "test", Now: h.now})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func today(h *harness) (date, day string) {
	now := h.now().In(money.Beijing)
	return now.Format(store.ReconcileDateLayout), payscore.FormatDate(now)
}

// TestReconcileEveryDifference pays four sessions (one partly refunded),
// reconciles the day against the sandbox's bill (all matched), then makes
// Huifu's bill disagree in every way there is and checks each difference
// is reported with its session, the sessions are flagged and the report
// is stored.
func TestReconcileEveryDifference(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st)
		h.charger("CP1")
		h.charger("CP2")
		a, b := h.paid("CP1"), h.paid("CP2")
		if _, _, err := h.eng.Refund(bg, a.ID, "ops", 1, "goodwill", "k1"); err != nil {
			t.Fatal(err)
		}
		h.drain()
		a = h.get(a.ID)
		if len(a.Refunds) != 1 || a.Refunds[0].Status != fsm.RefundSucceeded {
			t.Fatalf("refund %+v", a.Refunds)
		}
		date, day := today(h)
		r := h.reconciler()
		rep, err := r.Run(bg, date)
		if err != nil || rep.Status != store.ReconcileMatched || rep.Matched != 3 || rep.Differences != 0 || rep.OurLines != 3 || rep.HuifuLines != 3 {
			t.Fatalf("clean day: %+v %v", rep, err)
		}

		// Huifu's books disagree: a's debit is missing, b's amount differs,
		// a's refund failed there, and a stranger's debit appears.
		for _, e := range []sandbox.BillEdit{
			{Date: day, Op: sandbox.BillDrop, Match: a.Payment.HfSeqID},
			{Date: day, Op: sandbox.BillAlter, Match: b.Payment.HfSeqID, Line: sandbox.BillLine{Amount: b.Payment.PaidFen + 1}},
			{Date: day, Op: sandbox.BillAlter, Match: a.Refunds[0].HfSeqID, Line: sandbox.BillLine{Status: payscore.TransFailed}},
			{Date: day, Op: sandbox.BillAdd, Line: sandbox.BillLine{ReqSeqID: "XX0001STRANGER", HfSeqID: "HFSTRANGER", Amount: 777}},
			{Date: day, Op: sandbox.BillAdd, Line: sandbox.BillLine{ReqSeqID: "XX0002FAILED", HfSeqID: "HFFAILED", Amount: 5, Status: payscore.TransFailed}},
		} {
			if err := h.sb.EditBill(e); err != nil {
				t.Fatal(err)
			}
		}
		rep, err = r.Run(bg, date)
		if err != nil || rep.Status != store.ReconcileDifferences || rep.Matched != 0 || rep.Differences != 4 {
			t.Fatalf("differences: %+v %v", rep, err)
		}
		got := map[string]store.ReconcileLine{}
		for _, l := range rep.Lines {
			got[l.Outcome] = l
		}
		if l := got[session.OutcomeMissingAtHuifu]; l.SessionID != a.ID || l.Kind != "debit" || l.OurAmountFen != a.Payment.PaidFen || l.HfSeqID != a.Payment.HfSeqID {
			t.Errorf("missing_at_huifu %+v", l)
		}
		if l := got[session.OutcomeAmountMismatch]; l.SessionID != b.ID || l.OurAmountFen != b.Payment.PaidFen || l.HuifuAmountFen != b.Payment.PaidFen+1 {
			t.Errorf("amount_mismatch %+v", l)
		}
		if l := got[session.OutcomeStatusMismatch]; l.SessionID != a.ID || l.Kind != "refund" || l.RefundID != a.Refunds[0].ID || l.OurStatus != "S" || l.HuifuStatus != "F" {
			t.Errorf("status_mismatch %+v", l)
		}
		if l := got[session.OutcomeMissingHere]; l.SessionID != "" || l.HfSeqID != "HFSTRANGER" || l.HuifuAmountFen != 777 {
			t.Errorf("missing_here %+v", l)
		}
		for _, id := range []string{a.ID, b.ID} {
			if s := h.get(id); !s.HasFlag(fsm.FlagReconcileMismatch) || s.State != fsm.Paid {
				t.Errorf("session %s: %s flags %v", id, s.State, s.Flags)
			}
		}
		stored, err := st.GetReconciliation(bg, date)
		if err != nil || stored.Differences != 4 || len(stored.Lines) != 4 {
			t.Fatalf("stored %+v %v", stored, err)
		}

		// A bill Huifu has not produced yet: the run fails and says so.
		h.sb.HoldBills(true)
		rep, err = r.Run(bg, date)
		if !errors.Is(err, payscore.ErrBillNotReady) || rep.Status != store.ReconcileFailed || rep.Error == "" {
			t.Fatalf("held bill: %+v %v", rep, err)
		}
	})
}

// TestReconcileDailyOncePerDay: the daily run reconciles the previous day
// once its time has come, and a second instance does not run it again.
func TestReconcileDailyOncePerDay(t *testing.T) {
	h := newHarness(t, boltStore(t))
	r := h.reconciler()
	now := h.now().In(money.Beijing)
	early := time.Duration(now.Hour())*time.Hour + time.Duration(now.Minute()+1)*time.Minute
	if now.Hour() < 23 {
		if ran, err := r.RunDue(bg, early+time.Hour); ran || err != nil {
			t.Fatalf("before its time: ran=%v err=%v", ran, err)
		}
	}
	ran, err := r.RunDue(bg, 0)
	if !ran || err != nil {
		t.Fatalf("due: ran=%v err=%v", ran, err)
	}
	other, _ := session.NewReconciler(session.ReconcilerConfig{Store: h.st, Bill: h.pay, Flagger: h.eng, Instance: "other", Now: h.now})
	if ran, err := other.RunDue(bg, 0); ran || err != nil {
		t.Fatalf("second instance: ran=%v err=%v", ran, err)
	}
	yesterday := now.AddDate(0, 0, -1).Format(store.ReconcileDateLayout)
	rep, err := h.st.GetReconciliation(bg, yesterday)
	if err != nil || rep.Status != store.ReconcileMatched || rep.Owner != "test" {
		t.Fatalf("yesterday's report %+v %v", rep, err)
	}
	if _, ok, err := session.ParseTimeOfDay("off"); ok || err != nil {
		t.Fatal("off is not off")
	}
	if d, ok, err := session.ParseTimeOfDay("10:30"); !ok || err != nil || d != 10*time.Hour+30*time.Minute {
		t.Fatalf("10:30 = %v %v %v", d, ok, err)
	}
	if _, _, err := session.ParseTimeOfDay("25:00"); err == nil {
		t.Fatal("25:00 accepted")
	}
}
