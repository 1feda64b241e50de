package fsm

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

func TestHappyPathEffects(t *testing.T) {
	b := newBuilder(t)
	if _, ok := b.s.TimerByKind(TimerConfirm); !ok {
		t.Fatal("create did not arm the confirm timeout")
	}
	if _, ok := b.s.TimerByKind(TimerPoll); !ok {
		t.Fatal("create did not arm the order poll")
	}
	if b.s.MaxEnergyWh != flatTariff().MaxEnergyWh(5000) || b.s.MaxEnergyWh <= 0 {
		t.Fatalf("max energy = %d", b.s.MaxEnergyWh)
	}

	r := b.confirm()
	start := r.Effects[slices.IndexFunc(r.Effects, func(e Effect) bool { return e.Kind == EffSendStart })]
	if start.CmdID != "s1-start" || start.MaxEnergyWh != b.s.MaxEnergyWh || !start.Deadline.Equal(b.at.Add(60*time.Second)) ||
		start.ChargerID != "CP1" || start.Connector != 1 {
		t.Fatalf("start effect = %+v", start)
	}
	if _, ok := b.s.TimerByKind(TimerConfirm); ok {
		t.Fatal("confirm timeout still armed after confirm")
	}

	b.started(10_000)
	b.meter(1, 12_000, 10*time.Minute)
	b.meter(2, 14_000, 10*time.Minute)
	stopAt := b.tick(time.Minute)
	r = b.apply(Event{Type: EvStop, At: stopAt, By: ByApp})
	if !slices.Equal(effectKinds(r.Effects), []EffectKind{EffSendStop}) || b.s.StopBy != ByApp {
		t.Fatalf("stop effects = %v", effectKinds(r.Effects))
	}
	endedAt := b.tick(20 * time.Second)
	callAt := b.tick(5 * time.Second)
	r = b.apply(Event{Type: EvEnded, At: callAt, By: ByCharger, ChargerTime: endedAt, MeterWh: 15_000, Reason: "remote"})
	if b.s.State != Stopping || !b.s.EndKnown {
		t.Fatalf("after ended: %s end known %v", b.s.State, b.s.EndKnown)
	}
	complete := r.Effects[slices.IndexFunc(r.Effects, func(e Effect) bool { return e.Kind == EffCompleteOrder })]
	// 5 kWh × (1.00 + 0.50) = 7.50 yuan.
	if b.s.EnergyWh != 5000 || complete.AmountFen != 750 || b.s.AmountFen != 750 {
		t.Fatalf("energy %d amount %d effect %d", b.s.EnergyWh, b.s.AmountFen, complete.AmountFen)
	}
	if !complete.EndTime.Equal(endedAt) || !b.s.EndTime.Equal(endedAt) {
		t.Fatalf("end_time = %s, want the measured stop %s", complete.EndTime, endedAt)
	}
	if len(complete.Lines) != 2 || complete.Lines[0].Name != money.LineEnergy || complete.Lines[0].AmountFen+complete.Lines[1].AmountFen != 750 {
		t.Fatalf("lines = %+v", complete.Lines)
	}
	if _, ok := b.s.TimerByKind(TimerStop); ok {
		t.Fatal("stop timeout still armed after ended")
	}

	r = b.completed()
	if b.s.State != Completed || !slices.Equal(effectKinds(r.Effects), []EffectKind{EffRegisterDeduction}) || r.Effects[len(r.Effects)-1].Deduction != 1 {
		t.Fatalf("completed: %s %v", b.s.State, effectKinds(r.Effects))
	}
	r = b.registered()
	if b.s.State != Deducting || !slices.Equal(effectKinds(r.Effects), []EffectKind{EffDebit}) {
		t.Fatalf("registered: %s %v", b.s.State, effectKinds(r.Effects))
	}
	r = b.paid()
	if b.s.State != Paid || b.s.Payment.PaidFen != 750 || len(b.s.Timers) != 0 {
		t.Fatalf("paid: %s %d timers %v", b.s.State, b.s.Payment.PaidFen, b.s.Timers)
	}
	// Invariant 6: a second notification changes nothing.
	again, err := b.m.Apply(b.s, Event{Type: EvPaid, At: b.tick(time.Second), By: ByPayScore, AmountFen: 750})
	if err != nil || again.Changed {
		t.Fatalf("second paid: %v changed=%v", err, again.Changed)
	}
}

