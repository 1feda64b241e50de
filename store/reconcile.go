package store

import (
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// Reconciliation is the stored report of one Beijing day's reconciliation
// against Huifu's trade bill (docs/contract.md §6). Lines holds the
// differing lines only; matched ones are counted.
type Reconciliation struct {
	Date   string `json:"date"` // YYYY-MM-DD, Beijing
	Status string `json:"status"`
	// Matched and Differences count the lines of each kind.
	Matched     int `json:"matched"`
	Differences int `json:"differences"`
	// OurLines and HuifuLines count the debits and refunds each side had.
	OurLines   int `json:"our_lines"`
	HuifuLines int `json:"huifu_lines"`
	// RanAt is when the run finished (while Running: when it started).
	RanAt time.Time `json:"ran_at"`
	// Owner is the instance that ran it.
	Owner string `json:"owner,omitempty"`
	// Error says why a Failed run could not reconcile.
	Error string          `json:"error,omitempty"`
	Lines []ReconcileLine `json:"lines,omitempty"`
}

// Reconciliation statuses.
const (
	ReconcileRunning     = "running"
	ReconcileMatched     = "matched"     // no difference
	ReconcileDifferences = "differences" // at least one
	ReconcileFailed      = "failed"      // could not run (bill not ready, unreadable, Huifu down)
)

// ReconcileLine is one line of a report: a debit or refund of ours, of
// Huifu's, or of both, and how they compare.
type ReconcileLine struct {
	// Outcome is matched, missing_at_huifu, missing_here, amount_mismatch
	// or status_mismatch.
	Outcome   string `json:"outcome"`
	Kind      string `json:"kind"` // debit or refund
	SessionID string `json:"session_id,omitempty"`
	RefundID  string `json:"refund_id,omitempty"`
	ReqSeqID  string `json:"req_seq_id,omitempty"`
	HfSeqID   string `json:"hf_seq_id,omitempty"`
	// Amounts and statuses as each side has them (zero/empty on the side
	// that lacks the line). Statuses are S, F or P.
	OurAmountFen   money.Fen `json:"our_amount_fen"`
	HuifuAmountFen money.Fen `json:"huifu_amount_fen"`
	OurStatus      string    `json:"our_status,omitempty"`
	HuifuStatus    string    `json:"huifu_status,omitempty"`
	Note           string    `json:"note,omitempty"`
}

// ReconcileDateLayout is the layout of Reconciliation.Date.
const ReconcileDateLayout = "2006-01-02"

// CheckReconcileDate validates a report's date, or ErrInvalid.
func CheckReconcileDate(date string) error {
	if t, err := time.Parse(ReconcileDateLayout, date); err != nil || t.Format(ReconcileDateLayout) != date {
		return fmt.Errorf("%w: reconciliation date %q is not YYYY-MM-DD", ErrInvalid, date)
	}
	return nil
}

// MayStartReconciliation is StartReconciliation's rule, shared by the
// adapters: a day may be (re)started when it has no report, or when its
// report is running or failed and older than retryAfter (a crashed run, or
// a bill that was not ready).
func MayStartReconciliation(cur *Reconciliation, now time.Time, retryAfter time.Duration) bool {
	if cur == nil {
		return true
	}
	if cur.Status != ReconcileRunning && cur.Status != ReconcileFailed {
		return false
	}
	return !now.Before(cur.RanAt.Add(retryAfter))
}

// MaxReconciliations bounds ListReconciliations.
const MaxReconciliations = 400
