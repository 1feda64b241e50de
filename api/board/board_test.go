package board

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func TestBoardHandlerServesPageAndAssets(t *testing.T) {
	h := Handler()
	for path, want := range map[string]string{
		"/":                   "text/html; charset=utf-8",
		"/assets/board.js":    "text/javascript; charset=utf-8",
		"/assets/format.js":   "text/javascript; charset=utf-8",
		"/assets/board.css":   "text/css; charset=utf-8",
		"/assets/favicon.svg": "image/svg+xml",
	} {
		res := get(t, h, path)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != want || len(body) == 0 {
			t.Errorf("GET %s: %d %q (%d bytes), want 200 %q", path, res.StatusCode, res.Header.Get("Content-Type"), len(body), want)
		}
		if res.Header.Get("Cache-Control") != "no-cache" || res.Header.Get("ETag") == "" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: caching headers %v", path, res.Header)
		}
		// A revalidation with the ETag is a 304 without a body.
		res = get(t, h, path, "If-None-Match", res.Header.Get("ETag"))
		if res.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, res.StatusCode)
		}
	}
	res := get(t, h, "/")
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("the page's CSP: %q", csp)
	}
	for _, path := range []string{"/assets/", "/assets/nope.js", "/assets/../board.go", "/index.html", "/static/index.html", "/v1/sessions"} {
		if res := get(t, h, path); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, res.StatusCode)
		}
	}
}

// The board must work offline: nothing it ships may load from elsewhere.
func TestBoardAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)https?://|["'(]//[a-z0-9]|\bcdn\b|@import|fonts\.googleapis`)
	n := 0
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		text := string(b)
		// The SVG's XML namespace is a name, not something fetched.
		text = strings.ReplaceAll(text, `xmlns="http://www.w3.org/2000/svg"`, "")
		if m := external.FindString(text); m != "" {
			t.Errorf("%s refers to something outside the service: %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("only %d embedded files", n)
	}
	// Every asset the page names is served.
	page, _ := static.ReadFile("static/index.html")
	h := Handler()
	for _, m := range regexp.MustCompile(`(?:src|href)="(/[^"]*)"`).FindAllStringSubmatch(string(page), -1) {
		if res := get(t, h, m[1]); res.StatusCode != http.StatusOK {
			t.Errorf("index.html names %s: %d", m[1], res.StatusCode)
		}
	}
	// …and every module a script imports.
	for _, js := range []string{"static/assets/board.js"} {
		b, _ := static.ReadFile(js)
		for _, m := range regexp.MustCompile(`from '\./([^']+)'`).FindAllStringSubmatch(string(b), -1) {
			if res := get(t, h, "/assets/"+m[1]); res.StatusCode != http.StatusOK {
				t.Errorf("%s imports %s: %d", js, m[1], res.StatusCode)
			}
		}
	}
}