// Invariant 1: only a verified Pay Score source may confirm.
func TestConfirmGuard(t *testing.T) {
	for _, by := range []Source{ByApp, ByCharger, ByTimer, Operator("ops")} {
		b := newBuilder(t)
		_, err := b.m.Apply(b.s, Event{Type: EvConfirm, At: b.tick(time.Second), By: by})
		if !isRefused(err) {
			t.Errorf("confirm by %s: err = %v, want refused", by, err)
		}
	}
}

func TestPaidGuard(t *testing.T) {
	b := sessionIn(t, Deducting)
	_, err := b.m.Apply(b.s, Event{Type: EvPaid, At: b.tick(time.Second), By: ByApp})
	if !isRefused(err) {
		t.Fatalf("paid by app: %v", err)
	}
}

func TestTimers(t *testing.T) {
	t.Run("confirm timeout cancels and cancels the order", func(t *testing.T) {
		b := newBuilder(t)
		r := b.fireTimer(TimerConfirm)
		if b.s.State != Cancelled || b.s.CancelReason != ReasonConfirmTimeout || !slices.Equal(effectKinds(r.Effects), []EffectKind{EffCancelOrder}) {
			t.Fatalf("%s %s %v", b.s.State, b.s.CancelReason, effectKinds(r.Effects))
		}
		if len(b.s.Timers) != 0 {
			t.Fatalf("timers left: %v", b.s.Timers)
		}
	})
	t.Run("start timeout cancels, stops and cancels the order", func(t *testing.T) {
		b := sessionIn(t, UserConfirmed)
		r := b.fireTimer(TimerStart)
		if b.s.State != Cancelled || b.s.CancelReason != ReasonChargerNeverStarted ||
			!slices.Equal(effectKinds(r.Effects), []EffectKind{EffCancelOrder, EffSendStop}) {
			t.Fatalf("%s %s %v", b.s.State, b.s.CancelReason, effectKinds(r.Effects))
		}
		// A start that arrives after all: stopped again.
		r = b.started(100)
		if !hasEffect(r.Effects, EffSendStop) || b.s.State != Cancelled || len(r.Anomalies) == 0 {
			t.Fatalf("late start: %v %s", effectKinds(r.Effects), b.s.State)
		}
	})
	t.Run("stop timeout completes with the last register", func(t *testing.T) {
		b := sessionIn(t, Stopping) // 1000 → 2000 Wh measured
		r := b.fireTimer(TimerStop)
		if b.s.State != Stopping || !b.s.EndKnown || !b.s.HasFlag(FlagStopUnconfirmed) || b.s.EnergyWh != 1000 ||
			!slices.Equal(effectKinds(r.Effects), []EffectKind{EffCompleteOrder}) {
			t.Fatalf("%s end=%v flags=%v energy=%d %v", b.s.State, b.s.EndKnown, b.s.Flags, b.s.EnergyWh, effectKinds(r.Effects))
		}
		if !b.s.EndTime.Equal(b.s.LastMeterAt) {
			t.Fatalf("end_time %s, want last sample %s", b.s.EndTime, b.s.LastMeterAt)
		}
		// The charger's real `ended` arrives later: the bill does not change.
		r = b.ended(9000, time.Minute)
		if r.Changed || b.s.EnergyWh != 1000 {
			t.Fatalf("late ended changed the bill: %d", b.s.EnergyWh)
		}
	})
	t.Run("offline grace ends the session with last register and flag", func(t *testing.T) {
		b := sessionIn(t, Charging)
		b.meter(1, 4000, time.Minute)
		lastAt := b.at
		b.apply(Event{Type: EvChargerOffline, By: ByCharger})
		if !b.s.HasFlag(FlagChargerOffline) {
			t.Fatal("no charger_offline flag")
		}
		r := b.fireTimer(TimerOffline)
		if b.s.State != Stopping || !b.s.EndKnown || b.s.EnergyWh != 3000 || !b.s.EndedAt.Equal(lastAt) ||
			!slices.Equal(effectKinds(r.Effects), []EffectKind{EffSendStop, EffCompleteOrder}) {
			t.Fatalf("%s energy=%d ended=%s %v", b.s.State, b.s.EnergyWh, b.s.EndedAt, effectKinds(r.Effects))
		}
	})
	t.Run("back online disarms the grace", func(t *testing.T) {
		b := sessionIn(t, Charging)
		b.apply(Event{Type: EvChargerOffline, By: ByCharger})
		tm, _ := b.s.TimerByKind(TimerOffline)
		b.apply(Event{Type: EvChargerOnline, By: ByCharger})
		if b.s.HasFlag(FlagChargerOffline) {
			t.Fatal("flag kept")
		}
		r := b.apply(Event{Type: EvTimer, By: ByTimer, TimerID: tm.ID})
		if r.Changed || b.s.State != Charging {
			t.Fatal("a disarmed timer fired")
		}
	})
	t.Run("a rebooted charger keeps the grace until it meters again", func(t *testing.T) {
		b := sessionIn(t, Charging)
		b.apply(Event{Type: EvChargerOffline, By: ByCharger})
		r := b.apply(Event{Type: EvChargerOnline, By: ByCharger, Reason: ReasonReboot})
		if r.Changed || !b.s.HasFlag(FlagChargerOffline) {
			t.Fatal("a reboot cleared the offline grace")
		}
		b.meter(1, 1500, time.Second)
		if b.s.HasFlag(FlagChargerOffline) {
			t.Fatal("a meter sample did not clear charger_offline")
		}
		if _, ok := b.s.TimerByKind(TimerOffline); ok {
			t.Fatal("grace still armed")
		}
		// Rebooted and silent: the grace ends the session.
		b = sessionIn(t, Charging)
		b.meter(1, 3000, time.Minute)
		b.apply(Event{Type: EvChargerOffline, By: ByCharger})
		b.apply(Event{Type: EvChargerOnline, By: ByCharger, Reason: ReasonReboot})
		b.fireTimer(TimerOffline)
		if b.s.State != Stopping || !b.s.EndKnown || b.s.EnergyWh != 2000 {
			t.Fatalf("%s end=%v energy=%d", b.s.State, b.s.EndKnown, b.s.EnergyWh)
		}
	})
	t.Run("poll queries the order and re-arms", func(t *testing.T) {
		b := newBuilder(t)
		r := b.fireTimer(TimerPoll)
		if !slices.Equal(effectKinds(r.Effects), []EffectKind{EffQueryOrder}) {
			t.Fatalf("%v", effectKinds(r.Effects))
		}
		if _, ok := b.s.TimerByKind(TimerPoll); !ok {
			t.Fatal("poll not re-armed")
		}
	})
}

