package api

import (
	"maps"
	"slices"

	"github.com/go-chi/chi/v5"
)

// routes lists every route of the API (docs/contract.md §3). The OpenAPI document
// (api/openapi.json) describes the same set; TestOpenAPIMatchesRoutes keeps
// them equal.
//
// The SSE stream is registered like any other route: no Timeout or Throttle
// middleware is installed anywhere, and the stream clears its own write
// deadline (a server-wide WriteTimeout would otherwise cut it).
func (s *server) routes() {
	r := s.router
	r.Use(s.requestID, s.accessLog, s.recoverer)
	r.NotFound(s.handleNotFound())
	r.MethodNotAllowed(s.handleMethodNotAllowed())

	// Operations.
	r.Get("/healthz", s.handleHealthz())
	r.Get("/readyz", s.handleReadyz())
	r.Get("/openapi.json", s.handleOpenAPI())

	// Payment provider: authenticated by Huifu's RSA signature, no token.
	r.Post("/notify/huifu/payscore", s.handleNotify())

	// The app role (operators may do all of it too).
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate(roleApp))
		r.Post("/v1/sessions", s.handleCreateSession())
		r.Get("/v1/sessions/{id}", s.handleGetSession())
		r.Post("/v1/sessions/{id}/stop", s.handleStopSession())
		r.Post("/v1/sessions/{id}/cancel", s.handleCancelSession())
	})

	// The operator role.
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate(roleOperator))
		r.Get("/v1/sessions", s.handleListSessions())
		r.Post("/v1/sessions/{id}/close", s.handleCloseSession())
		r.Post("/v1/sessions/{id}/deduct", s.handleDeductSession())
		r.Post("/v1/sessions/{id}/refund", s.handleRefundSession())
		r.Get("/v1/chargers", s.handleListChargers())
		r.Get("/v1/chargers/{id}", s.handleGetCharger())
		r.Put("/v1/chargers/{id}", s.handlePutCharger())
		r.Get("/v1/tariffs", s.handleListTariffs())
		r.Get("/v1/tariffs/{id}", s.handleGetTariff())
		r.Put("/v1/tariffs/{id}", s.handlePutTariff())
		r.Get("/v1/anomalies", s.handleListAnomalies())
		r.Get("/v1/reconciliations", s.handleListReconciliations())
		r.Get("/v1/reconciliations/{date}", s.handleGetReconciliation())
		r.Get("/v1/stats", s.handleStats())
		r.Get("/v1/webhooks/deliveries", s.handleListDeliveries())
		r.Post("/v1/webhooks/deliveries/{id}/retry", s.handleRetryDelivery())
	})

	// The operators' live feed: a long-lived stream (see events.go). It
	// also accepts the token as ?access_token= because a browser's
	// EventSource cannot send an Authorization header.
	r.With(s.authenticate(roleOperator, allowQueryToken)).Get("/v1/events", s.handleEvents())

	// Mount points added by cmd (metrics, the board): GET only.
	for _, p := range s.extraPaths() {
		r.Method("GET", p, s.extra[p])
	}
}

// extraPaths returns the mounted extra patterns, sorted.
func (s *server) extraPaths() []string {
	return slices.Sorted(maps.Keys(s.extra))
}
