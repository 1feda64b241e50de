package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/chargeflow/chargeflow/internal/openapitest"

	"github.com/chargeflow/chargeflow/session"
)

// routesOf walks a server's router: "METHOD pattern" for every route.
func routesOf(t *testing.T, s *server) []string {
	t.Helper()
	var out []string
	err := chi.Walk(s.router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

var (
	publicRoutes = []string{"GET /healthz", "GET /readyz", "GET /openapi.json", "POST /notify/huifu/payscore"}
	appRoutes    = []string{"POST /v1/sessions", "GET /v1/sessions/{id}", "POST /v1/sessions/{id}/stop", "POST /v1/sessions/{id}/cancel"}
)

func TestAuthOnEveryRoute(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	for _, rt := range routesOf(t, st.api) {
		if slices.Contains(publicRoutes, rt) {
			continue
		}
		if !strings.HasPrefix(rt, "GET /v1/") && !strings.HasPrefix(rt, "POST /v1/") && !strings.HasPrefix(rt, "PUT /v1/") {
			t.Fatalf("route %s is neither public nor under /v1/: classify it in this test", rt)
		}
		method, pattern, _ := strings.Cut(rt, " ")
		path := strings.ReplaceAll(pattern, "{id}", "CP1")
		t.Run(rt, func(t *testing.T) {
			for _, h := range []map[string]string{nil, {"Authorization": "Bearer nope"}, {"Authorization": "Basic " + operatorToken},
				{"Authorization": "Bearer"}, {"Authorization": "Bearer " + operatorToken + "x"}} {
				r := st.do(t, req{method: method, path: path, header: h})
				p := r.problem(t)
				if r.status != http.StatusUnauthorized || p.Code != session.CodeUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("%v: %d %+v (WWW-Authenticate %q)", h, r.status, p, r.header.Get("WWW-Authenticate"))
				}
			}
			r := st.do(t, req{method: method, path: path, token: appToken})
			if slices.Contains(appRoutes, rt) {
				if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
					t.Fatalf("app token refused on an app route: %d %s", r.status, r.body)
				}
				return
			}
			if p := r.problem(t); r.status != http.StatusForbidden || p.Code != session.CodeForbidden {
				t.Fatalf("app token on an operator route: %d %+v", r.status, p)
			}
		})
	}
	// The stream also takes the token as ?access_token= (EventSource).
	if r := st.do(t, req{method: "GET", path: "/v1/events?access_token=" + appToken}); r.status != http.StatusForbidden {
		t.Fatalf("events with the app's query token: %d", r.status)
	}
	if r := st.do(t, req{method: "GET", path: "/v1/sessions?access_token=" + operatorToken}); r.status != http.StatusUnauthorized {
		t.Fatalf("query token outside the stream: %d", r.status)
	}
	// Tokens never reach the log.
	if logs := st.logText(); strings.Contains(logs, operatorToken) || strings.Contains(logs, appToken) {
		t.Fatalf("a token was logged")
	}
}

func TestRequestBodies(t *testing.T) {
	st := newStack(t)
	st.setup(t, "CP1")
	post := func(body, contentType string) response {
		h := map[string]string{"Idempotency-Key": newKey()}
		if contentType != "" {
			h["Content-Type"] = contentType
		}
		return st.do(t, req{method: "POST", path: "/v1/sessions", token: appToken, body: body, header: h})
	}
	cases := []struct {
		name, body, ct string
		status         int
		detail, field  string
	}{
		{"malformed", `{"charger_id":`, "", 400, "malformed JSON", ""},
		{"syntax", `{"charger_id" "CP1"}`, "", 400, "malformed JSON at byte", ""},
		{"unknown field", `{"charger_id":"CP1","connector":1,"openid":"o","max_amount_fen":1,"tip":5}`, "", 400, "unknown field", "tip"},
		{"trailing data", createBody("CP1", 1) + `{}`, "", 400, "after the JSON value", ""},
		{"trailing garbage", createBody("CP1", 1) + ` x`, "", 400, "after the JSON value", ""},
		{"wrong type", `{"charger_id":"CP1","connector":"one","openid":"o","max_amount_fen":1}`, "", 400, "wrong type", "connector"},
		{"not an object", `[1,2]`, "", 400, "JSON object", ""},
		{"empty", ` `, "", 400, "empty", ""},
		{"text/plain", createBody("CP1", 1), "text/plain", 415, "application/json", ""},
		{"form", createBody("CP1", 1), "application/x-www-form-urlencoded", 415, "application/json", ""},
		{"oversize", `{"openid":"` + strings.Repeat("x", DefaultMaxBody) + `"}`, "", 413, "larger than", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(c.body, c.ct)
			p := r.problem(t)
			if r.status != c.status || p.Code != session.CodeInvalid || !strings.Contains(p.Detail, c.detail) {
				t.Fatalf("%d %+v, want %d with %q", r.status, p, c.status, c.detail)
			}
			if c.field != "" && p.Errors[c.field] == "" {
				t.Fatalf("no message for %s: %+v", c.field, p.Errors)
			}
		})
	}
	// Charset parameters are fine.
	if r := post(createBody("CP1", 1), "application/json; charset=utf-8"); r.status != http.StatusCreated {
		t.Fatalf("charset: %d %s", r.status, r.body)
	}
	// Nothing was stored for the refused bodies.
	var l SessionList
	st.mustStatus(t, req{method: "GET", path: "/v1/sessions", token: operatorToken}, http.StatusOK).json(t, &l)
	if len(l.Sessions) != 1 {
		t.Fatalf("%d sessions", len(l.Sessions))
	}
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	st := newStack(t)
	r := st.do(t, req{method: "GET", path: "/v2/nothing"})
	if p := r.problem(t); r.status != http.StatusNotFound || p.Code != session.CodeNotFound || p.Instance != "/v2/nothing" {
		t.Fatalf("404: %d %+v", r.status, p)
	}
	r = st.do(t, req{method: "DELETE", path: "/v1/sessions/x", token: operatorToken})
	if p := r.problem(t); r.status != http.StatusMethodNotAllowed || p.Code != session.CodeInvalid {
		t.Fatalf("405: %d %+v", r.status, p)
	}
	if allow := r.header.Get("Allow"); allow != "GET" {
		t.Fatalf("Allow %q", allow)
	}
	if id := r.header.Get("X-Request-Id"); id == "" || !strings.Contains(string(r.body), id) {
		t.Fatalf("request id %q not in the problem %s", id, r.body)
	}
	// A client's plain request id is kept.
	r = st.do(t, req{method: "GET", path: "/healthz", header: map[string]string{"X-Request-Id": "abc-123"}})
	if r.header.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("request id %q", r.header.Get("X-Request-Id"))
	}
	r = st.do(t, req{method: "GET", path: "/healthz", header: map[string]string{"X-Request-Id": "bad id\twith spaces"}})
	if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("request id %q", got)
	}
}