func TestDebitRetryBackoffAndOverdue(t *testing.T) {
	b := sessionIn(t, Deducting)
	cfg := b.m.Config()
	for i := 1; i <= 8; i++ {
		failAt := b.tick(time.Second)
		r := b.apply(Event{Type: EvDebitFailed, At: failAt, By: ByPayScore, Deduction: b.s.Payment.Deductions, Reason: "balance"})
		if b.s.State != Completed {
			t.Fatalf("attempt %d: %s", i, b.s.State)
		}
		tm, ok := b.s.TimerByKind(TimerDebitRetry)
		want := cfg.DebitRetry[min(i, len(cfg.DebitRetry))-1]
		if !ok || !tm.DueAt.Equal(failAt.Add(want)) {
			t.Fatalf("attempt %d: retry timer %+v, want after %s", i, tm, want)
		}
		if got := b.s.HasFlag(FlagPaymentOverdue); got != (i >= 7) {
			t.Fatalf("attempt %d: overdue flag %v", i, got)
		}
		_ = r
		r = b.fireTimer(TimerDebitRetry)
		reg := r.Effects[slices.IndexFunc(r.Effects, func(e Effect) bool { return e.Kind == EffRegisterDeduction })]
		if reg.Deduction != i+1 {
			t.Fatalf("new registration attempt %d, want %d", reg.Deduction, i+1)
		}
		b.registered()
	}
	// The user's own payment still completes an overdue session: the
	// machine tells it from our debit by its hf_seq_id.
	b.apply(Event{Type: EvDebitSent, By: ByPayScore, Deduction: b.s.Payment.Deductions, HfSeqID: "HF9", ReqDate: "20261130"})
	b.apply(Event{Type: EvPaid, By: ByPayScore, HfSeqID: "U1", ReqDate: "20261130"})
	if b.s.State != Paid || !b.s.Payment.ByUser || b.s.Payment.HfSeqID != "U1" {
		t.Fatalf("%s %+v", b.s.State, b.s.Payment)
	}
}

