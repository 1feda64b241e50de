package fsm

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"pgregory.net/rapid"
)

// world drives one session through random events — including duplicates,
// reordering, events from the wrong source and "restore from the persisted
// state" steps — and checks the six invariants of docs/contract.md §1 after every
// step, from the effects the machine asked for.
type world struct {
	m   *Machine
	s   Session
	now time.Time
	log []Event // every event tried, for duplicates and reordering

	register int64 // the charger's meter register
	seq      int64

	starts    int                  // send_start effects
	completes int                  // complete_order effects
	registers int                  // register_deduction effects
	failures  int                  // debit failures that took effect
	debits    map[int]int          // debit effects per attempt
	paid      int                  // transitions into paid
	refunded  map[string]money.Fen // refund effects by id
}

func newWorld(t *rapid.T) *world {
	m, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tariffs := []money.Tariff{flatTariff(), money.DefaultTariff()}
	tariff := tariffs[rapid.IntRange(0, 1).Draw(t, "tariff")]
	start := t0.Add(time.Duration(rapid.IntRange(0, 48*60).Draw(t, "startMinute")) * time.Minute)
	e := createEvent(start)
	e.Create.Tariff = tariff
	e.Create.MaxAmountFen = money.Fen(rapid.Int64Range(1, 20_000).Draw(t, "cap"))
	r, err := m.NewSession(e)
	if err != nil {
		t.Fatal(err)
	}
	return &world{m: m, s: r.Session, now: start, register: rapid.Int64Range(0, 1_000_000).Draw(t, "register0"),
		debits: map[int]int{}, refunded: map[string]money.Fen{}}
}

func (w *world) advance(t *rapid.T) time.Time {
	w.now = w.now.Add(time.Duration(rapid.IntRange(0, 20*60).Draw(t, "dt")) * time.Second)
	return w.now
}

// chargerTime is the charger's clock: usually right, sometimes skewed.
func (w *world) chargerTime(t *rapid.T) time.Time {
	switch rapid.IntRange(0, 9).Draw(t, "clock") {
	case 0:
		return w.now.Add(time.Duration(rapid.IntRange(1, 600).Draw(t, "ahead")) * time.Minute)
	case 1:
		return w.now.Add(-time.Duration(rapid.IntRange(1, 3000).Draw(t, "behind")) * time.Minute)
	case 2:
		return time.Time{}
	}
	return w.now.Add(-time.Duration(rapid.IntRange(0, 30).Draw(t, "lag")) * time.Second)
}

func anySource(t *rapid.T, preferred Source) Source {
	if rapid.IntRange(0, 4).Draw(t, "wrongSource") == 0 {
		return rapid.SampledFrom([]Source{ByApp, ByCharger, ByPayScore, ByTimer, Operator("ops")}).Draw(t, "source")
	}
	return preferred
}

// apply runs e and checks the invariants that concern this one step.
func (w *world) apply(t *rapid.T, e Event) {
	w.log = append(w.log, e)
	before := w.s
	r, err := w.m.Apply(before, e)
	if err != nil {
		if !isRefused(err) {
			t.Fatalf("%s in %s: unexpected error %v", e.Type, before.State, err)
		}
		return
	}
	if !r.Changed {
		if !reflect.DeepEqual(r.Session, before) {
			t.Fatalf("%s in %s: a no-op changed the session", e.Type, before.State)
		}
		return
	}
	s := r.Session
	for _, eff := range r.Effects {
		switch eff.Kind {
		case EffSendStart:
			if eff.Reason == ReasonResend {
				// A repeat of the session's one start, never a second.
				if before.StartCmdID == "" || eff.CmdID != before.StartCmdID || before.State != UserConfirmed {
					t.Fatalf("invariant 1: start %q re-sent in %s (the session's is %q)", eff.CmdID, before.State, before.StartCmdID)
				}
				continue
			}
			// Invariant 1: a start only from a verified USER_CONFIRM.
			w.starts++
			if e.Type != EvConfirm || e.By != ByPayScore || before.State != Created || w.starts > 1 {
				t.Fatalf("invariant 1: start asked by %s/%s in %s (starts=%d)", e.Type, e.By, before.State, w.starts)
			}
		case EffCompleteOrder:
			w.completes++
			w.checkComplete(t, before, e, s, eff)
		case EffRegisterDeduction:
			// Invariant 5: at most one live registration.
			w.registers++
			if before.Payment.Deductions != before.Payment.Failures || before.Payment.Registered {
				t.Fatalf("invariant 5: registration %d asked while attempt %d is live (failures %d)", eff.Deduction, before.Payment.Deductions, before.Payment.Failures)
			}
		case EffDebit:
			w.debits[eff.Deduction]++
			if w.debits[eff.Deduction] > 1 {
				t.Fatalf("invariant 5: registration %d debited twice", eff.Deduction)
			}
		case EffRefund:
			if _, ok := w.refunded[eff.RefundID]; ok || eff.RefundNo != len(s.Refunds) {
				t.Fatalf("refund effect %+v repeats an id or is not the last refund", eff)
			}
			w.refunded[eff.RefundID] = eff.AmountFen
		}
	}
	if e.Type == EvDebitFailed && s.Payment.Failures > before.Payment.Failures {
		w.failures++
	}
	if w.registers-w.failures > 1 {
		t.Fatalf("invariant 5: %d registrations, %d failures", w.registers, w.failures)
	}
	if s.State == Paid && before.State != Paid {
		w.paid++
		if w.paid > 1 || before.State == Refunded {
			t.Fatalf("invariant 6: paid %d times", w.paid)
		}
	}
	w.s = s
}

