// Package board is the operators' live board (docs/contract.md §3, `GET /`): one
// page of plain HTML, CSS and JavaScript modules embedded in the binary, with
// no build step and nothing fetched from anywhere but this service, so it
// works offline. The page reads the operator API with the operator's bearer
// token (entered once, kept in the tab's sessionStorage) and follows the live
// feed `GET /v1/events?access_token=…` with an EventSource.
//
// cmd mounts Handler twice through api.Deps.Extra: at "/" (the page) and at
// "/assets/*" (its scripts, style sheet and icon).
package board

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Patterns are the chi patterns Handler must be mounted at.
var Patterns = []string{"/", "/assets/*"}

// contentTypes are the types of the files the board ships; a file of any
// other kind is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// csp allows nothing but this origin: the board loads no remote script,
// style, font or image, and talks only to the API it is served by.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type file struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves the board: index.html at "/" and the files under
// "/assets/". Every answer carries an ETag and `Cache-Control: no-cache`, so
// a browser revalidates (a cheap 304) and picks up a new release at once.
func Handler() http.Handler {
	files := map[string]file{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		files[strings.TrimPrefix(p, "static")] = file{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("board: embedded files: " + err.Error()) // a build bug
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path
		if name == "/" {
			name = "/index.html"
		} else if !strings.HasPrefix(name, "/assets/") {
			http.NotFound(w, r)
			return
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if name == "/index.html" {
			h.Set("Content-Security-Policy", csp)
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("X-Frame-Options", "DENY")
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}
