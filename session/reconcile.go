package session

// The daily reconciliation (docs/contract.md §6): a Beijing day's debits and
// refunds, as our sessions record them, matched against Huifu's trade bill
// by hf_seq_id (else req_seq_id) and amount. Each difference flags its
// session reconcile_mismatch through the machine; the report is stored.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

// The outcomes of a reconciled line (docs/contract.md §6).
const (
	OutcomeMatched        = "matched"
	OutcomeMissingAtHuifu = "missing_at_huifu" // we moved money Huifu's bill does not show
	OutcomeMissingHere    = "missing_here"     // Huifu's bill shows money we have no record of
	OutcomeAmountMismatch = "amount_mismatch"
	OutcomeStatusMismatch = "status_mismatch"
)

// BillSource fetches Huifu's trade bill (*payscore.Client).
type BillSource interface {
	TradeBill(ctx context.Context, r payscore.BillRequest) (*payscore.Bill, error)
}

// Flagger applies an event to a session through the machine (*Engine).
type Flagger interface {
	Apply(ctx context.Context, id string, ev fsm.Event) (fsm.Result, error)
}

// ReconcilerConfig configures a Reconciler. Store, Bill and Flagger are required.
type ReconcilerConfig struct {
	Store   store.Store
	Bill    BillSource
	Flagger Flagger
	// Instance names this process in the reports it writes (Owner).
	Instance string
	// Lookback is how long before the day a session may have been created
	// and still move money on it (a debit retried for days, a late refund);
	// default 62 days. Sessions are scanned newest first down to it.
	Lookback time.Duration
	// RetryAfter is how long a failed or crashed daily run waits before it
	// is tried again; default 15 minutes.
	RetryAfter time.Duration
	Now        func() time.Time
	Log        *slog.Logger
}

// Reconciler runs reconciliations. It is safe for concurrent use.
type Reconciler struct{ cfg ReconcilerConfig }

// NewReconciler checks cfg and returns a Reconciler.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	if cfg.Store == nil || cfg.Bill == nil || cfg.Flagger == nil {
		return nil, errors.New("reconciler: store, bill source and flagger are required")
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = 62 * 24 * time.Hour
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{cfg: cfg}, nil
}

// ledgerLine is one debit or refund of ours.
type ledgerLine struct {
	kind      payscore.BillKind
	sessionID string
	refundID  string
	reqSeqID  string
	hfSeqID   string
	day       string // yyyyMMdd, Beijing
	amount    money.Fen
	status    string // S, F, P
	used      bool
}

// Run reconciles date (YYYY-MM-DD, Beijing) now, whatever a report of it
// says, stores the report and returns it. A run that could not reconcile
// (the bill not ready or unreadable, Huifu or the store failing) stores a
// failed report and returns it with the error.
func (r *Reconciler) Run(ctx context.Context, date string) (store.Reconciliation, error) {
	rep, err := r.run(ctx, date)
	if errors.Is(err, store.ErrInvalid) {
		return rep, err
	}
	if err != nil {
		rep = store.Reconciliation{Date: date, Status: store.ReconcileFailed, RanAt: r.cfg.Now(), Owner: r.cfg.Instance, Error: err.Error()}
	}
	if perr := r.cfg.Store.PutReconciliation(context.WithoutCancel(ctx), rep); perr != nil {
		return rep, errors.Join(err, fmt.Errorf("store report: %w", perr))
	}
	if err == nil {
		r.cfg.Log.Info("reconciliation done", "date", date, "status", rep.Status, "matched", rep.Matched, "differences", rep.Differences)
	} else {
		r.cfg.Log.Warn("reconciliation failed", "date", date, "err", err)
	}
	return rep, err
}

