package openapitest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// DocumentPath is where a chargeflow server publishes its document.
const DocumentPath = "/openapi.json"

// Handler wraps h so that every exchange it serves is checked against the
// document h itself serves at DocumentPath (fetched on the first request);
// violations go to rep. The body of an event stream is passed through as it
// is written, flushes included.
func Handler(rep Reporter, h http.Handler) http.Handler {
	var (
		once    sync.Once
		checker *Checker
		loadErr error
	)
	load := func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, DocumentPath, nil))
		if rec.Code != http.StatusOK {
			loadErr = fmt.Errorf("openapi: GET %s: %d %s", DocumentPath, rec.Code, rec.Body.Bytes())
			return
		}
		checker, loadErr = New(rec.Body.Bytes())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(load)
		if loadErr != nil {
			rep.Errorf("%v", loadErr)
			h.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			rep.Errorf("openapi: read the request body of %s %s: %v", r.Method, r.URL.Path, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rw := &recorder{ResponseWriter: w}
		h.ServeHTTP(rw, r)
		if !rw.wrote {
			rw.WriteHeader(http.StatusOK)
		}
		resp := &http.Response{StatusCode: rw.status, Header: rw.header, Request: r}
		if err := checker.Check(r, body, resp, rw.body.Bytes()); err != nil {
			rep.Errorf("%v", err)
		}
	})
}

// recorder passes a response through while keeping its status, its headers
// as sent and its body (not for an event stream).
type recorder struct {
	http.ResponseWriter
	wrote  bool
	status int
	header http.Header
	stream bool
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if r.wrote {
		return
	}
	r.wrote, r.status, r.header = true, status, r.ResponseWriter.Header().Clone()
	r.stream = mediaType(r.header.Get("Content-Type")) == "text/event-stream"
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wrote {
		if r.ResponseWriter.Header().Get("Content-Type") == "" {
			r.ResponseWriter.Header().Set("Content-Type", http.DetectContentType(p))
		}
		r.WriteHeader(http.StatusOK)
	}
	if !r.stream {
		r.body.Write(p)
	}
	return r.ResponseWriter.Write(p)
}

// Flush keeps event streams flowing.
func (r *recorder) Flush() {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (the live feed
// clears its write deadline).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Transport wraps base (http.DefaultTransport when nil) so that every
// exchange is checked against the document of the server it talks to,
// fetched from that server's DocumentPath on the first request to it (one
// document per host). Violations go to rep; the response is returned
// unchanged either way. An event stream's body is handed on unread.
func Transport(rep Reporter, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{rep: rep, base: base, docs: map[string]*Checker{}}
}

type transport struct {
	rep  Reporter
	base http.RoundTripper

	mu   sync.Mutex
	docs map[string]*Checker // by scheme://host
}

func (t *transport) checker(req *http.Request) (*Checker, error) {
	origin := req.URL.Scheme + "://" + req.URL.Host
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.docs[origin]; ok {
		return c, nil
	}
	dr, err := http.NewRequestWithContext(req.Context(), http.MethodGet, origin+DocumentPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := t.base.RoundTrip(dr)
	if err != nil {
		return nil, err // the server is not up: the request itself will say so
	}
	defer resp.Body.Close()
	doc, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("openapi: GET %s%s: %d %v", origin, DocumentPath, resp.StatusCode, err)
	}
	c, err := New(doc)
	if err != nil {
		return nil, err
	}
	t.docs[origin] = c
	return c, nil
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	c, cerr := t.checker(req)
	if cerr != nil {
		if isDocumentError(cerr) {
			t.rep.Errorf("%v", cerr)
		}
		return resp, nil
	}
	if mediaType(resp.Header.Get("Content-Type")) == "text/event-stream" {
		if err := c.Check(req, body, resp, nil); err != nil {
			t.rep.Errorf("%v", err)
		}
		return resp, nil
	}
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	if err := c.Check(req, body, resp, rb); err != nil {
		t.rep.Errorf("%v", err)
	}
	return resp, nil
}

// isDocumentError tells a document that is wrong (reported) from a server
// that could not be reached for it (the test sees that by itself).
func isDocumentError(err error) bool { return strings.HasPrefix(err.Error(), "openapi:") }
