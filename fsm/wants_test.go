package fsm

import (
	"slices"
	"testing"
	"time"
)

// lastEffect returns the last effect of kind k in r.
func lastEffect(t *testing.T, r Result, k EffectKind) Effect {
	t.Helper()
	i := slices.IndexFunc(r.Effects, func(e Effect) bool { return e.Kind == k })
	if i < 0 {
		t.Fatalf("no %s effect in %v", k, effectKinds(r.Effects))
	}
	return r.Effects[i]
}

func TestWants(t *testing.T) {
	t.Run("send_start while confirmed, unanswered and before its deadline", func(t *testing.T) {
		b := newBuilder(t)
		start := lastEffect(t, b.confirm(), EffSendStart)
		if ok, why := b.m.Wants(b.s, start, b.at); !ok {
			t.Fatalf("fresh start not wanted: %s", why)
		}
		if ok, _ := b.m.Wants(b.s, start, start.Deadline.Add(time.Millisecond)); ok {
			t.Fatal("start wanted past its deadline")
		}
		other := start
		other.CmdID = "x-start"
		if ok, _ := b.m.Wants(b.s, other, b.at); ok {
			t.Fatal("another session's start wanted")
		}
		answered := b.s
		b.apply(Event{Type: EvStartAccepted, By: ByCharger, CmdID: start.CmdID})
		if ok, _ := b.m.Wants(b.s, start, b.at); ok || !answered.StartAnsweredAt.IsZero() {
			t.Fatal("an answered start is still wanted")
		}
		b.started(100)
		if ok, _ := b.m.Wants(b.s, start, b.at); ok {
			t.Fatal("start wanted while charging")
		}
	})
	t.Run("send_stop until answered", func(t *testing.T) {
		b := sessionIn(t, Charging)
		stop := lastEffect(t, b.stop(), EffSendStop)
		if ok, _ := b.m.Wants(b.s, stop, b.at); !ok {
			t.Fatal("stop not wanted")
		}
		b.apply(Event{Type: EvStopAccepted, By: ByCharger, CmdID: stop.CmdID})
		if ok, _ := b.m.Wants(b.s, stop, b.at); ok {
			t.Fatal("answered stop wanted")
		}
	})
	t.Run("complete while stopping, once", func(t *testing.T) {
		b := sessionIn(t, Stopping)
		complete := lastEffect(t, b.ended(3000, time.Minute), EffCompleteOrder)
		if ok, _ := b.m.Wants(b.s, complete, b.at); !ok {
			t.Fatal("complete not wanted")
		}
		b.completed()
		if ok, _ := b.m.Wants(b.s, complete, b.at); ok {
			t.Fatal("complete wanted after completion")
		}
	})
	t.Run("register and debit only the current deduction", func(t *testing.T) {
		b := sessionIn(t, Completed)
		reg := Effect{Kind: EffRegisterDeduction, Deduction: 1}
		if ok, _ := b.m.Wants(b.s, reg, b.at); !ok {
			t.Fatal("registration 1 not wanted")
		}
		if ok, _ := b.m.Wants(b.s, Effect{Kind: EffRegisterDeduction, Deduction: 2}, b.at); ok {
			t.Fatal("registration 2 wanted")
		}
		debit := lastEffect(t, b.registered(), EffDebit)
		if ok, _ := b.m.Wants(b.s, reg, b.at); ok {
			t.Fatal("registration wanted once registered")
		}
		if ok, _ := b.m.Wants(b.s, debit, b.at); !ok {
			t.Fatal("debit not wanted")
		}
		b.apply(Event{Type: EvDebitFailed, By: ByPayScore, Deduction: 1})
		if ok, _ := b.m.Wants(b.s, debit, b.at); ok {
			t.Fatal("debit of a failed deduction wanted")
		}
	})
	t.Run("refund while pending", func(t *testing.T) {
		b := sessionIn(t, Paid)
		refund := lastEffect(t, b.apply(Event{Type: EvRefund, By: Operator("ops"), AmountFen: 1}), EffRefund)
		if ok, _ := b.m.Wants(b.s, refund, b.at); !ok {
			t.Fatal("pending refund not wanted")
		}
		b.apply(Event{Type: EvRefundSucceeded, By: ByPayScore, RefundID: refund.RefundID})
		if ok, _ := b.m.Wants(b.s, refund, b.at); ok {
			t.Fatal("succeeded refund wanted")
		}
	})
	t.Run("cancel, query, timers", func(t *testing.T) {
		b := newBuilder(t)
		poll, _ := b.s.TimerByKind(TimerPoll)
		if ok, _ := b.m.Wants(b.s, Effect{Kind: EffArmTimer, ID: poll.ID}, b.at); !ok {
			t.Fatal("armed timer not wanted")
		}
		if ok, _ := b.m.Wants(b.s, Effect{Kind: EffCancelOrder}, b.at); ok {
			t.Fatal("cancel wanted in created")
		}
		cancel := lastEffect(t, b.apply(Event{Type: EvCancel, By: ByApp}), EffCancelOrder)
		if ok, _ := b.m.Wants(b.s, cancel, b.at); !ok {
			t.Fatal("cancel not wanted in cancelled")
		}
		for _, k := range []EffectKind{EffQueryOrder, EffDisarmTimer} {
			if ok, _ := b.m.Wants(b.s, Effect{Kind: k}, b.at); ok {
				t.Fatalf("%s wanted in cancelled", k)
			}
		}
		if ok, _ := b.m.Wants(b.s, Effect{Kind: EffArmTimer, ID: poll.ID}, b.at); ok {
			t.Fatal("disarmed timer wanted")
		}
	})
}

// TestUnanswered: the commands to send again are the unanswered start (in
// time) and the latest unanswered stop, with their own cmd_ids.
func TestUnanswered(t *testing.T) {
	b := sessionIn(t, UserConfirmed)
	got := b.m.Unanswered(b.s, b.at)
	if len(got) != 1 || got[0].Kind != EffSendStart || got[0].CmdID != "s1-start" || !got[0].Deadline.Equal(b.s.StartSentAt.Add(time.Minute)) {
		t.Fatalf("unanswered %+v", got)
	}
	if got := b.m.Unanswered(b.s, b.at.Add(2*time.Minute)); len(got) != 0 {
		t.Fatalf("a start past its deadline is to be sent again: %+v", got)
	}
	b.apply(Event{Type: EvStartAccepted, By: ByCharger, CmdID: "s1-start"})
	if got := b.m.Unanswered(b.s, b.at); len(got) != 0 {
		t.Fatalf("after the answer: %+v", got)
	}
	b.started(100)
	b.stop()
	got = b.m.Unanswered(b.s, b.at)
	if len(got) != 1 || got[0].Kind != EffSendStop || got[0].CmdID != "s1-stop-1" {
		t.Fatalf("unanswered stop %+v", got)
	}
	b.apply(Event{Type: EvStopRejected, By: ByCharger, CmdID: "s1-stop-1", Reason: "bad_request"})
	if got := b.m.Unanswered(b.s, b.at); len(got) != 0 || b.s.StopsAnswered != 1 {
		t.Fatalf("after the answer: %+v", got)
	}
	if id, stop, ok := CommandSession("s1-stop-12"); !ok || !stop || id != "s1" {
		t.Fatal("stop cmd id not parsed")
	}
	if id, stop, ok := CommandSession("s1-start"); !ok || stop || id != "s1" {
		t.Fatal("start cmd id not parsed")
	}
	if _, _, ok := CommandSession("whatever"); ok {
		t.Fatal("a foreign cmd id parsed")
	}
}