func (r *Reconciler) run(ctx context.Context, date string) (store.Reconciliation, error) {
	if err := store.CheckReconcileDate(date); err != nil {
		return store.Reconciliation{}, err
	}
	dayT, _ := time.ParseInLocation(store.ReconcileDateLayout, date, money.Beijing)
	day := payscore.FormatDate(dayT)
	bill, err := r.cfg.Bill.TradeBill(ctx, payscore.BillRequest{Day: dayT, Now: r.cfg.Now()})
	if err != nil {
		return store.Reconciliation{}, fmt.Errorf("trade bill: %w", err)
	}
	if len(bill.Problems) > 0 {
		var ps []string
		for i, p := range bill.Problems {
			if i == 5 {
				ps = append(ps, fmt.Sprintf("and %d more", len(bill.Problems)-5))
				break
			}
			ps = append(ps, p.String())
		}
		return store.Reconciliation{}, fmt.Errorf("trade bill has %d unreadable lines: %s", len(bill.Problems), strings.Join(ps, "; "))
	}
	ours, err := r.ledger(ctx, dayT)
	if err != nil {
		return store.Reconciliation{}, fmt.Errorf("ledger: %w", err)
	}
	rep := store.Reconciliation{Date: date, Owner: r.cfg.Instance}
	lines := r.match(ctx, day, bill.Lines, ours, &rep)
	for _, l := range ours {
		if l.day == day && l.status != payscore.TransFailed {
			rep.OurLines++
		}
	}
	for _, l := range lines {
		if l.Outcome == OutcomeMatched {
			rep.Matched++
			continue
		}
		rep.Differences++
		rep.Lines = append(rep.Lines, l)
	}
	rep.Status = store.ReconcileMatched
	if rep.Differences > 0 {
		rep.Status = store.ReconcileDifferences
	}
	r.flag(ctx, date, rep.Lines)
	rep.RanAt = r.cfg.Now()
	return rep, nil
}

// match pairs Huifu's lines with ours and returns every line's outcome.
func (r *Reconciler) match(ctx context.Context, day string, bill []payscore.BillLine, ours []*ledgerLine, rep *store.Reconciliation) []store.ReconcileLine {
	byHf, byReq := map[string]*ledgerLine{}, map[string]*ledgerLine{}
	for _, l := range ours {
		if l.hfSeqID != "" {
			byHf[l.hfSeqID] = l
		}
		if l.reqSeqID != "" {
			byReq[l.reqSeqID] = l
		}
	}
	var out []store.ReconcileLine
	for _, h := range bill {
		if h.Kind != payscore.BillDebit && h.Kind != payscore.BillRefund {
			continue
		}
		o := byHf[h.HfSeqID]
		if o == nil || h.HfSeqID == "" {
			o = byReq[h.ReqSeqID]
			if h.ReqSeqID == "" {
				o = nil
			}
		}
		if h.Status != payscore.TransFailed || o != nil {
			rep.HuifuLines++
		}
		line := store.ReconcileLine{Kind: string(h.Kind), ReqSeqID: h.ReqSeqID, HfSeqID: h.HfSeqID,
			HuifuAmountFen: h.Amount, HuifuStatus: h.Status}
		if o == nil {
			if h.Status == payscore.TransFailed {
				continue // a failed transaction moved no money, and we have none
			}
			line.Outcome = OutcomeMissingHere
			line.SessionID = r.sessionOf(ctx, h, byHf)
			out = append(out, line)
			continue
		}
		o.used = true
		line.SessionID, line.RefundID = o.sessionID, o.refundID
		line.OurAmountFen, line.OurStatus = o.amount, o.status
		line.ReqSeqID, line.HfSeqID = firstOf(h.ReqSeqID, o.reqSeqID), firstOf(h.HfSeqID, o.hfSeqID)
		switch {
		case string(o.kind) != string(h.Kind):
			line.Outcome, line.Note = OutcomeAmountMismatch, fmt.Sprintf("a %s here, a %s at Huifu", o.kind, h.Kind)
		case o.amount != h.Amount:
			line.Outcome = OutcomeAmountMismatch
		case o.status != h.Status:
			line.Outcome = OutcomeStatusMismatch
		default:
			line.Outcome = OutcomeMatched
			if o.day != day {
				line.Note = "dated " + o.day + " here"
			}
		}
		out = append(out, line)
	}
	for _, o := range ours {
		if o.used || o.day != day || o.status == payscore.TransFailed {
			continue
		}
		out = append(out, store.ReconcileLine{Outcome: OutcomeMissingAtHuifu, Kind: string(o.kind), SessionID: o.sessionID,
			RefundID: o.refundID, ReqSeqID: o.reqSeqID, HfSeqID: o.hfSeqID, OurAmountFen: o.amount, OurStatus: o.status})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Outcome < out[j].Outcome })
	return out
}

