package fsm

import (
	"testing"
	"time"
)

// TestReconcileMismatchFlags checks the reconciliation's event sets the flag
// once (a repeat is a no-op), asks for no effect, keeps the state, and is
// refused from a source other than the bill or an operator.
func TestReconcileMismatchFlags(t *testing.T) {
	b := sessionIn(t, Paid)
	at := b.tick(time.Minute)
	if _, err := b.m.Apply(b.s, Event{Type: EvReconcileMismatch, At: at, By: ByCharger}); !isRefused(err) {
		t.Fatalf("from a charger: err = %v, want refused", err)
	}
	r, err := b.m.Apply(b.s, Event{Type: EvReconcileMismatch, At: at, By: ByPayScore, Reason: "2026-12-03 amount_mismatch"})
	if err != nil || !r.Changed || r.Session.State != Paid || len(r.Effects) != 0 || r.Transitioned() {
		t.Fatalf("first: err=%v changed=%v state=%s effects=%v", err, r.Changed, r.Session.State, effectKinds(r.Effects))
	}
	if !r.Session.HasFlag(FlagReconcileMismatch) {
		t.Fatalf("flags %v", r.Session.Flags)
	}
	again, err := b.m.Apply(r.Session, Event{Type: EvReconcileMismatch, At: at.Add(time.Hour), By: Operator("ops")})
	if err != nil || again.Changed || again.Ignored == "" {
		t.Fatalf("repeat: err=%v changed=%v ignored=%q", err, again.Changed, again.Ignored)
	}
}