func TestHealthReadyAndPanics(t *testing.T) {
	st := newStack(t)
	r := st.mustStatus(t, req{method: "GET", path: "/healthz"}, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "ok" {
		t.Fatalf("healthz %q", r.body)
	}
	st.mustStatus(t, req{method: "GET", path: "/readyz"}, http.StatusOK)

	notReady := st.deps(st.eng)
	notReady.Ready = readyErr(errors.New("redis at 10.0.0.7:6379: connection refused"))
	notReady.Extra = map[string]http.Handler{
		"/boom":    http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("secret internals") }),
		"/metrics": nil,
	}
	base := st.serve(notReady)
	r = st.do(t, req{base: base, method: "GET", path: "/readyz"})
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || p.Code != session.CodeUnavailable || strings.Contains(string(r.body), "10.0.0.7") {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	r = st.do(t, req{base: base, method: "GET", path: "/boom"})
	if p := r.problem(t); r.status != http.StatusInternalServerError || p.Code != session.CodeInternal || p.Detail != "internal error" ||
		strings.Contains(string(r.body), "secret") {
		t.Fatalf("panic: %d %s", r.status, r.body)
	}
	if logs := st.logText(); !strings.Contains(logs, "secret internals") || !strings.Contains(logs, "request_id="+r.header.Get("X-Request-Id")) {
		t.Fatalf("the panic is not logged with its request id")
	}
	// A nil extra is not mounted.
	st.mustStatus(t, req{base: base, method: "GET", path: "/metrics"}, http.StatusNotFound)
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	st := newStack(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	for name, extra := range map[string]map[string]http.Handler{
		"as cmd mounts": {"/metrics": ok, "/": ok, "/assets/*": ok},
		"no extras":     nil,
		"other extras":  {"/metrics": ok, "/boom": ok},
	} {
		t.Run(name, func(t *testing.T) {
			d := st.deps(st.eng)
			d.Extra = extra
			s := newServer(d)
			r := st.mustStatus(t, req{base: st.serveHandler(s), method: "GET", path: "/openapi.json"}, http.StatusOK)
			documented, err := openAPIRoutes(r.body)
			if err != nil {
				t.Fatal(err)
			}
			routed := routesOf(t, s)
			for _, rt := range routed {
				if !slices.Contains(documented, rt) {
					t.Errorf("route %s is not in the OpenAPI document", rt)
				}
			}
			for _, op := range documented {
				if !slices.Contains(routed, op) {
					t.Errorf("documented %s is not routed", op)
				}
			}
			if _, err := openapitest.New(r.body); err != nil {
				t.Fatal(err)
			}
			if name == "as cmd mounts" && !bytes.Equal(r.body, openAPIFile) {
				t.Errorf("with cmd's mounts the served document is not api/openapi.json as it is")
			}
		})
	}
}

func readyErr(err error) func(context.Context) error {
	return func(context.Context) error { return err }
}

func TestErrorMapping(t *testing.T) {
	// One map, every code; unknown errors are internal and never shown.
	for code, status := range map[string]int{"invalid": 400, "not_found": 404, "conflict": 409, "unauthorized": 401,
		"forbidden": 403, "unavailable": 503, "payment_refused": 502, "internal": 500} {
		if codeStatus[code] != status || codeTitle[code] == "" {
			t.Errorf("code %s → %d %q", code, codeStatus[code], codeTitle[code])
		}
	}
	if len(codeStatus) != 8 {
		t.Errorf("%d codes", len(codeStatus))
	}
	st := newStack(t)
	d := st.deps(st.eng)
	d.Extra = map[string]http.Handler{"/fail": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, r, fmt.Errorf("dial tcp 10.1.2.3:5432: %w", errors.New("refused")))
	})}
	r := st.do(t, req{base: st.serve(d), method: "GET", path: "/fail"})
	if p := r.problem(t); r.status != 500 || p.Detail != "internal error" || strings.Contains(string(r.body), "10.1.2.3") {
		t.Fatalf("internal: %d %s", r.status, r.body)
	}
}
