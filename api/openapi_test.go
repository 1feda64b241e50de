package api

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/openapitest"
)

// openAPIJSON is api/openapi.json decoded, for tests that read it.
type openAPIJSON struct {
	Info struct {
		License map[string]string `json:"license"`
	} `json:"info"`
	Servers    []map[string]any                      `json:"servers"`
	Tags       []struct{ Name, Description string }  `json:"tags"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Webhooks   map[string]map[string]json.RawMessage `json:"webhooks"`
	Components struct {
		Schemas   map[string]json.RawMessage `json:"schemas"`
		Responses map[string]struct {
			Content map[string]struct {
				Schema struct {
					Properties struct {
						Code   struct{ Const string } `json:"code"`
						Status struct{ Const int }    `json:"status"`
					} `json:"properties"`
				} `json:"schema"`
			} `json:"content"`
		} `json:"responses"`
		Examples map[string]struct {
			Value json.RawMessage `json:"value"`
		} `json:"examples"`
	} `json:"components"`
}

func readOpenAPI(t *testing.T) openAPIJSON {
	t.Helper()
	var d openAPIJSON
	if err := json.Unmarshal(openAPIFile, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func enumOf(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var s struct{ Enum []string }
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s.Enum
}

// TestOpenAPIValid: the document is valid OpenAPI 3.1 for
// libopenapi-validator (the library every exchange is checked with).
func TestOpenAPIValid(t *testing.T) {
	if _, err := openapitest.New(openAPIFile); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAPIEnumsMatchTheCode: the names the document lists are the code's.
func TestOpenAPIEnumsMatchTheCode(t *testing.T) {
	d := readOpenAPI(t)
	if got, want := enumOf(t, d.Components.Schemas["State"]), names(fsm.States); !slices.Equal(got, want) {
		t.Errorf("State enum %v, fsm.States %v", got, want)
	}
	if got, want := enumOf(t, d.Components.Schemas["Flag"]), names(fsm.Flags); !slices.Equal(got, want) {
		t.Errorf("Flag enum %v, fsm.Flags %v", got, want)
	}
	codes := enumOf(t, d.Components.Schemas["ProblemCode"])
	for code := range codeStatus {
		if !slices.Contains(codes, code) {
			t.Errorf("ProblemCode misses %s", code)
		}
	}
	if len(codes) != len(codeStatus) {
		t.Errorf("ProblemCode %v, codes %v", codes, codeStatus)
	}
	want := []string{}
	for _, s := range fsm.States {
		want = append(want, "session."+string(s))
	}
	want = append(want, "refund.succeeded", "refund.failed")
	if got := enumOf(t, d.Components.Schemas["EventType"]); !slices.Equal(got, want) {
		t.Errorf("EventType enum %v, want %v", got, want)
	}
	for _, w := range want {
		if _, ok := d.Webhooks[w]["post"]; !ok {
			t.Errorf("no webhook %s", w)
		}
	}
	// Each problem response names the code its status comes from.
	for name, r := range d.Components.Responses {
		for ct, c := range r.Content {
			p := c.Schema.Properties
			if ct != "application/problem+json" || p.Code.Const == "" {
				t.Errorf("response %s: %s without a code", name, ct)
				continue
			}
			status := codeStatus[p.Code.Const]
			if p.Status.Const != status && !(p.Code.Const == "invalid" && (p.Status.Const == 413 || p.Status.Const == 415)) {
				t.Errorf("response %s: code %s with status %d, the code's status is %d", name, p.Code.Const, p.Status.Const, status)
			}
		}
	}
	if !strings.Contains(string(d.Components.Schemas["Problem"]), ProblemTypeBase) {
		t.Errorf("Problem schema does not name %s", ProblemTypeBase)
	}
}

// TestOpenAPIShape: what API consumers' tooling expects of every operation
// (docs/api.md): an operationId (unique), a summary, known tags with
// descriptions, servers and a license; the examples are true to their
// schemas.
func TestOpenAPIShape(t *testing.T) {
	d := readOpenAPI(t)
	if len(d.Servers) == 0 || d.Info.License["name"] == "" {
		t.Errorf("servers %v, license %v", d.Servers, d.Info.License)
	}
	tags := map[string]bool{}
	for _, tag := range d.Tags {
		if tag.Description == "" {
			t.Errorf("tag %s has no description", tag.Name)
		}
		tags[tag.Name] = true
	}
	ids := map[string]string{}
	check := func(where string, ops map[string]json.RawMessage) {
		for method, raw := range ops {
			if strings.HasPrefix(method, "x-") {
				continue
			}
			var o struct {
				OperationID string   `json:"operationId"`
				Summary     string   `json:"summary"`
				Tags        []string `json:"tags"`
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatal(err)
			}
			at := method + " " + where
			if o.OperationID == "" || o.Summary == "" || len(o.Tags) == 0 {
				t.Errorf("%s: operationId %q, summary %q, tags %v", at, o.OperationID, o.Summary, o.Tags)
			}
			if prev, dup := ids[o.OperationID]; dup {
				t.Errorf("operationId %s on %s and %s", o.OperationID, prev, at)
			}
			ids[o.OperationID] = at
			for _, tag := range o.Tags {
				if !tags[tag] {
					t.Errorf("%s: tag %s is not declared", at, tag)
				}
			}
		}
	}
	for p, ops := range d.Paths {
		check(p, ops)
	}
	for w, ops := range d.Webhooks {
		check("webhook "+w, ops)
	}

	c, err := openapitest.New(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, ex := range d.Components.Examples {
		var schema string
		switch {
		case strings.HasPrefix(name, "session"):
			schema = "Session"
		case strings.HasPrefix(name, "event"):
			schema = "Event"
		case name == "createRequest":
			schema = "CreateSessionRequest"
		default:
			schema = "Problem"
		}
		if err := c.CheckSchema(schema, ex.Value); err != nil {
			t.Errorf("example %s: %v", name, err)
		}
	}
	if len(d.Components.Examples) < 10 {
		t.Errorf("%d examples", len(d.Components.Examples))
	}
}

func names[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}