// sessionOf finds the session a line we have no record of belongs to, when
// it can: a refund names its payment (ours?), and our own req_seq_ids name
// their session (payscore.SessionOf).
func (r *Reconciler) sessionOf(ctx context.Context, h payscore.BillLine, byHf map[string]*ledgerLine) string {
	if o := byHf[h.OrgHfSeqID]; h.OrgHfSeqID != "" && o != nil {
		return o.sessionID
	}
	id := payscore.SessionOf(h.ReqSeqID)
	if id == "" {
		return ""
	}
	if s, err := r.cfg.Store.GetSession(ctx, id); err == nil {
		return s.ID
	}
	return ""
}

// ledger collects the debits and refunds of every session created from
// Lookback before the day to the day's end: the lines dated that day are
// the day's books, the others are there so a line Huifu dates otherwise
// still finds its match.
func (r *Reconciler) ledger(ctx context.Context, day time.Time) ([]*ledgerLine, error) {
	end := day.AddDate(0, 0, 1)
	from := day.Add(-r.cfg.Lookback)
	var out []*ledgerLine
	f := store.Filter{Limit: store.MaxPage}
	for {
		page, err := r.cfg.Store.ListSessions(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, s := range page.Sessions {
			if s.CreatedAt.Before(from) {
				return out, nil
			}
			if !s.CreatedAt.Before(end) {
				continue
			}
			out = append(out, sessionLedger(s)...)
		}
		if page.NextCursor == "" {
			return out, nil
		}
		f.Cursor = page.NextCursor
	}
}

// sessionLedger is a session's money as lines: its debit (the payscorepay
// it sent, or the user's own payment) and each refund.
func sessionLedger(s fsm.Session) []*ledgerLine {
	var out []*ledgerLine
	p := s.Payment
	if p.HfSeqID != "" {
		l := &ledgerLine{kind: payscore.BillDebit, sessionID: s.ID, hfSeqID: p.HfSeqID, day: p.ReqDate, amount: p.PaidFen}
		if !p.ByUser && p.Debited > 0 {
			l.reqSeqID = payscore.ReqSeqID(s.ID, payscore.StepDebit, p.Debited, p.ReqDate)
		}
		switch {
		case s.State == fsm.Paid || s.State == fsm.Refunded:
			l.status = payscore.TransSucceeded
		case s.State == fsm.Deducting:
			l.status, l.amount = payscore.TransProcessing, s.AmountFen
		default:
			l.status, l.amount = payscore.TransFailed, s.AmountFen
		}
		out = append(out, l)
	}
	for i, rf := range s.Refunds {
		no := rf.No
		if no == 0 {
			no = i + 1
		}
		l := &ledgerLine{kind: payscore.BillRefund, sessionID: s.ID, refundID: rf.ID, hfSeqID: rf.HfSeqID,
			reqSeqID: payscore.ReqSeqID(s.ID, payscore.StepRefund, no, payscore.FormatDate(rf.At)), day: payscore.FormatDate(rf.At), amount: rf.AmountFen}
		switch rf.Status {
		case fsm.RefundSucceeded:
			l.status = payscore.TransSucceeded
		case fsm.RefundFailed:
			l.status = payscore.TransFailed
		default:
			l.status = payscore.TransProcessing
		}
		out = append(out, l)
	}
	return out
}

// flag marks every session with a difference, through the machine.
func (r *Reconciler) flag(ctx context.Context, date string, lines []store.ReconcileLine) {
	done := map[string]bool{}
	for _, l := range lines {
		if l.SessionID == "" || done[l.SessionID] {
			continue
		}
		done[l.SessionID] = true
		ev := fsm.Event{Type: fsm.EvReconcileMismatch, At: r.cfg.Now(), By: fsm.ByPayScore, Reason: date + " " + l.Outcome}
		if _, err := r.cfg.Flagger.Apply(ctx, l.SessionID, ev); err != nil {
			r.cfg.Log.Warn("reconciliation: flag session", "session", l.SessionID, "err", err)
		}
	}
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
