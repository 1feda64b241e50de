package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// ReconciliationSummary is one day in GET /v1/reconciliations.
type ReconciliationSummary struct {
	Date        string    `json:"date"`
	Status      string    `json:"status"`
	Matched     int       `json:"matched"`
	Differences int       `json:"differences"`
	RanAt       time.Time `json:"ran_at"`
	Error       string    `json:"error,omitempty"`
}

// ReconciliationList is the answer of GET /v1/reconciliations.
type ReconciliationList struct {
	Reconciliations []ReconciliationSummary `json:"reconciliations"`
}

// ReconciledSession is a session a differing line belongs to, as it is now.
type ReconciledSession struct {
	ID        string     `json:"id"`
	State     fsm.State  `json:"state"`
	Flags     []fsm.Flag `json:"flags"`
	AmountFen money.Fen  `json:"amount_fen"`
	PaidFen   money.Fen  `json:"paid_fen"`
}

// ReconciliationReport is the answer of GET /v1/reconciliations/{date}.
type ReconciliationReport struct {
	store.Reconciliation
	Lines    []store.ReconcileLine `json:"lines"`
	Sessions []ReconciledSession   `json:"sessions"`
}

// defaultReconciliations is the page of GET /v1/reconciliations.
const defaultReconciliations = 30

// handleListReconciliations: GET /v1/reconciliations?limit=, newest day first.
func (s *server) handleListReconciliations() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit := defaultReconciliations
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > store.MaxReconciliations {
				Error(w, r, invalid("limit", "must be an integer from 1 to "+strconv.Itoa(store.MaxReconciliations)))
				return
			}
			limit = n
		}
		reps, err := s.store.ListReconciliations(r.Context(), limit)
		if err != nil {
			Error(w, r, err)
			return
		}
		out := ReconciliationList{Reconciliations: make([]ReconciliationSummary, 0, len(reps))}
		for _, rep := range reps {
			out.Reconciliations = append(out.Reconciliations, ReconciliationSummary{Date: rep.Date, Status: rep.Status,
				Matched: rep.Matched, Differences: rep.Differences, RanAt: rep.RanAt.UTC(), Error: rep.Error})
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}

// handleGetReconciliation: GET /v1/reconciliations/{date}: the report with
// its differing lines and the sessions they belong to.
func (s *server) handleGetReconciliation() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		date := chi.URLParam(r, "date")
		if err := store.CheckReconcileDate(date); err != nil {
			Error(w, r, invalid("date", "must be YYYY-MM-DD"))
			return
		}
		rep, err := s.store.GetReconciliation(r.Context(), date)
		if err != nil {
			Error(w, r, err)
			return
		}
		rep.RanAt = rep.RanAt.UTC()
		out := ReconciliationReport{Reconciliation: rep, Lines: rep.Lines, Sessions: []ReconciledSession{}}
		if out.Lines == nil {
			out.Lines = []store.ReconcileLine{}
		}
		seen := map[string]bool{}
		for _, l := range rep.Lines {
			if l.SessionID == "" || seen[l.SessionID] {
				continue
			}
			seen[l.SessionID] = true
			ss, err := s.store.GetSession(r.Context(), l.SessionID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				Error(w, r, err)
				return
			}
			flags := ss.Flags
			if flags == nil {
				flags = []fsm.Flag{}
			}
			out.Sessions = append(out.Sessions, ReconciledSession{ID: ss.ID, State: ss.State, Flags: flags,
				AmountFen: ss.AmountFen, PaidFen: ss.Payment.PaidFen})
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}
