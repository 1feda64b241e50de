package fsm

// Re-sending unanswered commands (docs/protocol.md, "Commands the charger
// has not answered"): a start or stop the charger has not answered is
// published again, with the same cmd_id, whenever the charger's state comes
// back online — whatever the session's flags, since a broker restart or a
// broker without persistence may have lost the command while the session
// never saw the charger go offline — and, by the outbox, at least every
// ResendEvery while it stays unanswered. The charger de-duplicates on
// cmd_id, so a repeat is answered again and never executed twice.

// ReasonResend is the Reason of a send_start or send_stop effect that
// repeats a command already sent (the charger came back online): the
// engine publishes it once. The effect the command was first asked with is
// the one the outbox keeps re-sending while the session wants it.
const ReasonResend = "resend"

var hasUnanswered = guardNot("a command is unanswered", "every command is answered", func(st *step) bool {
	return len(st.m.Unanswered(st.s, st.e.At)) > 0
})

var doResend = action("send the unanswered start or stop again (same cmd_id)", func(st *step) error {
	st.s.LastHeardAt = maxTime(st.s.LastHeardAt, st.e.At)
	st.resendUnanswered()
	return nil
})

// resendUnanswered asks again for every command the session still wants
// and the charger has not answered, under new effect ids and the same
// cmd_ids, deadlines and limits.
func (st *step) resendUnanswered() {
	for _, u := range st.m.Unanswered(st.s, st.e.At) {
		eff := st.effect(u.Kind)
		eff.CmdID, eff.Deadline, eff.MaxEnergyWh, eff.Reason = u.CmdID, u.Deadline, u.MaxEnergyWh, ReasonResend
	}
}
