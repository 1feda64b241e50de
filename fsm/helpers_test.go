package fsm

import (
	"errors"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// t0 is a fixed Beijing-time morning, inside one tariff period of flatTariff.
var t0 = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC) // 10:00 Beijing

// flatTariff prices every hour the same: 1.00 yuan energy + 0.50 yuan
// service per kWh, so amounts are easy to check by hand.
func flatTariff() money.Tariff {
	return money.Tariff{ID: "flat", Periods: []money.Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 100, ServiceFenPerKWh: 50}}}
}

func testMachine(t testing.TB) *Machine {
	t.Helper()
	m, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func createEvent(at time.Time) Event {
	return Event{Type: EvCreate, At: at, By: ByApp, Create: &CreateParams{
		ID: "s1", ChargerID: "CP1", Connector: 1, OpenID: "o1", MaxAmountFen: 5000,
		Tariff: flatTariff(), OutOrderNo: "ORD1", CreateReqDate: "20261126",
	}}
}

// builder drives a session through events and fails the test on any error.
type builder struct {
	t  testing.TB
	m  *Machine
	s  Session
	at time.Time
}

func newBuilder(t testing.TB) *builder {
	t.Helper()
	m := testMachine(t)
	r, err := m.NewSession(createEvent(t0))
	if err != nil {
		t.Fatal(err)
	}
	return &builder{t: t, m: m, s: r.Session, at: t0}
}

// tick moves the builder's clock.
func (b *builder) tick(d time.Duration) time.Time { b.at = b.at.Add(d); return b.at }

func (b *builder) apply(e Event) Result {
	b.t.Helper()
	if e.At.IsZero() {
		e.At = b.tick(time.Second)
	}
	r, err := b.m.Apply(b.s, e)
	if err != nil {
		b.t.Fatalf("apply %s in %s: %v", e.Type, b.s.State, err)
	}
	b.s = r.Session
	return r
}

func (b *builder) confirm() Result { return b.apply(Event{Type: EvConfirm, By: ByPayScore}) }
func (b *builder) started(wh int64) Result {
	at := b.tick(time.Second)
	return b.apply(Event{Type: EvStarted, At: at, By: ByCharger, ChargerTime: at, MeterWh: wh})
}
func (b *builder) meter(seq, wh int64, d time.Duration) Result {
	at := b.tick(d)
	return b.apply(Event{Type: EvMeter, At: at, By: ByCharger, ChargerTime: at, MeterWh: wh, Seq: seq})
}
func (b *builder) ended(wh int64, d time.Duration) Result {
	at := b.tick(d)
	return b.apply(Event{Type: EvEnded, At: at, By: ByCharger, ChargerTime: at, MeterWh: wh, Reason: "remote"})
}
func (b *builder) stop() Result { return b.apply(Event{Type: EvStop, By: ByApp}) }
func (b *builder) completed() Result {
	return b.apply(Event{Type: EvOrderCompleted, By: ByPayScore, EndTime: b.s.EndTime})
}
func (b *builder) registered() Result {
	return b.apply(Event{Type: EvDeductionRegistered, By: ByPayScore, Deduction: b.s.Payment.Deductions, OutTradeNo: "T" + itoa(b.s.Payment.Deductions)})
}
func (b *builder) paid() Result {
	return b.apply(Event{Type: EvPaid, By: ByPayScore, AmountFen: b.s.AmountFen, HfSeqID: "HF1", ReqDate: "20261126"})
}

// fireTimer fires the session's armed timer of kind k.
func (b *builder) fireTimer(k TimerKind) Result {
	b.t.Helper()
	tm, ok := b.s.TimerByKind(k)
	if !ok {
		b.t.Fatalf("no %s timer armed in %s (timers %v)", k, b.s.State, b.s.Timers)
	}
	if tm.DueAt.After(b.at) {
		b.at = tm.DueAt
	}
	return b.apply(Event{Type: EvTimer, By: ByTimer, TimerID: tm.ID})
}

func itoa(i int) string { return string(rune('0' + i)) }

// sessionIn returns a representative session in state st.
func sessionIn(t testing.TB, st State) *builder {
	t.Helper()
	b := newBuilder(t)
	switch st {
	case Created:
	case UserConfirmed:
		b.confirm()
	case Charging:
		b.confirm()
		b.started(1000)
	case Stopping:
		b.confirm()
		b.started(1000)
		b.meter(1, 2000, time.Minute)
		b.stop()
	case Completed, Deducting, Paid, Refunded:
		b.confirm()
		b.started(1000)
		b.meter(1, 2000, time.Minute)
		b.stop()
		b.ended(3000, time.Minute)
		b.completed()
		if st != Completed {
			b.registered()
		}
		if st == Paid || st == Refunded {
			b.paid()
		}
		if st == Refunded {
			b.apply(Event{Type: EvRefund, By: Operator("ops"), Key: "k1", AmountFen: b.s.AmountFen, Reason: "test"})
			b.apply(Event{Type: EvRefundSucceeded, By: ByPayScore, RefundID: "r1", HfSeqID: "RF1"})
		}
	case Cancelled:
		b.apply(Event{Type: EvCancel, By: ByApp})
	default:
		t.Fatalf("no builder for %s", st)
	}
	if b.s.State != st {
		t.Fatalf("builder reached %s, want %s", b.s.State, st)
	}
	return b
}

func isRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

func effectKinds(effs []Effect) []EffectKind {
	out := make([]EffectKind, 0, len(effs))
	for _, e := range effs {
		if e.Kind == EffArmTimer || e.Kind == EffDisarmTimer {
			continue
		}
		out = append(out, e.Kind)
	}
	return out
}

func hasEffect(effs []Effect, k EffectKind) bool {
	for _, e := range effs {
		if e.Kind == k {
			return true
		}
	}
	return false
}
