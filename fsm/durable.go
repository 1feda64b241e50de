package fsm

// The durability questions (docs/contract.md §7, docs/operations.md "What
// survives a lost write"). A store that replicates asynchronously (Redis
// under Sentinel or Cluster) may lose the last commits a primary
// acknowledged when its replica is promoted. Most such losses are harmless:
// the machine repeats the step, and every effect is idempotent (cmd_id,
// req_seq_id). Two kinds are not, and the machine names them so the engine
// can demand that the commits they depend on are on a replica first:
//
//   - an effect that cannot be taken back once performed, when the commit
//     that asked for it is later lost: the session would be back before the
//     effect and ask for it again, differently — a start the charger acts
//     on while the session forgot its confirmation, a debit or a refund
//     whose record (and so whose number, req_seq_id and req_date) would be
//     given again to a new one;
//   - an input whose sender stops repeating it once acknowledged: a
//     charger's transaction events (started, ended), which the charger
//     re-sends until acknowledged and never after, and an operator's refund,
//     answered 202 ("no accepted money action is lost").
//
// Both questions are pure: they look at the effect or the event only.

// Durable reports whether eff may only be performed once the commit that
// asked for it can no longer be lost: a start command, a debit, a refund.
func (m *Machine) Durable(eff Effect) bool {
	switch eff.Kind {
	case EffSendStart, EffDebit, EffRefund:
		return true
	}
	return false
}

// DurableEvent reports whether ev may only be acknowledged to its sender
// once what applying it committed (or found already committed, for a
// repeated event) can no longer be lost: a charger's started and ended
// events, and an operator's refund request.
func (m *Machine) DurableEvent(ev Event) bool {
	switch ev.Type {
	case EvStarted, EvEnded, EvRefund:
		return true
	}
	return false
}
