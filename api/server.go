// Package api is chargeflow's HTTP API (docs/contract.md §3) on chi: the app's
// session calls, the operators' console calls and live feed, Huifu's
// notification endpoint, and the operations endpoints.
//
// Shape (Mat Ryer's "How I write HTTP services"): NewServer takes every
// dependency and returns one http.Handler; routes.go lists every route;
// handlers are made by methods returning http.HandlerFunc. Handlers only
// translate HTTP ⇄ domain: the session engine decides, the store is read
// for views and lists. Every error leaves through one function, Error, which
// maps the service's error vocabulary (session.Error codes) to an RFC 9457
// problem document; internal errors are logged with the request id and shown
// as "internal error".
package api

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// Defaults for the zero values of Deps.
const (
	DefaultMaxBody = 64 << 10
	// DefaultHeartbeat is the SSE comment interval that keeps proxies from
	// closing an idle stream.
	DefaultHeartbeat = 15 * time.Second
)

// Deps is everything the API needs. Engine, Store and Verifier are required.
type Deps struct {
	Engine   *session.Engine
	Store    store.Store
	Verifier payscore.Verifier // Huifu's public key: verifies notifications
	// AppTokens and OperatorTokens map a bearer token to the caller's name.
	// An operator's name appears in session history as operator:<name>.
	AppTokens, OperatorTokens map[string]string
	Logger                    *slog.Logger
	// Ready checks that the store, the broker and the payment configuration
	// are usable (GET /readyz). Nil: the store's Ping.
	Ready func(ctx context.Context) error
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxBody caps JSON request bodies and notification bodies (default 64 KiB).
	MaxBody int64
	// Heartbeat is the SSE heartbeat interval (default 15 s).
	Heartbeat time.Duration
	// Extra mounts handlers added by cmd, by chi pattern: "/metrics"
	// (Prometheus), "/" (the operators' board) and its assets. Nil handlers
	// are skipped. Mounted extras are listed in /openapi.json.
	Extra map[string]http.Handler
}

// server holds the dependencies; its methods make the handlers.
type server struct {
	eng      *session.Engine
	store    store.Store
	verifier payscore.Verifier
	log      *slog.Logger
	ready    func(ctx context.Context) error
	now      func() time.Time

	maxBody   int64
	heartbeat time.Duration
	extra     map[string]http.Handler

	tokens []token

	router  *chi.Mux
	openapi []byte // the OpenAPI document, rendered once
}

// token is one configured bearer token, kept as its SHA-256 so that every
// comparison is between 32-byte values (constant time, no length leak).
type token struct {
	sum  [sha256.Size]byte
	name string
	role role
}

// NewServer returns the API's handler. It panics if Engine, Store or
// Verifier is nil (a wiring bug in cmd, found at start-up).
func NewServer(d Deps) http.Handler {
	return newServer(d)
}

func newServer(d Deps) *server {
	if d.Engine == nil || d.Store == nil || d.Verifier == nil {
		panic("api.NewServer: Engine, Store and Verifier are required")
	}
	s := &server{eng: d.Engine, store: d.Store, verifier: d.Verifier, log: d.Logger, ready: d.Ready, now: d.Now,
		maxBody: d.MaxBody, heartbeat: d.Heartbeat}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ready == nil {
		s.ready = d.Store.Ping
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.heartbeat <= 0 {
		s.heartbeat = DefaultHeartbeat
	}
	s.extra = map[string]http.Handler{}
	for p, h := range d.Extra {
		if h != nil {
			s.extra[p] = h
		}
	}
	for tok, name := range d.AppTokens {
		if tok != "" {
			s.tokens = append(s.tokens, token{sum: sha256.Sum256([]byte(tok)), name: name, role: roleApp})
		}
	}
	for tok, name := range d.OperatorTokens {
		if tok != "" {
			s.tokens = append(s.tokens, token{sum: sha256.Sum256([]byte(tok)), name: name, role: roleOperator})
		}
	}
	s.router = chi.NewRouter()
	s.routes()
	doc, err := openAPIDocument(s.extraPaths())
	if err != nil {
		panic("api.NewServer: " + err.Error()) // the embedded document is broken: a build bug
	}
	s.openapi = doc
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }
