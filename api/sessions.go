package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// maxIdempotencyKey bounds an Idempotency-Key (as Stripe does).
const maxIdempotencyKey = session.MaxIdempotencyKey

// handleCreateSession: POST /v1/sessions with an Idempotency-Key. The
// engine keeps the key's protocol (session.Engine.CreateIdempotent); the
// handler translates: a new session is 201 with its Location, a replay says
// Idempotent-Replayed: true, Pay Score's refusal is the key's answer (502).
func (s *server) handleCreateSession() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if err := session.ValidIdempotencyKey(key, true); err != nil {
			Error(w, r, err)
			return
		}
		var req session.CreateRequest
		if err := decodeJSON(w, r, s.maxBody, &req); err != nil {
			Error(w, r, err)
			return
		}
		c := callerFrom(r.Context())
		ans, err := s.eng.CreateIdempotent(r.Context(), session.Caller{Role: c.role.String(), Name: c.name}, key, req)
		if err != nil {
			Error(w, r, err)
			return
		}
		if ans.Replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		noteSession(r, ans.SessionID)
		if ans.Refused != nil {
			Error(w, r, ans.Refused)
			return
		}
		w.Header().Set("Location", "/v1/sessions/"+ans.SessionID)
		writeRaw(w, http.StatusCreated, ans.View)
	}
}

// sessionView renders session id with its history.
func (s *server) sessionView(ctx context.Context, id string) (session.View, error) {
	sess, history, err := s.eng.Get(ctx, id)
	if err != nil {
		return session.View{}, err
	}
	return session.NewView(sess, history), nil
}

// handleGetSession: GET /v1/sessions/{id}. Both roles may read any session
// (the app's backend is trusted with its users' sessions; it does its own
// per-user checks).
func (s *server) handleGetSession() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		noteSession(r, id)
		v, err := s.sessionView(r.Context(), id)
		if err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, v)
	}
}

// sessionAction makes the handler of an action on one session: it runs act
// (after reading a body into a fresh B when withBody), then answers status
// with the view of the session act returned.
func sessionAction[B any](s *server, status int, withBody bool, act func(r *http.Request, id string, c caller, body B) (fsm.Session, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		noteSession(r, id)
		var body B
		if withBody {
			if err := decodeJSON(w, r, s.maxBody, &body); err != nil {
				Error(w, r, err)
				return
			}
		}
		sess, err := act(r, id, callerFrom(r.Context()), body)
		if err != nil {
			Error(w, r, err)
			return
		}
		history, err := s.store.History(r.Context(), id)
		if err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, r, status, session.NewView(sess, history))
	}
}

type noBody struct{}

// handleStopSession: POST /v1/sessions/{id}/stop → 202 (stopping; the
// charger is told, the end follows). Stopping a stopping session is a no-op.
func (s *server) handleStopSession() http.HandlerFunc {
	return sessionAction(s, http.StatusAccepted, false, func(r *http.Request, id string, c caller, _ noBody) (fsm.Session, error) {
		return s.eng.Stop(r.Context(), id, c.source())
	})
}

// handleCancelSession: POST /v1/sessions/{id}/cancel → 200, before charging
// only (409 after).
func (s *server) handleCancelSession() http.HandlerFunc {
	return sessionAction(s, http.StatusOK, false, func(r *http.Request, id string, c caller, _ noBody) (fsm.Session, error) {
		return s.eng.Cancel(r.Context(), id, c.source())
	})
}

// CloseRequest is the body of POST /v1/sessions/{id}/close.
type CloseRequest struct {
	Reason string `json:"reason"`
}

func (s *server) handleCloseSession() http.HandlerFunc {
	return sessionAction(s, http.StatusOK, true, func(r *http.Request, id string, c caller, b CloseRequest) (fsm.Session, error) {
		return s.eng.Close(r.Context(), id, c.name, b.Reason)
	})
}