// checkComplete checks invariants 2, 3 and 4 on a complete effect.
func (w *world) checkComplete(t *rapid.T, before Session, e Event, s Session, eff Effect) {
	if w.completes > 1 {
		t.Fatalf("complete asked %d times", w.completes)
	}
	// Invariant 2: after the charger ended, or the stop timeout after a stop,
	// or the offline grace, or an operator's close.
	ok := false
	switch e.Type {
	case EvEnded:
		ok = true
	case EvStarted:
		ok = before.PendingEnd != nil
	case EvClose:
		ok = e.By.IsOperator()
	case EvTimer:
		for _, tm := range before.Timers {
			if tm.ID == e.TimerID {
				ok = (tm.Kind == TimerStop && before.StopCount > 0) || tm.Kind == TimerOffline
			}
		}
	}
	if !ok {
		t.Fatalf("invariant 2: complete asked by %s in %s", e.Type, before.State)
	}
	// Invariant 3: end_time after the start, not after the call; the
	// charger's stop time when credible.
	// The call happens at the effect's due time or later.
	if !eff.EndTime.After(s.StartedAt) || eff.EndTime.After(eff.DueAt) || eff.DueAt.After(e.At.Add(time.Second)) {
		t.Fatalf("invariant 3: end_time %s not in (start %s, call %s]", eff.EndTime, s.StartedAt, eff.DueAt)
	}
	if e.Type == EvEnded && !e.ChargerTime.IsZero() {
		ct := e.ChargerTime.Truncate(time.Second)
		credible := !e.ChargerTime.After(e.At) && ct.After(s.StartedAt) && !e.ChargerTime.Before(s.LastMeterAt)
		if credible && !eff.EndTime.Equal(ct) {
			t.Fatalf("invariant 3: end_time %s, the credible measured stop was %s", eff.EndTime, ct)
		}
	}
	// Invariant 4: the amount is the tariff on the billed energy, within the cap.
	want := s.Tariff.Price(s.Split, s.MaxAmountFen)
	if eff.AmountFen != want.TotalFen || s.AmountFen != want.TotalFen || eff.AmountFen > s.MaxAmountFen || eff.AmountFen <= 0 {
		t.Fatalf("invariant 4: amount %d, tariff says %d, cap %d", eff.AmountFen, want.TotalFen, s.MaxAmountFen)
	}
	if !s.HasFlag(FlagMeterAnomaly) && s.EnergyWh != s.Split.Total() {
		t.Fatalf("invariant 4: energy %d, split %d", s.EnergyWh, s.Split.Total())
	}
	if !s.HasFlag(FlagMeterAnomaly) && e.Type == EvEnded && s.EnergyWh != e.MeterWh-s.StartMeterWh {
		t.Fatalf("invariant 4: energy %d, ended−started = %d", s.EnergyWh, e.MeterWh-s.StartMeterWh)
	}
}