// TestPaidByUser: the machine decides whether a payment was the user's own
// from the record it applies to, never from what the caller read before.
func TestPaidByUser(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  State
		debit  string // our debit's hf_seq_id, when known
		paid   string // the payment's
		byUser bool
	}{
		{"our debit, ids match", Deducting, "HF1", "HF1", false},
		{"our debit, its reply lost", Deducting, "", "HF1", false},
		{"our debit, the payment names none", Deducting, "HF1", "", false},
		{"another payment while deducting", Deducting, "HF1", "U1", true},
		{"no debit in flight", Completed, "", "U1", true},
		{"no debit in flight, query", Completed, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := sessionIn(t, tc.state)
			if tc.debit != "" {
				b.apply(Event{Type: EvDebitSent, By: ByPayScore, Deduction: b.s.Payment.Deductions, HfSeqID: tc.debit, ReqDate: "20261126"})
			}
			b.apply(Event{Type: EvPaid, By: ByPayScore, HfSeqID: tc.paid, ReqDate: "20261126"})
			if b.s.State != Paid || b.s.Payment.ByUser != tc.byUser {
				t.Fatalf("%s by user %v, want %v", b.s.State, b.s.Payment.ByUser, tc.byUser)
			}
		})
	}
}

func TestDeductNowOnlyWhenIdle(t *testing.T) {
	b := sessionIn(t, Deducting)
	b.apply(Event{Type: EvDebitFailed, By: ByPayScore, Deduction: 1})
	r := b.apply(Event{Type: EvDeductNow, By: Operator("ops")})
	if !hasEffect(r.Effects, EffRegisterDeduction) || b.s.Payment.Deductions != 2 {
		t.Fatalf("deduct now: %v", effectKinds(r.Effects))
	}
	if _, ok := b.s.TimerByKind(TimerDebitRetry); ok {
		t.Fatal("retry timer kept")
	}
	// Attempt 2 is in flight: a second deduct now would make two live registrations.
	if _, err := b.m.Apply(b.s, Event{Type: EvDeductNow, At: b.tick(time.Second), By: Operator("ops")}); !isRefused(err) {
		t.Fatalf("second deduct now: %v", err)
	}
}

func TestClockSkew(t *testing.T) {
	b := sessionIn(t, UserConfirmed)
	at := b.tick(time.Second)
	r := b.apply(Event{Type: EvStarted, At: at, By: ByCharger, ChargerTime: at.Add(time.Hour), MeterWh: 0})
	if !b.s.StartedAt.Equal(at) || !b.s.HasFlag(FlagClockSkew) || len(r.Anomalies) == 0 {
		t.Fatalf("ahead: started %s flags %v", b.s.StartedAt, b.s.Flags)
	}
	b = sessionIn(t, UserConfirmed)
	at = b.tick(time.Second)
	b.apply(Event{Type: EvStarted, At: at, By: ByCharger, ChargerTime: at.Add(-48 * time.Hour), MeterWh: 0})
	if !b.s.StartedAt.Equal(at) || !b.s.HasFlag(FlagClockSkew) {
		t.Fatalf("behind: started %s flags %v", b.s.StartedAt, b.s.Flags)
	}
	// A credible, slightly late clock is kept as measured.
	b = sessionIn(t, UserConfirmed)
	at = b.tick(10 * time.Second)
	b.apply(Event{Type: EvStarted, At: at, By: ByCharger, ChargerTime: at.Add(-3 * time.Second), MeterWh: 0})
	if !b.s.StartedAt.Equal(at.Add(-3*time.Second)) || b.s.HasFlag(FlagClockSkew) {
		t.Fatalf("credible: started %s flags %v", b.s.StartedAt, b.s.Flags)
	}
}

func TestEndTimeClamp(t *testing.T) {
	b := sessionIn(t, Charging)
	b.meter(1, 5000, time.Minute)
	at := b.tick(time.Second)
	// The charger says it stopped 3 minutes in the future (credible within
	// the 5-minute tolerance, but never later than the call).
	r := b.apply(Event{Type: EvEnded, At: at, By: ByCharger, ChargerTime: at.Add(3 * time.Minute), MeterWh: 5000})
	eff := r.Effects[slices.IndexFunc(r.Effects, func(e Effect) bool { return e.Kind == EffCompleteOrder })]
	if eff.EndTime.After(at) || !eff.EndTime.After(b.s.StartedAt) {
		t.Fatalf("end_time %s not in (start %s, call %s]", eff.EndTime, b.s.StartedAt, at)
	}
	// A session that lasted under a second still ends after it started.
	b = sessionIn(t, UserConfirmed)
	at = b.tick(time.Second)
	b.apply(Event{Type: EvStarted, At: at, By: ByCharger, ChargerTime: at, MeterWh: 0})
	r = b.apply(Event{Type: EvEnded, At: at.Add(10 * time.Millisecond), By: ByCharger, ChargerTime: at, MeterWh: 10})
	if !b.s.EndTime.After(b.s.StartedAt) {
		t.Fatalf("end_time %s not after start %s", b.s.EndTime, b.s.StartedAt)
	}
}

