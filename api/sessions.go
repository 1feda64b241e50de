package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// maxIdempotencyKey bounds an Idempotency-Key (as Stripe does).
const maxIdempotencyKey = 255

// handleCreateSession: POST /v1/sessions with an Idempotency-Key.
//
// Idempotency (the record is the store's IdemRecord, keyed by caller and
// key, holding the hash of the caller and the canonical body):
//   - a new key: the record is created first, then a session id is drawn
//     and saved in it BEFORE Pay Score is called, so every retry of this key
//     uses the same id, hence the same req_seq_id;
//   - the same key and body after an answer: that answer again, byte for
//     byte (header Idempotent-Replayed: true);
//   - the same key and another body (or caller): 409;
//   - the same key while the first request is being served: 409, retry later;
//   - an answer that is a client error found before anything was done
//     (invalid, unknown charger, connector offline or busy: 4xx) is not kept:
//     the record is deleted so the client can fix things and retry;
//   - a temporary failure (503, 500) is kept as "not an answer": a retry
//     runs the creation again with the same session id (Engine.Create is
//     idempotent per id) until it gets a real answer;
//   - a record left without an answer longer than InFlightTimeout (its
//     process died) is treated like a temporary failure.
func (s *server) handleCreateSession() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		switch {
		case key == "":
			Error(w, r, &session.Error{Code: session.CodeInvalid, Message: "an Idempotency-Key header is required",
				Fields: map[string]string{"Idempotency-Key": "required: a unique string per intended session, reused on retries"}})
			return
		case len(key) > maxIdempotencyKey || !printableASCII(key):
			Error(w, r, invalid("Idempotency-Key", fmt.Sprintf("1 to %d printable ASCII characters", maxIdempotencyKey)))
			return
		}
		var req session.CreateRequest
		if err := decodeJSON(w, r, s.maxBody, &req); err != nil {
			Error(w, r, err)
			return
		}
		c := callerFrom(r.Context())
		status, body, replayed, err := s.createIdempotent(r.Context(), c, key, req)
		if err != nil {
			Error(w, r, err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		var v struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(body, &v) == nil && v.ID != "" {
			noteSession(r, v.ID)
			if status == http.StatusCreated {
				w.Header().Set("Location", "/v1/sessions/"+v.ID)
			}
		}
		if status >= 400 {
			writeProblemRaw(w, status, body)
			return
		}
		writeRaw(w, status, body)
	}
}