func (w *world) check(t *rapid.T) {
	s := w.s
	if !s.State.Valid() {
		t.Fatalf("invalid state %q", s.State)
	}
	if s.Payment.Deductions-s.Payment.Failures > 1 || (s.Payment.Registered && s.State != Deducting) {
		t.Fatalf("invariant 5: payment %+v in %s", s.Payment, s.State)
	}
	if s.State != Created && s.State != Cancelled && s.ConfirmedAt.IsZero() {
		t.Fatalf("invariant 1: %s without confirmation", s.State)
	}
	if s.AmountFen > s.MaxAmountFen {
		t.Fatalf("invariant 4: amount %d over cap %d", s.AmountFen, s.MaxAmountFen)
	}
	if s.RefundsCommittedFen() > s.Payment.PaidFen {
		t.Fatalf("refunds %d exceed payment %d", s.RefundsCommittedFen(), s.Payment.PaidFen)
	}
	seen := map[string]bool{}
	for i, r := range s.Refunds {
		if r.No != i+1 || r.ID != fmt.Sprintf("r%d", i+1) || (r.Key != "" && seen[r.Key]) {
			t.Fatalf("refund %d is %+v (keys seen %v)", i, r, seen)
		}
		seen[r.Key] = true
	}
	for _, tm := range s.Timers {
		if !slices.Contains(timerStates[tm.Kind], s.State) {
			t.Fatalf("timer %s armed in %s", tm.Kind, s.State)
		}
	}
}