func TestMeterAnomalies(t *testing.T) {
	b := sessionIn(t, Charging) // start register 1000
	b.meter(1, 3000, time.Minute)
	r := b.meter(2, 500, time.Minute) // reset / backwards
	if !b.s.HasFlag(FlagMeterAnomaly) || len(r.Anomalies) == 0 || b.s.LastMeterWh != 3000 {
		t.Fatalf("backwards: flags %v last %d", b.s.Flags, b.s.LastMeterWh)
	}
	// A duplicate and a late sample do nothing.
	if r := b.meter(2, 4000, time.Second); r.Changed {
		t.Fatal("duplicate seq applied")
	}
	if r := b.meter(1, 4000, time.Second); r.Changed {
		t.Fatal("late seq applied")
	}
	// The end register below the samples: bill what the samples measured.
	b.ended(700, time.Minute)
	if b.s.EnergyWh != 2000 || b.s.State != Stopping {
		t.Fatalf("energy %d state %s", b.s.EnergyWh, b.s.State)
	}
}

func TestEndedBeforeStarted(t *testing.T) {
	b := sessionIn(t, UserConfirmed)
	at := b.tick(time.Minute)
	r := b.apply(Event{Type: EvEnded, At: at, By: ByCharger, ChargerTime: at, MeterWh: 6000, Reason: "local"})
	if b.s.State != UserConfirmed || b.s.PendingEnd == nil || len(r.Anomalies) == 0 {
		t.Fatalf("pending end: %s %+v", b.s.State, b.s.PendingEnd)
	}
	startAt := at.Add(-30 * time.Second)
	r = b.apply(Event{Type: EvStarted, At: at.Add(time.Second), By: ByCharger, ChargerTime: startAt, MeterWh: 1000})
	if b.s.State != Stopping || !b.s.EndKnown || b.s.EnergyWh != 5000 || len(r.History) != 2 || !hasEffect(r.Effects, EffCompleteOrder) {
		t.Fatalf("%s end=%v energy=%d history=%v", b.s.State, b.s.EndKnown, b.s.EnergyWh, r.History)
	}
	if !b.s.EndTime.Equal(at) {
		t.Fatalf("end_time %s, want %s", b.s.EndTime, at)
	}
}

func TestSpendingCap(t *testing.T) {
	b := sessionIn(t, Charging) // cap 50.00 yuan, 1.50 yuan/kWh → stop at 33.34 kWh
	r := b.meter(1, 1000+34_000, time.Hour)
	if b.s.State != Stopping || !hasEffect(r.Effects, EffSendStop) {
		t.Fatalf("cap: %s %v", b.s.State, effectKinds(r.Effects))
	}
	// The charger overshoots anyway: the bill is the cap, flagged.
	b.ended(1000+40_000, time.Minute)
	if b.s.AmountFen != 5000 || !b.s.HasFlag(FlagAmountCapped) || b.s.Lines[0].AmountFen+b.s.Lines[1].AmountFen != 5000 {
		t.Fatalf("amount %d flags %v lines %+v", b.s.AmountFen, b.s.Flags, b.s.Lines)
	}
}

func TestNoEnergyCancels(t *testing.T) {
	b := sessionIn(t, Charging)
	r := b.ended(1000, time.Minute)
	if b.s.State != Cancelled || b.s.CancelReason != ReasonNoEnergy || !slices.Equal(effectKinds(r.Effects), []EffectKind{EffCancelOrder}) {
		t.Fatalf("%s %s %v", b.s.State, b.s.CancelReason, effectKinds(r.Effects))
	}
}

