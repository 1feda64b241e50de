package session

import (
	"context"
	"fmt"

	"github.com/chargeflow/chargeflow/fsm"
)

// The durability policy's two gates (docs/contract.md §7, docs/operations.md
// "What survives a lost write"). The machine names what needs them; the
// store (store.Store.Durable) knows whether and how to wait for a replica.

// durableEffect is asked before an effect is performed: a start, a debit or
// a refund goes out only once the commit that asked for it (and the claim of
// its task) can no longer be lost, so a failover never brings the session
// back to before an effect that already happened. An error is retryable
// (store.ErrUnavailable): the task is tried again later.
func (e *Engine) durableEffect(ctx context.Context, s fsm.Session, eff fsm.Effect) error {
	if !e.machine.Durable(eff) {
		return nil
	}
	if err := e.store.Durable(ctx, s.ID); err != nil {
		return fmt.Errorf("%s held until the session is on a replica: %w", eff.Kind, err)
	}
	return nil
}

// durableEvent is asked after an event was applied (or found applied
// already), before the caller acknowledges it: a charger's started or ended
// event is acknowledged, and an operator's refund answered 202, only once
// what it recorded can no longer be lost. An error means "not acknowledged":
// the charger sends the event again, the operator asks again.
func (e *Engine) durableEvent(ctx context.Context, id string, ev fsm.Event) error {
	if !e.machine.DurableEvent(ev) {
		return nil
	}
	if err := e.store.Durable(ctx, id); err != nil {
		return fmt.Errorf("%s not acknowledged until the session is on a replica: %w", ev.Type, err)
	}
	return nil
}
