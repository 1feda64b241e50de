package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// openAPIFile is the API's OpenAPI 3.1 document (docs/api.md), kept as the
// file api/openapi.json rather than built in Go: it is the artefact a client
// generator, a linter (make lint-openapi) and a reviewer read, and the one
// every exchange of the tests is checked against (internal/openapitest).
// Tests keep it equal to the router and to the code's enums.
//
//go:embed openapi.json
var openAPIFile []byte

// mountKey marks a path item the document describes but cmd mounts
// (Deps.Extra): its value is the chi pattern. Such an item is served only
// when that pattern is mounted.
const mountKey = "x-chargeflow-mount"

// openAPIDocument renders the document served by a server whose mounted
// extra patterns are extra: the file itself when extra is exactly what the
// file describes as mounted (chargeflow serve), else the file without the
// mount points not mounted, plus a plain entry for each mounted pattern the
// file does not describe.
func openAPIDocument(extra []string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIFile, &doc); err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	paths, _ := doc["paths"].(map[string]any)
	described := map[string]string{} // chi pattern → document path
	for p, item := range paths {
		if m, ok := item.(map[string]any)[mountKey].(string); ok {
			described[m] = p
		}
	}
	if slices.Equal(slices.Sorted(maps.Keys(described)), extra) {
		return openAPIFile, nil
	}
	for m, p := range described {
		if !slices.Contains(extra, m) {
			delete(paths, p)
		}
	}
	for _, m := range extra {
		if _, ok := described[m]; ok {
			continue
		}
		paths[m] = map[string]any{mountKey: m, "get": map[string]any{
			"operationId": "getMounted" + operationSuffix(m),
			"summary":     "Mounted by the service: " + m,
			"tags":        []string{"operations"},
			"security":    []any{},
			"responses": map[string]any{
				"200":     map[string]any{"description": "see the service's documentation"},
				"default": map[string]any{"$ref": "#/components/responses/Internal"},
			},
		}}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// openAPIRoutes returns "METHOD chi-pattern" for every operation of a
// rendered document (mount points by their pattern).
func openAPIRoutes(doc []byte) ([]string, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	var out []string
	for p, item := range d.Paths {
		pattern := p
		if raw, ok := item[mountKey]; ok {
			if err := json.Unmarshal(raw, &pattern); err != nil {
				return nil, fmt.Errorf("%s %s: %w", p, mountKey, err)
			}
		}
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				out = append(out, strings.ToUpper(method)+" "+pattern)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// operationSuffix turns a pattern into an identifier part ("/boom" → "Boom").
func operationSuffix(p string) string {
	var b strings.Builder
	up := true
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9':
			if up && r >= 'a' && r <= 'z' {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			up = false
		default:
			up = true
		}
	}
	if b.Len() == 0 {
		return "Root"
	}
	return b.String()
}