func TestClose(t *testing.T) {
	b := sessionIn(t, Charging)
	b.meter(1, 2500, time.Minute)
	r := b.apply(Event{Type: EvClose, By: Operator("ops"), Reason: "cable stuck"})
	if b.s.State != Stopping || !b.s.HasFlag(FlagClosedByOperator) || b.s.EnergyWh != 1500 || b.s.CancelReason != "" ||
		!slices.Equal(effectKinds(r.Effects), []EffectKind{EffSendStop, EffCompleteOrder}) {
		t.Fatalf("%s flags %v energy %d %v", b.s.State, b.s.Flags, b.s.EnergyWh, effectKinds(r.Effects))
	}
	if r.History[0].By != "operator:ops" {
		t.Fatalf("history by %q", r.History[0].By)
	}
	if _, err := b.m.Apply(b.s, Event{Type: EvClose, At: b.tick(time.Second), By: ByApp}); !isRefused(err) {
		t.Fatalf("close by app: %v", err)
	}
}

func TestRefunds(t *testing.T) {
	b := sessionIn(t, Paid) // 3000−1000 Wh → 3.00 yuan
	paid := b.s.Payment.PaidFen
	r := b.apply(Event{Type: EvRefund, By: Operator("ops"), Key: "k1", AmountFen: 100, Reason: "slow"})
	eff := r.Effects[0]
	if !hasEffect(r.Effects, EffRefund) || eff.OrgHfSeqID != "HF1" || eff.OrgReqDate != "20261126" || eff.RefundNo != 1 || eff.RefundID != "r1" {
		t.Fatalf("refund effect %+v", r.Effects)
	}
	if got := b.s.Refunds; len(got) != 1 || got[0].ID != "r1" || got[0].No != 1 || got[0].Key != "k1" || got[0].Status != RefundPending {
		t.Fatalf("refunds %+v", got)
	}
	// The same key and request: the same refund, nothing more.
	if again, err := b.m.Apply(b.s, Event{Type: EvRefund, At: b.tick(time.Second), By: Operator("ops"), Key: "k1", AmountFen: 100, Reason: "slow"}); err != nil || again.Changed {
		t.Fatalf("repeated key: %v changed=%v", err, again.Changed)
	}
	// The same key for another amount or reason is refused (a 409), as a
	// session creation's key with another body is.
	for _, e := range []Event{{AmountFen: 7, Reason: "slow"}, {AmountFen: 100, Reason: "other"}} {
		e.Type, e.At, e.By, e.Key = EvRefund, b.tick(time.Second), Operator("ops"), "k1"
		if _, err := b.m.Apply(b.s, e); !isRefused(err) || !strings.Contains(err.Error(), "r1") {
			t.Fatalf("key k1 reused for %d fen %q: %v", e.AmountFen, e.Reason, err)
		}
	}
	if _, err := b.m.Apply(b.s, Event{Type: EvRefund, At: b.tick(time.Second), By: Operator("ops"), Key: "k2", AmountFen: paid}); !isRefused(err) {
		t.Fatalf("over-refund: %v", err)
	}
	b.apply(Event{Type: EvRefundSucceeded, By: ByPayScore, RefundID: "r1"})
	if b.s.State != Paid || b.s.RefundsSucceededFen() != 100 {
		t.Fatal("partial refund ended the session")
	}
	// Without a key every request is a refund of its own; each gets the
	// next number.
	r = b.apply(Event{Type: EvRefund, By: Operator("ops"), AmountFen: paid - 100})
	if r.Effects[0].RefundID != "r2" || r.Effects[0].RefundNo != 2 {
		t.Fatalf("second refund %+v", r.Effects[0])
	}
	b.apply(Event{Type: EvRefundFailed, By: ByPayScore, RefundID: "r2"})
	r = b.apply(Event{Type: EvRefund, By: Operator("ops"), AmountFen: paid - 100})
	if r.Effects[0].RefundID != "r3" || b.s.RefundableFen() != 0 {
		t.Fatalf("third refund %+v, refundable %d", r.Effects[0], b.s.RefundableFen())
	}
	b.apply(Event{Type: EvRefundSucceeded, By: ByPayScore, RefundID: "r3"})
	if b.s.State != Refunded {
		t.Fatalf("full refund: %s", b.s.State)
	}
	// A retried key after the session was refunded is still the same refund.
	if again, err := b.m.Apply(b.s, Event{Type: EvRefund, At: b.tick(time.Second), By: Operator("ops"), Key: "k1", AmountFen: 100, Reason: "slow"}); err != nil || again.Changed {
		t.Fatalf("repeated key after refunded: %v changed=%v", err, again.Changed)
	}
}

