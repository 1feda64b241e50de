// Package openapitest holds tests to the API's OpenAPI document (served at
// GET /openapi.json; docs/api.md): every HTTP exchange a test makes goes
// through a Checker, which validates the request and the response against the
// document with libopenapi-validator (OpenAPI 3.1, JSON Schema 2020-12).
//
// The rules, for each exchange:
//   - the response must be documented for its operation: its status, its
//     content type, its body (schemas are closed, so a field sent but not
//     documented fails, and so does a required field not sent) and its
//     required headers;
//   - a request the document refuses (an undocumented field, a missing
//     required header, a wrong type, an unknown path or method) must be
//     refused by the service with a 4xx problem: accepting what the document
//     forbids is as much a lie as sending what it does not describe;
//   - an answer to an undocumented path or method is a 404 or 405 problem
//     document.
//
// Exempt, explicitly: the body of a text/event-stream response (the live
// feed never ends; its status and content type are still checked). Nothing
// else is.
//
// Wrap a server's handler with Handler, or a client's transport with
// Transport; both find the document at the server's own /openapi.json, so
// what is checked is what the service really publishes.
package openapitest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// Reporter receives violations; *testing.T, *testing.B and *testing.F are
// Reporters. Errorf may be called from any goroutine (a server's handler).
type Reporter interface {
	Errorf(format string, args ...any)
}

// Checker validates exchanges against one OpenAPI document. It is safe for
// concurrent use.
type Checker struct {
	model   *v3.Document
	problem *base.Schema

	mu      sync.Mutex // guards v and schemas (the validator's caches are not documented as concurrent)
	v       validator.Validator
	schemas schema_validation.SchemaValidator
}

// checkers caches a Checker per document: building one compiles every
// schema, which is slow under -race, and every stack of a test binary
// serves the same document.
var checkers sync.Map // [sha256.Size]byte → *Checker

// New builds a Checker for doc (the JSON or YAML of an OpenAPI 3 document).
// It fails when the document does not parse, does not build, or does not
// validate against the OpenAPI specification's own schema.
func New(doc []byte) (*Checker, error) {
	sum := sha256.Sum256(doc)
	if c, ok := checkers.Load(sum); ok {
		return c.(*Checker), nil
	}
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi: parse: %w", err)
	}
	m, err := d.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("openapi: build: %w", err)
	}
	v, errs := validator.NewValidator(d, config.WithFormatAssertions(), config.WithURLEncodedBodyValidation())
	if len(errs) > 0 {
		return nil, fmt.Errorf("openapi: validator: %w", errors.Join(errs...))
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("openapi: the document is not valid OpenAPI: %s", joinErrors(verrs))
	}
	c := &Checker{model: &m.Model, v: v, schemas: schema_validation.NewSchemaValidator(config.WithFormatAssertions())}
	if m.Model.Components != nil && m.Model.Components.Schemas != nil {
		if p := m.Model.Components.Schemas.GetOrZero("Problem"); p != nil {
			c.problem = p.Schema()
		}
	}
	if c.problem == nil {
		return nil, errors.New("openapi: the document has no components.schemas.Problem")
	}
	got, _ := checkers.LoadOrStore(sum, c)
	return got.(*Checker), nil
}

// Model is the document's model, for tests that look into the document.
func (c *Checker) Model() *v3.Document { return c.model }

// Check validates one exchange: req with the body it sent, resp with the
// body it received (ignored for an event stream). It returns nil, or an
// error listing every violation.
func (c *Checker) Check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	r.ContentLength = int64(len(reqBody))
	_, reqErrs := c.v.ValidateHttpRequestSync(r)

	stream := mediaType(resp.Header.Get("Content-Type")) == "text/event-stream"
	rs := *resp
	rs.Header = resp.Header.Clone()
	if stream {
		rs.Body = http.NoBody
	} else {
		rs.Body = io.NopCloser(bytes.NewReader(respBody))
	}
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	_, respErrs := c.v.ValidateHttpResponse(r, &rs)

	var problems []string
	if undocumented(reqErrs) || undocumented(respErrs) {
		// No operation to hold the answer to: it must be the service's own
		// 404/405 problem.
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			problems = append(problems, fmt.Sprintf("%s %s is not in the document, yet the service answered %d",
				req.Method, req.URL.Path, resp.StatusCode))
		}
		problems = append(problems, c.checkProblem(resp, respBody)...)
		return report(req, resp, respBody, problems)
	}
	if len(reqErrs) > 0 && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
		problems = append(problems, fmt.Sprintf("the document refuses this request (%s), yet the service answered %d",
			joinErrors(reqErrs), resp.StatusCode))
	}
	if len(respErrs) > 0 {
		problems = append(problems, "the response does not match the document: "+joinErrors(respErrs))
	}
	return report(req, resp, respBody, problems)
}

