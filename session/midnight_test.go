package session_test

import (
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
)

// beforeMidnight moves the harness clock to two minutes before the next
// Beijing midnight, and returns that midnight.
func beforeMidnight(h *harness) time.Time {
	now := h.now().In(payscore.Beijing)
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, payscore.Beijing)
	h.ahead.Add(int64(midnight.Add(-2 * time.Minute).Sub(now)))
	return midnight
}

// slowRetries: a failed effect comes back only minutes later, so a test can
// let midnight pass between two tries.
func slowRetries(c *session.Config) {
	c.EffectRetryMin, c.EffectRetryMax = 10*time.Minute, 10*time.Minute
}

// TestMidnightRule: a payment step that failed before Beijing midnight and
// is tried again after it is neither re-sent with the first day's req_date
// (which Huifu — and the sandbox — refuse with 10000000) nor re-sent under a
// new id before a query settled the first day's attempt (docs/payscore.md
// §3). Each case ends with one deduction and no failure: the old code,
// taking the effect's due day as req_date, got a final refusal after
// midnight and spent a second deduction (or, for a refund, marked it failed
// while the money had moved).
func TestMidnightRule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		fault sandbox.FaultKind
	}{
		{"debit not executed", payscore.PathDebit, sandbox.Fault5xx},
		{"debit executed, reply lost", payscore.PathDebit, sandbox.FaultExecuted5xx},
		{"registration executed, reply lost", payscore.PathRegisterDeduction, sandbox.FaultExecuted5xx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, boltStore(t), slowRetries)
			midnight := beforeMidnight(h)
			s := h.ended("CP-MN")
			if tc.path == payscore.PathDebit {
				h.sb.LoseNotifications(1) // an executed debit's notification is lost too: the query must find it
			}
			if err := h.sb.FailNext(tc.path, 1, tc.fault); err != nil {
				t.Fatal(err)
			}
			h.drain()
			if got := h.get(s.ID); got.State == fsm.Paid || !h.now().Before(midnight) {
				t.Fatalf("before midnight: %s at %s", got.State, h.now())
			}
			h.ahead.Add(int64(15 * time.Minute)) // past midnight: the retry is due
			got := h.waitState(s.ID, fsm.Paid)
			if got.Payment.Deductions != 1 || got.Payment.Failures != 0 {
				t.Fatalf("deductions %d, failures %d (%s)", got.Payment.Deductions, got.Payment.Failures, got.Payment.LastFail)
			}
			o, _ := h.sb.Order(s.OutOrderNo)
			if len(o.Registrations) != 1 || len(o.Payments) != 1 || o.Payments[0].Amount != got.Payment.PaidFen {
				t.Fatalf("sandbox order %+v", o)
			}
			if tc.fault == sandbox.Fault5xx {
				// Not executed before midnight: sent anew, dated the new day.
				day := payscore.FormatDate(midnight)
				want := payscore.ReqSeqID(s.ID, payscore.StepDebit, 1, day)
				if p := o.Payments[0]; p.ReqDate != day || p.ReqSeqID != want {
					t.Fatalf("payment %s/%s, want %s/%s", p.ReqDate, p.ReqSeqID, day, want)
				}
			}
		})
	}

	t.Run("refund executed, reply lost", func(t *testing.T) {
		h := newHarness(t, boltStore(t), slowRetries)
		midnight := beforeMidnight(h)
		s := h.paid("CP-MR")
		if err := h.sb.FailNext(payscore.PathRefund, 1, sandbox.FaultExecuted5xx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.eng.Refund(bg, s.ID, "op", 100, "test", ""); err != nil {
			t.Fatal(err)
		}
		h.drain()
		if !h.now().Before(midnight) {
			t.Fatalf("the refund was first sent after midnight (%s)", h.now())
		}
		h.ahead.Add(int64(15 * time.Minute))
		deadline := time.Now().Add(10 * time.Second)
		for {
			h.drain()
			got := h.get(s.ID)
			if len(got.Refunds) == 1 && got.Refunds[0].Status != fsm.RefundPending {
				if got.Refunds[0].Status != fsm.RefundSucceeded {
					t.Fatalf("refund %+v: the money moved", got.Refunds[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("refund still %+v", got.Refunds)
			}
			time.Sleep(10 * time.Millisecond)
		}
		o, _ := h.sb.Order(s.OutOrderNo)
		if len(o.Payments) != 1 || o.Payments[0].Refunded != 100 {
			t.Fatalf("sandbox refunded %+v", o.Payments)
		}
	})
}
