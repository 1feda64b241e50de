package session_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// TestEffects is the engine's effect handling, one effect at a time: for
// each kind, a session in which it is performed or skipped (the machine no
// longer wants it), and the outcome for each class of answer — Pay Score's
// retryable, uncertain and final failures (the sandbox's fault injection,
// over real HTTP), a broker that does not take a command. The charger side
// is the Commander port with a recording implementation: what is checked is
// which commands the engine publishes and when, which an MQTT broker would
// only relay (the link itself is tested in package charger).
//
// setup leaves the effect under test in the outbox, not yet performed;
// drain then performs everything due, retries included (the retry back-off
// is a millisecond here), and outcomes are what the engine reported for
// that kind, in order.
func TestEffects(t *testing.T) {
	type tc struct {
		name     string
		kind     fsm.EffectKind
		setup    func(h *harness) string
		outcomes []string
		check    func(t *testing.T, h *harness, s fsm.Session)
	}
	fault := func(h *harness, path string, kind sandbox.FaultKind) {
		h.t.Helper()
		if err := h.sb.FailNext(path, 1, kind); err != nil {
			h.t.Fatal(err)
		}
	}
	// confirmedUndrained: the user confirmed; the start is not sent yet.
	confirmedUndrained := func(h *harness) string {
		s := h.created("CP1")
		h.drain()
		if err := h.sb.Confirm(s.OutOrderNo); err != nil {
			h.t.Fatal(err)
		}
		return h.until(s.ID, fsm.UserConfirmed).ID
	}
	// endedUndrained: the charger ended; complete is not called yet.
	endedUndrained := func(h *harness) string {
		s := h.charging("CP1")
		h.drain()
		h.apply(s.ID, fsm.Event{Type: fsm.EvEnded, By: fsm.ByCharger, ChargerTime: h.now(), MeterWh: 3000})
		h.ahead.Add(int64(5 * time.Second)) // end_time is in the past for complete
		return s.ID
	}
	// completedUndrained: complete succeeded; deduction 1 is not registered yet.
	completedUndrained := func(h *harness) string {
		id := endedUndrained(h)
		h.sb.FailDebits(0)
		for range 100 {
			n, err := h.eng.RunOnce(bg, "test/0", 1)
			if err != nil {
				h.t.Fatal(err)
			}
			if h.get(id).State == fsm.Completed || n == 0 {
				break
			}
		}
		if s := h.get(id); s.State != fsm.Completed {
			h.t.Fatalf("%s, want completed", s.State)
		}
		h.obs.of(fsm.EffCompleteOrder)
		return id
	}
	// refundUndrained: a paid session with a refund of 1.00 asked for.
	refundUndrained := func(h *harness) string {
		s := h.paid("CP1")
		if _, _, err := h.eng.Refund(bg, s.ID, "ops", 100, "goodwill", "k"); err != nil {
			h.t.Fatal(err)
		}
		return s.ID
	}
	starts := func(t *testing.T, h *harness, id string, want int) {
		t.Helper()
		if got := h.cmd.sent(id, charger.CmdStart); len(got) != want {
			t.Fatalf("%d start commands, want %d", len(got), want)
		}
	}

	cases := []tc{
		// send_start
		{"start sent", fsm.EffSendStart, confirmedUndrained, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			got := h.cmd.sent(s.ID, charger.CmdStart)
			if len(got) != 1 || got[0].CmdID != s.ID+"-start" || got[0].MaxEnergyWh != s.MaxEnergyWh || got[0].Deadline.IsZero() {
				t.Fatalf("start commands %+v", got)
			}
		}},
		{"start retried when the broker does not take it", fsm.EffSendStart, func(h *harness) string {
			id := confirmedUndrained(h)
			h.cmd.failNext(1)
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) { starts(t, h, s.ID, 1) }},
		{"start skipped once cancelled", fsm.EffSendStart, func(h *harness) string {
			id := confirmedUndrained(h)
			if _, err := h.eng.Cancel(bg, id, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			return id
		}, []string{"skipped"}, func(t *testing.T, h *harness, s fsm.Session) {
			starts(t, h, s.ID, 0)
			if s.State != fsm.Cancelled || len(h.cmd.sent(s.ID, charger.CmdStop)) != 1 {
				t.Fatalf("%s, stops %v", s.State, h.cmd.sent(s.ID, charger.CmdStop))
			}
		}},
		{"start skipped past its deadline", fsm.EffSendStart, func(h *harness) string {
			id := confirmedUndrained(h)
			h.ahead.Add(int64(2 * time.Minute))
			return id
		}, []string{"skipped"}, func(t *testing.T, h *harness, s fsm.Session) {
			starts(t, h, s.ID, 0)
			if s.State != fsm.Cancelled || s.CancelReason != fsm.ReasonChargerNeverStarted {
				t.Fatalf("%s %s", s.State, s.CancelReason)
			}
		}},

		// send_stop
		{"stop sent", fsm.EffSendStop, func(h *harness) string {
			s := h.charging("CP1")
			h.drain()
			if _, err := h.eng.Stop(bg, s.ID, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			return s.ID
		}, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if got := h.cmd.sent(s.ID, charger.CmdStop); len(got) != 1 || got[0].CmdID != s.ID+"-stop-1" {
				t.Fatalf("stops %+v", got)
			}
		}},
		{"stop retried when the broker does not take it", fsm.EffSendStop, func(h *harness) string {
			s := h.charging("CP1")
			h.drain()
			h.cmd.failNext(1)
			if _, err := h.eng.Stop(bg, s.ID, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			return s.ID
		}, []string{"retried", "done"}, nil},
		{"stop skipped once the charger answered it", fsm.EffSendStop, func(h *harness) string {
			s := h.charging("CP1")
			h.drain()
			if _, err := h.eng.Stop(bg, s.ID, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			h.apply(s.ID, fsm.Event{Type: fsm.EvStopAccepted, By: fsm.ByCharger, CmdID: s.ID + "-stop-1"})
			return s.ID
		}, []string{"skipped"}, nil},

		// cancel_order
		{"cancel done", fsm.EffCancelOrder, func(h *harness) string {
			s := h.created("CP1")
			h.drain()
			if _, err := h.eng.Cancel(bg, s.ID, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			return s.ID
		}, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.State != payscore.StateRevoked {
				t.Fatalf("order %s", o.State)
			}
		}},
		{"cancel retried on a retryable failure", fsm.EffCancelOrder, func(h *harness) string {
			s := h.created("CP1")
			h.drain()
			fault(h, payscore.PathCancelOrder, sandbox.FaultSystemError)
			if _, err := h.eng.Cancel(bg, s.ID, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			return s.ID
		}, []string{"retried", "done"}, nil},
		{"cancel given up on a final refusal", fsm.EffCancelOrder, func(h *harness) string {
			s := h.created("CP1")
			h.drain()
			fault(h, payscore.PathCancelOrder, sandbox.FaultRefuse)
			if _, err := h.eng.Cancel(bg, s.ID, fsm.ByApp); err != nil {
				h.t.Fatal(err)
			}
			return s.ID
		}, []string{"failed"}, func(t *testing.T, h *harness, s fsm.Session) {
			if !anomaly(t, h, s.ID, "cancel_order failed") {
				t.Fatal("no anomaly for the failed cancel")
			}
		}},

		// complete_order
		{"complete done", fsm.EffCompleteOrder, endedUndrained, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Completes != 1 || o.Total != s.AmountFen || s.CompletedAt.IsZero() {
				t.Fatalf("order %+v, session %s", o, s.State)
			}
		}},
		{"complete retried on a retryable failure", fsm.EffCompleteOrder, func(h *harness) string {
			id := endedUndrained(h)
			fault(h, payscore.PathCompleteOrder, sandbox.Fault5xx)
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Completes != 1 {
				t.Fatalf("%d completes", o.Completes)
			}
		}},
		{"complete settled by query when uncertain", fsm.EffCompleteOrder, func(h *harness) string {
			id := endedUndrained(h)
			fault(h, payscore.PathCompleteOrder, sandbox.FaultExecuted5xx)
			return id
		}, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Completes != 1 || s.CompletedAt.IsZero() {
				t.Fatalf("%d completes, session %s", o.Completes, s.State)
			}
		}},
		{"complete kept trying after a refusal, which is reported", fsm.EffCompleteOrder, func(h *harness) string {
			id := endedUndrained(h)
			fault(h, payscore.PathCompleteOrder, sandbox.FaultRefuse)
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if !anomaly(t, h, s.ID, "complete refused") || s.CompletedAt.IsZero() {
				t.Fatal("the refusal was not reported, or the order not completed in the end")
			}
		}},
		{"complete skipped once completed", fsm.EffCompleteOrder, func(h *harness) string {
			id := endedUndrained(h)
			h.apply(id, fsm.Event{Type: fsm.EvOrderCompleted, By: fsm.ByPayScore})
			return id
		}, []string{"skipped"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Completes != 0 {
				t.Fatalf("%d completes", o.Completes)
			}
		}},

		// register_deduction
		{"registration done", fsm.EffRegisterDeduction, completedUndrained, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); len(o.Registrations) != 1 || (s.State != fsm.Deducting && s.State != fsm.Paid) {
				t.Fatalf("registrations %+v, %s", o.Registrations, s.State)
			}
		}},
		{"registration retried on a retryable failure", fsm.EffRegisterDeduction, func(h *harness) string {
			id := completedUndrained(h)
			fault(h, payscore.PathRegisterDeduction, sandbox.FaultSystemError)
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); len(o.Registrations) != 1 || s.Payment.Failures != 0 {
				t.Fatalf("registrations %+v, payment %+v", o.Registrations, s.Payment)
			}
		}},
		{"registration refused fails the deduction", fsm.EffRegisterDeduction, func(h *harness) string {
			id := completedUndrained(h)
			fault(h, payscore.PathRegisterDeduction, sandbox.FaultRefuse)
			return id
		}, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if s.State != fsm.Completed || s.Payment.Failures != 1 || !strings.Contains(s.Payment.LastFail, "registration refused") {
				t.Fatalf("%s %+v", s.State, s.Payment)
			}
			if _, ok := s.TimerByKind(fsm.TimerDebitRetry); !ok {
				t.Fatal("no debit retry armed")
			}
		}},
		{"registration skipped once paid", fsm.EffRegisterDeduction, func(h *harness) string {
			id := completedUndrained(h)
			h.apply(id, fsm.Event{Type: fsm.EvPaid, By: fsm.ByPayScore, HfSeqID: "U1", ReqDate: payscore.FormatDate(h.now())})
			return id
		}, []string{"skipped"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); len(o.Registrations) != 0 || !s.Payment.ByUser {
				t.Fatalf("registrations %+v, by user %v", o.Registrations, s.Payment.ByUser)
			}
		}},

		// debit
		{"debit done and paid", fsm.EffDebit, completedUndrained, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			s = h.waitState(s.ID, fsm.Paid) // processing: the notification settles it
			if o, _ := h.sb.Order(s.OutOrderNo); len(o.Payments) != 1 || s.State != fsm.Paid || s.Payment.ByUser || s.Payment.HfSeqID != o.Payments[0].HfSeqID {
				t.Fatalf("payments %+v, session %s %+v", o.Payments, s.State, s.Payment)
			}
		}},
		{"debit retried on a retryable failure, paid once", fsm.EffDebit, func(h *harness) string {
			id := completedUndrained(h)
			fault(h, payscore.PathDebit, sandbox.FaultSystemError)
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) {
			s = h.waitState(s.ID, fsm.Paid)
			if o, _ := h.sb.Order(s.OutOrderNo); len(o.Payments) != 1 {
				t.Fatalf("payments %+v", o.Payments)
			}
		}},
		{"debit uncertain is retried with the same req_seq_id, paid once", fsm.EffDebit, func(h *harness) string {
			id := completedUndrained(h)
			fault(h, payscore.PathDebit, sandbox.FaultExecuted5xx)
			h.sb.LoseNotifications(1) // the payment's: the poll must find it
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) {
			h.ahead.Add(int64(time.Minute)) // the poll is due
			s = h.waitState(s.ID, fsm.Paid)
			if o, _ := h.sb.Order(s.OutOrderNo); len(o.Payments) != 1 {
				t.Fatalf("payments %+v", o.Payments)
			}
		}},
		{"debit refused fails the deduction", fsm.EffDebit, func(h *harness) string {
			id := completedUndrained(h)
			fault(h, payscore.PathDebit, sandbox.FaultRefuse)
			return id
		}, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if s.State != fsm.Completed || s.Payment.Failures != 1 || !strings.Contains(s.Payment.LastFail, "debit refused") {
				t.Fatalf("%s %+v", s.State, s.Payment)
			}
		}},

		// refund
		{"refund done", fsm.EffRefund, refundUndrained, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Payments[0].Refunded != 100 || s.Refunds[0].Status != fsm.RefundSucceeded {
				t.Fatalf("payments %+v refunds %+v", o.Payments, s.Refunds)
			}
		}},
		{"refund retried on a retryable failure, refunded once", fsm.EffRefund, func(h *harness) string {
			id := refundUndrained(h)
			fault(h, payscore.PathRefund, sandbox.FaultSystemError)
			return id
		}, []string{"retried", "done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Payments[0].Refunded != 100 || s.Refunds[0].Status != fsm.RefundSucceeded {
				t.Fatalf("payments %+v refunds %+v", o.Payments, s.Refunds)
			}
		}},
		{"refund refused is failed", fsm.EffRefund, func(h *harness) string {
			id := refundUndrained(h)
			fault(h, payscore.PathRefund, sandbox.FaultRefuse)
			return id
		}, []string{"done"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Payments[0].Refunded != 0 || s.Refunds[0].Status != fsm.RefundFailed || s.RefundableFen() != s.Payment.PaidFen {
				t.Fatalf("payments %+v refunds %+v", o.Payments, s.Refunds)
			}
		}},
		{"refund skipped once settled", fsm.EffRefund, func(h *harness) string {
			id := refundUndrained(h)
			h.apply(id, fsm.Event{Type: fsm.EvRefundFailed, By: fsm.ByPayScore, RefundID: "r1"})
			return id
		}, []string{"skipped"}, func(t *testing.T, h *harness, s fsm.Session) {
			if o, _ := h.sb.Order(s.OutOrderNo); o.Payments[0].Refunded != 0 {
				t.Fatalf("payments %+v", o.Payments)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, boltStore(t))
			id := c.setup(h)
			h.obs.of(c.kind)
			h.drain()
			if got := h.obs.of(c.kind); !slices.Equal(got, c.outcomes) {
				t.Fatalf("%s outcomes %v, want %v", c.kind, got, c.outcomes)
			}
			if c.check != nil {
				c.check(t, h, h.get(id))
			}
		})
	}
}