// checkProblem checks an answer outside the document is a problem document.
func (c *Checker) checkProblem(resp *http.Response, body []byte) []string {
	if ct := mediaType(resp.Header.Get("Content-Type")); ct != "application/problem+json" {
		return []string{fmt.Sprintf("Content-Type %q, want application/problem+json", ct)}
	}
	if ok, errs := c.schemas.ValidateSchemaBytes(c.problem, body); !ok {
		return []string{"not a Problem: " + joinErrors(errs)}
	}
	return nil
}

// CheckSchema validates a JSON value against components.schemas[name].
func (c *Checker) CheckSchema(name string, value []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.model.Components.Schemas.GetOrZero(name)
	if p == nil {
		return fmt.Errorf("openapi: no schema %q", name)
	}
	if ok, errs := c.schemas.ValidateSchemaBytes(p.Schema(), value); !ok {
		return fmt.Errorf("not a %s: %s", name, joinErrors(errs))
	}
	return nil
}

// CheckWebhook validates a webhook delivery (the document's webhooks[name],
// e.g. "session.paid"): its headers and its JSON body.
func (c *Checker) CheckWebhook(name string, header http.Header, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.model.Webhooks == nil {
		return errors.New("openapi: the document has no webhooks")
	}
	item := c.model.Webhooks.GetOrZero(name)
	if item == nil || item.Post == nil {
		return fmt.Errorf("openapi: no webhook %q", name)
	}
	op := item.Post
	var problems []string
	for _, p := range op.Parameters {
		if p.In != "header" {
			continue
		}
		v := header.Get(p.Name)
		if v == "" {
			if p.Required != nil && *p.Required {
				problems = append(problems, "missing header "+p.Name)
			}
			continue
		}
		if p.Schema != nil {
			if ok, errs := c.schemas.ValidateSchemaString(p.Schema.Schema(), fmt.Sprintf("%q", v)); !ok {
				problems = append(problems, fmt.Sprintf("header %s: %s", p.Name, joinErrors(errs)))
			}
		}
	}
	if op.RequestBody == nil || op.RequestBody.Content == nil {
		return fmt.Errorf("openapi: webhook %q has no body", name)
	}
	mt := op.RequestBody.Content.GetOrZero("application/json")
	if mt == nil || mt.Schema == nil {
		return fmt.Errorf("openapi: webhook %q has no JSON body", name)
	}
	if ok, errs := c.schemas.ValidateSchemaBytes(mt.Schema.Schema(), body); !ok {
		problems = append(problems, "body: "+joinErrors(errs))
	}
	if len(problems) > 0 {
		return fmt.Errorf("webhook %s: %s\nbody: %s", name, strings.Join(problems, "; "), snippet(body))
	}
	return nil
}

func undocumented(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if e.IsPathMissingError() || e.IsOperationMissingError() {
			return true
		}
	}
	return false
}

func report(req *http.Request, resp *http.Response, body []byte, problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("openapi: %s %s → %d: %s\nresponse body: %s", req.Method, req.URL.RequestURI(), resp.StatusCode,
		strings.Join(problems, "; "), snippet(body))
}

func joinErrors(errs []*verrors.ValidationError) string {
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		s := e.Message
		if e.Reason != "" {
			s += " (" + e.Reason + ")"
		}
		for _, f := range e.SchemaValidationErrors {
			s += " [" + f.Reason
			if f.FieldPath != "" {
				s += " at " + f.FieldPath
			}
			s += "]"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func snippet(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}
