package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/session"
)

// role is what a bearer token may do.
type role int

const (
	roleApp role = iota + 1
	roleOperator
)

func (r role) String() string {
	switch r {
	case roleApp:
		return "app"
	case roleOperator:
		return "operator"
	}
	return "none"
}

// caller is the authenticated client of a request.
type caller struct {
	role role
	name string
}

// source is who the caller is in a session's history: "app" for the app
// role, "operator:<name>" for an operator.
func (c caller) source() fsm.Source {
	if c.role == roleOperator {
		return fsm.Operator(c.name)
	}
	return fsm.ByApp
}

// reqInfo is the per-request record the middleware share: the request id,
// the request's logger, and what handlers learn (the caller, the session).
// The handler goroutine writes it; the access log reads it after the
// handler returned; mu guards the mutable fields anyway, because a panic
// or a timeout may end a request from another goroutine.
type reqInfo struct {
	id  string
	log *slog.Logger

	mu      sync.Mutex
	caller  caller
	session string
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	info, _ := ctx.Value(infoKey{}).(*reqInfo)
	return info
}

func requestIDFrom(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}

func callerFrom(ctx context.Context) caller {
	if info := infoFrom(ctx); info != nil {
		info.mu.Lock()
		defer info.mu.Unlock()
		return info.caller
	}
	return caller{}
}

// noteSession records the session a request is about, for the access log.
func noteSession(r *http.Request, id string) {
	if info := infoFrom(r.Context()); info != nil {
		info.mu.Lock()
		info.session = id
		info.mu.Unlock()
	}
}

// validRequestID accepts a client's X-Request-Id when it is short and plain,
// so it can go into logs as is.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestID gives every request an id (the client's X-Request-Id when it is
// plain, else a random one), echoes it in the response and puts it, with a
// logger carrying it, into the context.
func (s *server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		info := &reqInfo{id: id, log: s.log.With("request_id", id)}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
	})
}

// accessLog logs one line per request: method, path (never the query, which
// may carry an access token), status, size, duration, the caller and the
// session when known.
func (s *server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			info := infoFrom(r.Context())
			attrs := []any{"method", r.Method, "path", r.URL.Path, "status", ww.Status(), "bytes", ww.BytesWritten(),
				"duration", time.Since(start)}
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				attrs = append(attrs, "route", rc.RoutePattern())
			}
			log := s.log
			if info != nil {
				log = info.log
				info.mu.Lock()
				if info.caller.role != 0 {
					attrs = append(attrs, "role", info.caller.role.String(), "caller", info.caller.name)
				}
				if info.session != "" {
					attrs = append(attrs, "session", info.session)
				}
				info.mu.Unlock()
			}
			level := slog.LevelInfo
			if r.URL.Path == "/metrics" || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
				level = slog.LevelDebug // scraped every few seconds: noise at Info
			}
			log.Log(r.Context(), level, "http request", attrs...)
		}()
		next.ServeHTTP(ww, r)
	})
}

// recoverer turns a handler's panic into a logged 500 problem. A panic with
// http.ErrAbortHandler is net/http's way to abort a response: it goes on.
func (s *server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			loggerFrom(r).Error("panic serving request", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			Error(w, r, fmt.Errorf("panic: %v", v))
		}()
		next.ServeHTTP(w, r)
	})
}

// authOption tunes authenticate.
type authOption int

// allowQueryToken also accepts the token as ?access_token= (for EventSource).
const allowQueryToken authOption = 1

// authenticate requires a bearer token of a role that may do `need`: an
// operator may do everything an app may. Missing or unknown → 401 with
// WWW-Authenticate: Bearer; known but of the wrong role → 403.
func (s *server) authenticate(need role, opts ...authOption) func(http.Handler) http.Handler {
	queryToken := false
	for _, o := range opts {
		queryToken = queryToken || o == allowQueryToken
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := bearer(r)
			if !ok && queryToken {
				tok = r.URL.Query().Get("access_token")
				ok = tok != ""
			}
			if !ok {
				Error(w, r, session.Errorf(session.CodeUnauthorized, "an Authorization: Bearer <token> header is required"))
				return
			}
			c, found := s.lookup(tok)
			if !found {
				Error(w, r, session.Errorf(session.CodeUnauthorized, "unknown token"))
				return
			}
			if info := infoFrom(r.Context()); info != nil {
				info.mu.Lock()
				info.caller = c
				info.mu.Unlock()
			}
			if c.role < need {
				Error(w, r, session.Errorf(session.CodeForbidden, "this needs the %s role; the token is of the %s role", need, c.role))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// lookup finds the caller of tok. It compares the token's SHA-256 with
// every configured token's, always all of them, in constant time: the time
// taken tells nothing about which token, or which prefix, came close.
func (s *server) lookup(tok string) (caller, bool) {
	sum := sha256.Sum256([]byte(tok))
	var found caller
	match := 0
	for _, t := range s.tokens {
		eq := subtle.ConstantTimeCompare(sum[:], t.sum[:])
		if eq == 1 && t.role > found.role { // a token in both maps is an operator's
			found = caller{role: t.role, name: t.name}
		}
		match |= eq
	}
	return found, match == 1
}

// handleNotFound answers unknown paths with a problem.
func (s *server) handleNotFound() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		Error(w, r, withStatus(http.StatusNotFound, session.CodeNotFound, "no such path: "+r.URL.Path))
	}
}

// handleMethodNotAllowed answers a known path with another method with a
// 405 problem (code invalid) and the Allow header.
func (s *server) handleMethodNotAllowed() http.HandlerFunc {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range methods {
			if s.router.Match(chi.NewRouteContext(), m, r.URL.Path) {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
		}
		Error(w, r, withStatus(http.StatusMethodNotAllowed, session.CodeInvalid,
			fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)))
	}
}
