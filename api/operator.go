package api

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// ChargerList is the answer of GET /v1/chargers.
type ChargerList struct {
	Chargers []session.ChargerView `json:"chargers"`
}

// chargerView renders a charger with each connector's active session.
func (s *server) chargerView(ctx context.Context, c store.Charger) (session.ChargerView, error) {
	v := session.NewChargerView(c)
	for i, conn := range v.Connectors {
		a, err := s.store.ActiveSession(ctx, c.ID, conn.ID)
		switch {
		case err == nil:
			v.Connectors[i].Session = a.ID
		case !errors.Is(err, store.ErrNotFound):
			return v, err
		}
	}
	return v, nil
}

func (s *server) handleListChargers() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cs, err := s.store.ListChargers(r.Context())
		if err != nil {
			Error(w, r, err)
			return
		}
		out := ChargerList{Chargers: make([]session.ChargerView, 0, len(cs))}
		for _, c := range cs {
			v, err := s.chargerView(r.Context(), c)
			if err != nil {
				Error(w, r, err)
				return
			}
			out.Chargers = append(out.Chargers, v)
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}

func (s *server) handleGetCharger() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.store.GetCharger(r.Context(), chi.URLParam(r, "id"))
		if errors.Is(err, store.ErrNotFound) {
			err = session.Errorf(session.CodeNotFound, "charger %s is not registered", chi.URLParam(r, "id"))
		}
		if err != nil {
			Error(w, r, err)
			return
		}
		v, err := s.chargerView(r.Context(), c)
		if err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, v)
	}
}

// handlePutCharger: PUT /v1/chargers/{id} registers or updates a charger
// (body session.ChargerRequest; the password is stored hashed, never shown).
func (s *server) handlePutCharger() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req session.ChargerRequest
		if err := decodeJSON(w, r, s.maxBody, &req); err != nil {
			Error(w, r, err)
			return
		}
		c, err := s.eng.PutCharger(r.Context(), chi.URLParam(r, "id"), req)
		if err != nil {
			Error(w, r, err)
			return
		}
		v, err := s.chargerView(r.Context(), c)
		if err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, v)
	}
}

// TariffList is the answer of GET /v1/tariffs.
type TariffList struct {
	Tariffs []money.Tariff `json:"tariffs"`
}

// TariffRequest is the body of PUT /v1/tariffs/{id}.
type TariffRequest struct {
	Periods []money.Period `json:"periods"`
}

var tariffIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (s *server) handleListTariffs() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ts, err := s.store.ListTariffs(r.Context())
		if err != nil {
			Error(w, r, err)
			return
		}
		if ts == nil {
			ts = []money.Tariff{}
		}
		writeJSON(w, r, http.StatusOK, TariffList{Tariffs: ts})
	}
}

func (s *server) handleGetTariff() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t, err := s.store.GetTariff(r.Context(), chi.URLParam(r, "id"))
		if errors.Is(err, store.ErrNotFound) {
			err = session.Errorf(session.CodeNotFound, "no tariff %q", chi.URLParam(r, "id"))
		}
		if err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, t)
	}
}

// handlePutTariff: PUT /v1/tariffs/{id}. Sessions keep the tariff they were
// created with; new sessions get this one.
func (s *server) handlePutTariff() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		if !tariffIDRe.MatchString(id) {
			Error(w, r, invalid("id", "must be 1–64 letters, digits, '_' or '-'"))
			return
		}
		var req TariffRequest
		if err := decodeJSON(w, r, s.maxBody, &req); err != nil {
			Error(w, r, err)
			return
		}
		t := money.Tariff{ID: id, Periods: req.Periods}
		if err := s.eng.PutTariff(r.Context(), t); err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, t)
	}
}

// AnomalyList is the answer of GET /v1/anomalies.
type AnomalyList struct {
	Anomalies  []store.Anomaly `json:"anomalies"`
	NextCursor string          `json:"next_cursor"`
}

// handleListAnomalies: GET /v1/anomalies?limit=&cursor=, newest first.
func (s *server) handleListAnomalies() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, msg := parseLimit(q.Get("limit"))
		if msg != "" {
			Error(w, r, invalid("limit", msg))
			return
		}
		p, err := s.store.ListAnomalies(r.Context(), limit, q.Get("cursor"))
		if err != nil {
			Error(w, r, storeArg(err, "cursor"))
			return
		}
		if p.Anomalies == nil {
			p.Anomalies = []store.Anomaly{}
		}
		writeJSON(w, r, http.StatusOK, AnomalyList{Anomalies: p.Anomalies, NextCursor: p.NextCursor})
	}
}

// Stats is the answer of GET /v1/stats: the board's counters.
type Stats struct {
	// Sessions counts sessions per state; every state is present.
	Sessions map[fsm.State]int `json:"sessions"`
	Total    int               `json:"total"`
	// Active counts sessions occupying a connector.
	Active   int           `json:"active"`
	Outbox   OutboxStats   `json:"outbox"`
	Webhooks WebhookCounts `json:"webhooks"`
}

// OutboxStats describes the engine's pending work.
type OutboxStats struct {
	Pending   int        `json:"pending"`
	DueNow    int        `json:"due_now"`
	OldestDue *time.Time `json:"oldest_due"`
}

func (s *server) handleStats() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		counts, err := s.store.CountByState(r.Context())
		if err != nil {
			Error(w, r, err)
			return
		}
		ob, err := s.store.OutboxStats(r.Context(), s.now())
		if err != nil {
			Error(w, r, err)
			return
		}
		wh, err := s.store.DeliveryStats(r.Context())
		if err != nil {
			Error(w, r, err)
			return
		}
		st := Stats{Sessions: map[fsm.State]int{}, Outbox: OutboxStats{Pending: ob.Pending, DueNow: ob.DueNow},
			Webhooks: WebhookCounts{Pending: wh.Pending, Failed: wh.Failed}}
		if !ob.OldestDue.IsZero() {
			t := ob.OldestDue.UTC()
			st.Outbox.OldestDue = &t
		}
		for _, state := range fsm.States {
			n := counts[state]
			st.Sessions[state] = n
			st.Total += n
			if state.Active() {
				st.Active += n
			}
		}
		writeJSON(w, r, http.StatusOK, st)
	}
}
