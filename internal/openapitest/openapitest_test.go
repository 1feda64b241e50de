package openapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

// The checker is tested against the API's real document.
func apiDocument(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// example returns a component example's value of the document.
func example(t *testing.T, doc []byte, name string) map[string]any {
	t.Helper()
	var d struct {
		Components struct {
			Examples map[string]struct {
				Value map[string]any `json:"value"`
			} `json:"examples"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	v, ok := d.Components.Examples[name]
	if !ok {
		t.Fatalf("no example %s", name)
	}
	return v.Value
}

type collector struct {
	mu   sync.Mutex
	errs []string
}

func (c *collector) Errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

func (c *collector) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.errs
	c.errs = nil
	return e
}

func TestCheckerCatchesWhatTheDocumentDoesNotSay(t *testing.T) {
	doc := apiDocument(t)
	session := example(t, doc, "sessionCharging")
	without := func(k string) map[string]any {
		m := map[string]any{}
		for kk, v := range session {
			if kk != k {
				m[kk] = v
			}
		}
		return m
	}
	with := func(k string, v any) map[string]any {
		m := without("")
		m[k] = v
		return m
	}
	problem := func(code string, status int) map[string]any {
		return map[string]any{"type": "https://chargeflow.dev/problems/" + code, "title": "t", "status": status,
			"detail": "d", "code": code, "instance": "/x"}
	}
	type answer struct {
		status int
		ctype  string
		body   any
	}
	cases := []struct {
		name             string
		method, path     string
		body             string
		header           map[string]string
		answer           answer
		wantViolationHas string // "" = no violation
	}{
		{"a documented answer", "GET", "/v1/sessions/S1", "", nil, answer{200, "application/json", session}, ""},
		{"a required field not sent", "GET", "/v1/sessions/S1", "", nil, answer{200, "application/json", without("state")}, "state"},
		{"a field sent but not documented", "GET", "/v1/sessions/S1", "", nil, answer{200, "application/json", with("tip", 1)}, "tip"},
		{"a wrong enum value", "GET", "/v1/sessions/S1", "", nil, answer{200, "application/json", with("state", "flying")}, "state"},
		{"an undocumented status", "GET", "/v1/sessions/S1", "", nil, answer{418, "application/problem+json", problem("invalid", 418)}, "418"},
		{"a problem with the wrong code for its status", "GET", "/v1/sessions/S1", "", nil,
			answer{404, "application/problem+json", problem("conflict", 404)}, "code"},
		{"a documented problem", "GET", "/v1/sessions/S1", "", nil, answer{404, "application/problem+json", problem("not_found", 404)}, ""},
		{"an undocumented request field accepted", "POST", "/v1/sessions",
			`{"charger_id":"CP1","connector":1,"openid":"o","max_amount_fen":1,"tip":5}`, map[string]string{"Idempotency-Key": "k"},
			answer{201, "application/json", session}, "refuses this request"},
		{"an undocumented request field refused", "POST", "/v1/sessions",
			`{"charger_id":"CP1","connector":1,"openid":"o","max_amount_fen":1,"tip":5}`, map[string]string{"Idempotency-Key": "k"},
			answer{400, "application/problem+json", problem("invalid", 400)}, ""},
		{"a required header missing yet accepted", "POST", "/v1/sessions",
			`{"charger_id":"CP1","connector":1,"openid":"o","max_amount_fen":1}`, nil,
			answer{201, "application/json", session}, "refuses this request"},
		{"an unknown path answered", "GET", "/v2/nothing", "", nil, answer{200, "application/json", map[string]any{}}, "not in the document"},
		{"an unknown path refused", "GET", "/v2/nothing", "", nil, answer{404, "application/problem+json", problem("not_found", 404)}, ""},
		{"an unknown method refused with plain text", "DELETE", "/v1/sessions/S1", "", nil, answer{405, "text/plain", "no"}, "problem+json"},
		{"an event stream's body is not read", "GET", "/v1/events", "", nil, answer{200, "text/event-stream", "data: {not json}\n\n"}, ""},
	}
	rep := &collector{}
	var current answer
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == DocumentPath {
			w.Header().Set("Content-Type", "application/json")
			w.Write(doc)
			return
		}
		mu.Lock()
		a := current
		mu.Unlock()
		w.Header().Set("Content-Type", a.ctype)
		w.Header().Set("X-Request-Id", "r1")
		if a.status == 201 {
			w.Header().Set("Location", "/v1/sessions/S1")
		}
		w.WriteHeader(a.status)
		if s, ok := a.body.(string); ok {
			io.WriteString(w, s)
			return
		}
		json.NewEncoder(w).Encode(a.body)
	})
	// The same cases through both wrappers: around the handler, and around
	// a client's transport.
	handlerSrv := httptest.NewServer(Handler(rep, h))
	defer handlerSrv.Close()
	plainSrv := httptest.NewServer(h)
	defer plainSrv.Close()
	for _, via := range []struct {
		name   string
		base   string
		client *http.Client
	}{
		{"Handler", handlerSrv.URL, http.DefaultClient},
		{"Transport", plainSrv.URL, &http.Client{Transport: Transport(rep, nil)}},
	} {
		for _, c := range cases {
			t.Run(via.name+"/"+c.name, func(t *testing.T) {
				mu.Lock()
				current = c.answer
				mu.Unlock()
				var body io.Reader
				if c.body != "" {
					body = strings.NewReader(c.body)
				}
				r, _ := http.NewRequest(c.method, via.base+c.path, body)
				r.Header.Set("Authorization", "Bearer tok")
				if c.body != "" {
					r.Header.Set("Content-Type", "application/json")
				}
				for k, v := range c.header {
					r.Header.Set(k, v)
				}
				resp, err := via.client.Do(r)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got := rep.take()
				switch {
				case c.wantViolationHas == "" && len(got) > 0:
					t.Fatalf("unexpected violation: %v", got)
				case c.wantViolationHas != "" && len(got) == 0:
					t.Fatalf("no violation, want one about %q", c.wantViolationHas)
				case c.wantViolationHas != "" && !strings.Contains(strings.Join(got, "\n"), c.wantViolationHas):
					t.Fatalf("violation %v does not mention %q", got, c.wantViolationHas)
				}
			})
		}
	}
}

func TestCheckWebhook(t *testing.T) {
	doc := apiDocument(t)
	c, err := New(doc)
	if err != nil {
		t.Fatal(err)
	}
	ev := example(t, doc, "eventSessionPaid")
	body, _ := json.Marshal(ev)
	h := http.Header{"Chargeflow-Signature": {"t=1796193006,v1=" + strings.Repeat("ab", 32)}}
	if err := c.CheckWebhook("session.paid", h, body); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckWebhook("session.charging", h, body); err == nil {
		t.Fatal("a session.paid event passed as session.charging")
	}
	if err := c.CheckWebhook("session.paid", http.Header{}, body); err == nil || !strings.Contains(err.Error(), "Chargeflow-Signature") {
		t.Fatalf("unsigned: %v", err)
	}
	if err := c.CheckWebhook("session.paid", http.Header{"Chargeflow-Signature": {"v1=zz"}}, body); err == nil {
		t.Fatal("a malformed signature header passed")
	}
	ev["extra"] = true
	body, _ = json.Marshal(ev)
	if err := c.CheckWebhook("session.paid", h, body); err == nil {
		t.Fatal("an undocumented envelope field passed")
	}
}