func (w *world) actions() map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"": w.check,
		"confirm": func(t *rapid.T) {
			w.apply(t, Event{Type: EvConfirm, At: w.advance(t), By: anySource(t, ByPayScore)})
		},
		"startRejected": func(t *rapid.T) {
			w.apply(t, Event{Type: EvStartRejected, At: w.advance(t), By: ByCharger, CmdID: w.s.StartCmdID, Reason: "busy"})
		},
		"started": func(t *rapid.T) {
			w.apply(t, Event{Type: EvStarted, At: w.advance(t), By: ByCharger, ChargerTime: w.chargerTime(t), MeterWh: w.register})
		},
		"meter": func(t *rapid.T) {
			if rapid.IntRange(0, 19).Draw(t, "backwards") == 0 {
				w.register -= rapid.Int64Range(1, 5000).Draw(t, "drop")
				w.register = max(w.register, 0)
			} else {
				w.register += rapid.Int64Range(0, 20_000).Draw(t, "energy")
			}
			w.seq++
			w.apply(t, Event{Type: EvMeter, At: w.advance(t), By: ByCharger, ChargerTime: w.chargerTime(t), MeterWh: w.register, Seq: w.seq})
		},
		"ended": func(t *rapid.T) {
			w.register += rapid.Int64Range(0, 5000).Draw(t, "lastEnergy")
			w.apply(t, Event{Type: EvEnded, At: w.advance(t), By: ByCharger, ChargerTime: w.chargerTime(t), MeterWh: w.register, Reason: "local"})
		},
		"stop": func(t *rapid.T) {
			w.apply(t, Event{Type: EvStop, At: w.advance(t), By: anySource(t, ByApp)})
		},
		"cancel": func(t *rapid.T) {
			w.apply(t, Event{Type: EvCancel, At: w.advance(t), By: ByApp})
		},
		"close": func(t *rapid.T) {
			w.apply(t, Event{Type: EvClose, At: w.advance(t), By: anySource(t, Operator("ops")), Reason: "stuck"})
		},
		"offline": func(t *rapid.T) {
			w.apply(t, Event{Type: EvChargerOffline, At: w.advance(t), By: ByCharger})
		},
		"online": func(t *rapid.T) {
			w.apply(t, Event{Type: EvChargerOnline, At: w.advance(t), By: ByCharger})
		},
		"orderCompleted": func(t *rapid.T) {
			w.apply(t, Event{Type: EvOrderCompleted, At: w.advance(t), By: ByPayScore, EndTime: w.s.EndTime})
		},
		"orderClosed": func(t *rapid.T) {
			w.apply(t, Event{Type: EvOrderClosed, At: w.advance(t), By: ByPayScore, OrderState: "REVOKED"})
		},
		"registered": func(t *rapid.T) {
			attempt := w.s.Payment.Deductions + rapid.IntRange(-1, 1).Draw(t, "attemptSkew")
			w.apply(t, Event{Type: EvDeductionRegistered, At: w.advance(t), By: ByPayScore, Deduction: max(attempt, 1), OutTradeNo: "T"})
		},
		"debitFailed": func(t *rapid.T) {
			attempt := w.s.Payment.Deductions + rapid.IntRange(-1, 1).Draw(t, "attemptSkew")
			w.apply(t, Event{Type: EvDebitFailed, At: w.advance(t), By: ByPayScore, Deduction: max(attempt, 1), Reason: "balance"})
		},
		"paid": func(t *rapid.T) {
			w.apply(t, Event{Type: EvPaid, At: w.advance(t), By: anySource(t, ByPayScore), AmountFen: w.s.AmountFen, HfSeqID: "HF", ReqDate: "20261126"})
		},
		"deductNow": func(t *rapid.T) {
			w.apply(t, Event{Type: EvDeductNow, At: w.advance(t), By: Operator("ops")})
		},
		"refund": func(t *rapid.T) {
			// Keys repeat (a retried request); "" is a request without one.
			key := fmt.Sprintf("k%d", rapid.IntRange(0, 3).Draw(t, "refundKey"))
			if key == "k0" {
				key = ""
			}
			w.apply(t, Event{Type: EvRefund, At: w.advance(t), By: Operator("ops"), Key: key,
				AmountFen: money.Fen(rapid.Int64Range(1, max(int64(w.s.AmountFen), 1)).Draw(t, "refundAmount")), Reason: "r"})
		},
		"refundOutcome": func(t *rapid.T) {
			typ := rapid.SampledFrom([]EventType{EvRefundSucceeded, EvRefundFailed}).Draw(t, "outcome")
			id := fmt.Sprintf("r%d", rapid.IntRange(1, 3).Draw(t, "refundID"))
			w.apply(t, Event{Type: typ, At: w.advance(t), By: ByPayScore, RefundID: id})
		},
		"timer": func(t *rapid.T) {
			if len(w.s.Timers) == 0 {
				w.apply(t, Event{Type: EvTimer, At: w.advance(t), By: ByTimer, TimerID: "stale"})
				return
			}
			tm := rapid.SampledFrom(w.s.Timers).Draw(t, "timer")
			if tm.DueAt.After(w.now) {
				w.now = tm.DueAt
			}
			w.apply(t, Event{Type: EvTimer, At: w.now, By: ByTimer, TimerID: tm.ID})
		},
		"duplicate": func(t *rapid.T) {
			if len(w.log) == 0 {
				t.Skip("nothing to duplicate")
			}
			// A duplicate is a new arrival of the same message.
			e := w.log[len(w.log)-1]
			e.At = w.advance(t)
			w.apply(t, e)
		},
		"reorder": func(t *rapid.T) {
			if len(w.log) == 0 {
				t.Skip("nothing to replay")
			}
			e := rapid.SampledFrom(w.log).Draw(t, "old")
			e.At = w.advance(t)
			w.apply(t, e)
		},
		"restore": func(t *rapid.T) {
			raw, err := json.Marshal(w.s)
			if err != nil {
				t.Fatal(err)
			}
			var back Session
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back)
			if string(again) != string(raw) {
				t.Fatalf("restore is not faithful:\n%s\n%s", raw, again)
			}
			w.s = back
		},
	}
}

// TestInvariants runs random event sequences and checks the invariants of
// docs/contract.md §1 after every step.
func TestInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t)
		t.Repeat(w.actions())
	})
}

// TestInvariantsOnTheMainPath biases the sequence toward the money path, so
// the deduction invariants are exercised often, not just reachable.
func TestInvariantsOnTheMainPath(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t)
		acts := w.actions()
		path := []string{"confirm", "started", "meter", "meter", "ended", "orderCompleted"}
		for _, name := range path {
			acts[name](t)
		}
		t.Repeat(map[string]func(*rapid.T){
			"":            w.check,
			"registered":  acts["registered"],
			"debitFailed": acts["debitFailed"],
			"timer":       acts["timer"],
			"deductNow":   acts["deductNow"],
			"paid":        acts["paid"],
			"duplicate":   acts["duplicate"],
			"reorder":     acts["reorder"],
			"restore":     acts["restore"],
			"refund":      acts["refund"],
			"outcome":     acts["refundOutcome"],
		})
	})
}
