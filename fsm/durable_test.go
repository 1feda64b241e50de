package fsm

import "testing"

// The durability questions name exactly the irreversible effects and the
// events whose sender stops repeating them once acknowledged.
func TestDurable(t *testing.T) {
	b := newBuilder(t)
	durable := map[EffectKind]bool{EffSendStart: true, EffDebit: true, EffRefund: true}
	for _, k := range EffectKinds {
		if got := b.m.Durable(Effect{Kind: k}); got != durable[k] {
			t.Errorf("Durable(%s) = %v, want %v", k, got, durable[k])
		}
	}
	// the confirm transition's start is one of them
	if start := lastEffect(t, b.confirm(), EffSendStart); !b.m.Durable(start) {
		t.Error("the confirmation's start is not durable")
	}
	events := map[EventType]bool{EvStarted: true, EvEnded: true, EvRefund: true}
	for _, ev := range []EventType{EvCreate, EvConfirm, EvStartAccepted, EvStartRejected, EvStopAccepted, EvStopRejected,
		EvStarted, EvEnded, EvMeter, EvStop, EvCancel, EvClose, EvChargerOffline, EvChargerOnline, EvOrderCompleted,
		EvOrderClosed, EvDeductionRegistered, EvDebitFailed, EvDebitSent, EvPaid, EvDeductNow, EvRefund,
		EvRefundSucceeded, EvRefundFailed, EvTimer} {
		if got := b.m.DurableEvent(Event{Type: ev}); got != events[ev] {
			t.Errorf("DurableEvent(%s) = %v, want %v", ev, got, events[ev])
		}
	}
}