// TestRefundNumbersOfOldRecords: a record written before refunds kept their
// number still gives each its position.
func TestRefundNumbersOfOldRecords(t *testing.T) {
	var s Session
	if err := json.Unmarshal([]byte(`{"id":"s1","state":"paid","refunds":[{"id":"r1","amount_fen":1,"status":"failed"},{"id":"r2","amount_fen":2,"status":"pending","key":"k"}]}`), &s); err != nil {
		t.Fatal(err)
	}
	if r, ok := s.RefundByID("r2"); !ok || r.No != 2 {
		t.Fatalf("r2 = %+v", r)
	}
	if r, ok := s.RefundByKey("k"); !ok || r.ID != "r2" || r.No != 2 {
		t.Fatalf("by key = %+v", r)
	}
}

func TestApplyIsDeterministicAndSurvivesJSON(t *testing.T) {
	b := sessionIn(t, Charging)
	e := Event{Type: EvMeter, At: b.tick(time.Minute), By: ByCharger, ChargerTime: b.at, MeterWh: 4000, Seq: 1}
	r1, err1 := b.m.Apply(b.s, e)
	raw, err := json.Marshal(b.s)
	if err != nil {
		t.Fatal(err)
	}
	var restored Session
	if err := json.Unmarshal(raw, &restored); err != nil {
		t.Fatal(err)
	}
	r2, err2 := b.m.Apply(restored, e)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	j1, _ := json.Marshal(r1)
	j2, _ := json.Marshal(r2)
	if string(j1) != string(j2) {
		t.Fatalf("restored session gave another result:\n%s\n%s", j1, j2)
	}
}

func TestEffectIDsAreDeterministicAndUnique(t *testing.T) {
	b := sessionIn(t, Paid)
	seen := map[string]bool{}
	for _, tm := range b.s.Timers {
		seen[tm.ID] = true
	}
	b2 := sessionIn(t, Paid)
	if !reflect.DeepEqual(b.s, b2.s) {
		t.Fatal("the same events gave different sessions")
	}
}

func TestEventValidate(t *testing.T) {
	bad := []Event{
		{},
		{Type: "nope", At: t0, By: ByApp},
		{Type: EvStop, By: ByApp},
		{Type: EvStop, At: t0},
		{Type: EvTimer, At: t0, By: ByTimer},
		{Type: EvRefund, At: t0, By: Operator("x"), RefundID: "r"}, // no amount
		{Type: EvMeter, At: t0, By: ByCharger, MeterWh: -1},
		{Type: EvCreate, At: t0, By: ByApp},
	}
	for _, e := range bad {
		if err := e.Validate(); !errors.Is(err, ErrBadEvent) {
			t.Errorf("%+v: err = %v", e, err)
		}
	}
	m := testMachine(t)
	if _, err := m.NewSession(Event{Type: EvStop, At: t0, By: ByApp}); !errors.Is(err, ErrBadEvent) {
		t.Errorf("NewSession(stop) = %v", err)
	}
	bt := createEvent(t0)
	bt.Create.Tariff.Periods = bt.Create.Tariff.Periods[:0]
	if _, err := m.NewSession(bt); !errors.Is(err, ErrBadEvent) {
		t.Errorf("NewSession with bad tariff = %v", err)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	seed, _ := json.Marshal(Event{Type: EvMeter, At: t0, By: ByCharger, MeterWh: 5, Seq: 1})
	f.Add(seed)
	f.Add([]byte(`{"type":"timer","at":"2026-11-26T10:00:00+08:00","by":"timer","timer_id":"s1/3"}`))
	f.Add([]byte(`{"type":"create","at":"2026-11-26T10:00:00+08:00","by":"app","create":{}}`))
	f.Add([]byte(`not json`))
	m := testMachine(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := DecodeEvent(raw)
		if err != nil {
			if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("error not ErrBadEvent: %v", err)
			}
			return
		}
		// A decoded event never panics the machine, whatever the state.
		for _, st := range []State{Created, Charging, Deducting} {
			b := sessionIn(t, st)
			if e.Type == EvCreate {
				_, _ = m.NewSession(e)
				continue
			}
			r, err := m.Apply(b.s, e)
			if err == nil && !r.Changed && !reflect.DeepEqual(r.Session, b.s) {
				t.Fatal("no-op changed the session")
			}
		}
	})
}
