package fsm

// The daily reconciliation (docs/contract.md §6): a difference between a
// session's money and Huifu's trade bill flags the session for operators.
// The flag is the machine's to set, like every other flag.

var (
	flaggedMismatch = guardNot("the session is flagged reconcile_mismatch", "the session is not flagged reconcile_mismatch",
		func(st *step) bool { return st.s.HasFlag(FlagReconcileMismatch) })
	byReconciler = guard("from Huifu's trade bill or an operator", func(st *step) bool {
		return st.e.By == ByPayScore || st.e.By.IsOperator()
	})
	doReconcileMismatch = action("flag reconcile_mismatch", func(st *step) error {
		st.flag(FlagReconcileMismatch)
		return nil
	})
)