// handleDeductSession: POST /v1/sessions/{id}/deduct → 202 (the debit runs
// in the background; the session shows its progress).
func (s *server) handleDeductSession() http.HandlerFunc {
	return sessionAction(s, http.StatusAccepted, false, func(r *http.Request, id string, c caller, _ noBody) (fsm.Session, error) {
		return s.eng.DeductNow(r.Context(), id, c.name)
	})
}

// RefundRequest is the body of POST /v1/sessions/{id}/refund.
type RefundRequest struct {
	AmountFen money.Fen `json:"amount_fen"`
	Reason    string    `json:"reason"`
}

// handleRefundSession: POST /v1/sessions/{id}/refund → 202 (the refund is
// pending in the session's refunds until Huifu answers). An optional
// Idempotency-Key makes a double submission one refund: the same key on the
// same session asks for nothing more.
func (s *server) handleRefundSession() http.HandlerFunc {
	return sessionAction(s, http.StatusAccepted, true, func(r *http.Request, id string, c caller, b RefundRequest) (fsm.Session, error) {
		key := r.Header.Get("Idempotency-Key")
		if err := session.ValidIdempotencyKey(key, false); err != nil {
			return fsm.Session{}, err
		}
		sess, _, err := s.eng.Refund(r.Context(), id, c.name, b.AmountFen, b.Reason, key)
		return sess, err
	})
}

// SessionSummary is a session in a list: the view without its history.
type SessionSummary struct {
	session.View
	History []session.HistoryView `json:"history,omitempty"`
}

// SessionList is the answer of GET /v1/sessions.
type SessionList struct {
	Sessions   []SessionSummary `json:"sessions"`
	NextCursor string           `json:"next_cursor"`
}

// handleListSessions: GET /v1/sessions?state=&charger_id=&flag=&limit=&cursor=
// newest first. The end is next_cursor == ""; a page may be short (even
// empty) while next_cursor is not.
func (s *server) handleListSessions() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := store.Filter{State: fsm.State(q.Get("state")), ChargerID: q.Get("charger_id"), Flag: fsm.Flag(q.Get("flag")), Cursor: q.Get("cursor")}
		fields := map[string]string{}
		if f.State != "" && !f.State.Valid() {
			fields["state"] = fmt.Sprintf("unknown state; one of %v", fsm.States)
		}
		if f.Flag != "" && !slices.Contains(fsm.Flags, f.Flag) {
			fields["flag"] = fmt.Sprintf("unknown flag; one of %v", fsm.Flags)
		}
		f.Limit = pageArgs(q, fields)
		if len(fields) > 0 {
			Error(w, r, session.Invalid(fields))
			return
		}
		page, err := s.store.ListSessions(r.Context(), f)
		if err != nil {
			Error(w, r, storeArg(err, "cursor"))
			return
		}
		out := SessionList{Sessions: make([]SessionSummary, 0, len(page.Sessions)), NextCursor: page.NextCursor}
		for _, sess := range page.Sessions {
			out.Sessions = append(out.Sessions, SessionSummary{View: session.NewView(sess, nil)})
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}

// parseLimit reads a page size: empty is the default, else 1..store.MaxPage.
// pageArgs reads a list's limit and checks its cursor, adding what is
// wrong with either to fields (the cursor is the caller's to read).
func pageArgs(q url.Values, fields map[string]string) (limit int) {
	limit, msg := parseLimit(q.Get("limit"))
	if msg != "" {
		fields["limit"] = msg
	}
	if _, err := store.DecodeCursor(q.Get("cursor")); err != nil {
		fields["cursor"] = "not a cursor this API gave out"
	}
	return limit
}

func parseLimit(v string) (int, string) {
	if v == "" {
		return store.DefaultPage, ""
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > store.MaxPage {
		return 0, fmt.Sprintf("must be an integer from 1 to %d", store.MaxPage)
	}
	return n, ""
}