// anomaly reports whether an anomaly of session id contains text.
func anomaly(t *testing.T, h *harness, id, text string) bool {
	t.Helper()
	page, err := h.st.ListAnomalies(bg, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range page.Anomalies {
		if a.SessionID == id && strings.Contains(a.Reason, text) {
			return true
		}
	}
	return false
}

// TestClassify: the engine's one classifier.
func TestClassify(t *testing.T) {
	// Classes of real Pay Score answers are checked in TestEffects; here the
	// other sources of errors.
	for _, c := range []struct {
		err  error
		want session.ErrorClass
	}{
		{&payscore.Error{Code: payscore.CodeSystemError, Retryable: true}, session.ClassRetryable},
		{&payscore.Error{Code: payscore.CodeTooFrequent, Verified: true}, session.ClassRetryable},
		{&payscore.Error{Code: payscore.CodeDuplicate, Uncertain: true}, session.ClassUncertain},
		{&payscore.Error{Code: payscore.CodeRisk, Verified: true}, session.ClassFinal},
		{fmt.Errorf("publish: %w", payscore.ErrInvalidRequest), session.ClassFinal},
		{fmt.Errorf("get: %w", store.ErrUnavailable), session.ClassRetryable},
		{fmt.Errorf("commit: %w", store.ErrVersionConflict), session.ClassRetryable},
		{fmt.Errorf("get: %w", store.ErrNotFound), session.ClassFinal},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), session.ClassUncertain},
		{fmt.Errorf("publish: %w", errors.New("broker down")), session.ClassFinal},
		{errors.New("something else"), session.ClassFinal},
	} {
		if got := session.Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// TestChargerAnswersAreRecorded: the charger's acks of our start and stops
// reach the machine, which keeps them (an unanswered command is sent again).
func TestChargerAnswersAreRecorded(t *testing.T) {
	h := newHarness(t, boltStore(t))
	s := h.confirmed("CP1")
	h.drain()
	ack := func(cmdID, result string) {
		t.Helper()
		in := charger.Inbound{ChargerID: "CP1", Kind: charger.KindAck, Topic: "ev/v1/CP1/up/ack",
			Payload: []byte(fmt.Sprintf(`{"cmd_id":%q,"result":%q,"reason":"bad_request"}`, cmdID, result)), ReceivedAt: h.now()}
		if err := h.eng.HandleCharger(bg, in); err != nil {
			t.Fatal(err)
		}
	}
	ack(s.ID+"-start", "accepted")
	if got := h.get(s.ID); got.StartAnsweredAt.IsZero() || got.State != fsm.UserConfirmed {
		t.Fatalf("start answer not recorded: %+v", got)
	}
	h.apply(s.ID, fsm.Event{Type: fsm.EvStarted, By: fsm.ByCharger, ChargerTime: h.now(), MeterWh: 1000})
	if _, err := h.eng.Stop(bg, s.ID, fsm.ByApp); err != nil {
		t.Fatal(err)
	}
	h.drain()
	ack(s.ID+"-stop-1", "rejected")
	if got := h.get(s.ID); got.StopsAnswered != 1 || !anomaly(t, h, s.ID, "charger rejected stop") {
		t.Fatalf("stop answer not recorded: %d", got.StopsAnswered)
	}
	ack("someone-else-7", "accepted") // not ours: nothing to record, no error
}