// createIdempotent runs Engine.Create under the key's record and returns the
// answer to send: a stored one (replayed) or a new one. An error is sent as
// a problem (and was not stored as an answer).
func (s *server) createIdempotent(ctx context.Context, c caller, key string, req session.CreateRequest) (status int, body []byte, replayed bool, err error) {
	canonical, err := json.Marshal(req)
	if err != nil {
		return 0, nil, false, err
	}
	sum := sha256.Sum256([]byte("POST /v1/sessions\n" + c.role.String() + "\n" + c.name + "\n" + string(canonical)))
	hash := hex.EncodeToString(sum[:])
	storeKey := "create-session\x00" + c.role.String() + "\x00" + c.name + "\x00" + key

	rec, created, err := s.store.PutIdempotency(ctx, storeKey, hash, s.idemTTL)
	if err != nil {
		return 0, nil, false, fmt.Errorf("idempotency record: %w", err)
	}
	id := ""
	if !created {
		if rec.RequestHash != hash {
			return 0, nil, false, session.Errorf(session.CodeConflict,
				"this Idempotency-Key was used with another request body: use a new key for a new session")
		}
		switch {
		case rec.Status != 0 && !rerun(rec.Status):
			return rec.Status, rec.Body, true, nil // the answer, again
		case rec.Status == 0 && s.now().Sub(rec.ExpiresAt.Add(-s.idemTTL)) < s.inFlight:
			return 0, nil, false, session.Errorf(session.CodeConflict,
				"a request with this Idempotency-Key is still being served: retry in a few seconds")
		}
		// A temporary failure, or an abandoned attempt: run it again with
		// the same id (a new one if the attempt died before saving one:
		// then nothing was sent to Pay Score under any id).
		id = rec.SessionID
	}
	if id == "" {
		id = session.NewID(s.now())
	}
	// Claim the record for this attempt and fix the id in it before any
	// payment call is made under that id.
	if err := s.store.SaveIdempotentResponse(ctx, storeKey, store.IdemRecord{RequestHash: hash, SessionID: id}); err != nil {
		return 0, nil, false, fmt.Errorf("idempotency record: %w", err)
	}

	sess, cerr := s.eng.Create(ctx, id, req)
	if cerr != nil {
		code := session.ErrorCode(cerr)
		st := codeStatus[code]
		switch {
		case code == session.CodePaymentRefused:
			// Pay Score said no for good: that is the answer to this key.
			b := problemBody(code, st, session.ErrorMessage(cerr))
			s.saveAnswer(ctx, storeKey, hash, id, st, b)
			return st, b, false, nil
		case st >= 400 && st < 500:
			// Found before anything was done: forget the key.
			if derr := s.store.DeleteIdempotency(context.WithoutCancel(ctx), storeKey); derr != nil {
				s.logger(ctx).Warn("drop idempotency record", "err", derr)
			}
			return 0, nil, false, cerr
		default:
			// Keep the id; mark the record "not an answer" so a retry runs again.
			if st == 0 {
				st = http.StatusInternalServerError
			}
			s.saveAnswer(ctx, storeKey, hash, id, st, nil)
			return 0, nil, false, cerr
		}
	}
	history, err := s.store.History(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The session exists: a retry of the key will render it.
		s.saveAnswer(ctx, storeKey, hash, id, http.StatusServiceUnavailable, nil)
		return 0, nil, false, err
	}
	b, err := json.Marshal(session.NewView(sess, history))
	if err != nil {
		return 0, nil, false, err
	}
	b = append(b, '\n')
	s.saveAnswer(ctx, storeKey, hash, id, http.StatusCreated, b)
	return http.StatusCreated, b, false, nil
}

// rerun reports whether a stored status is "not an answer": a temporary
// failure that a retry of the key runs again.
func rerun(status int) bool {
	return status >= 500 && status != http.StatusBadGateway
}

// saveAnswer stores an answer for the key; a failure only means a retry
// runs the (idempotent) creation again.
func (s *server) saveAnswer(ctx context.Context, key, hash, id string, status int, body []byte) {
	err := s.store.SaveIdempotentResponse(context.WithoutCancel(ctx), key,
		store.IdemRecord{RequestHash: hash, SessionID: id, Status: status, Body: body})
	if err != nil {
		s.logger(ctx).Warn("save idempotent answer", "session", id, "err", err)
	}
}

// logger is the request's logger (with its request id), else the server's.
func (s *server) logger(ctx context.Context) *slog.Logger {
	if info := infoFrom(ctx); info != nil && info.log != nil {
		return info.log
	}
	return s.log
}

// problemBody renders a problem for storing with an idempotency record (the
// replay is the same document, instance and request id aside).
func problemBody(code string, status int, detail string) []byte {
	return append(mustJSON(Problem{Type: ProblemTypeBase + code, Title: codeTitle[code], Status: status, Detail: detail,
		Code: code, Instance: "/v1/sessions"}), '\n')
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
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
		if len(key) > 255 || !printableASCII(key) {
			return fsm.Session{}, session.Invalid(map[string]string{"Idempotency-Key": "at most 255 printable ASCII characters"})
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
		limit, msg := parseLimit(q.Get("limit"))
		if msg != "" {
			fields["limit"] = msg
		}
		f.Limit = limit
		if _, err := store.DecodeCursor(f.Cursor); err != nil {
			fields["cursor"] = "not a cursor this API gave out"
		}
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
