package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/chargeflow/chargeflow/session"
)

// decodeJSON reads r's body into v: the Content-Type must be
// application/json (415), the body at most maxBody bytes (413), one JSON
// value with no unknown fields and nothing after it (400 invalid with a
// detail that says what is wrong, and a field message where one applies).
func decodeJSON(w http.ResponseWriter, r *http.Request, maxBody int64, v any) error {
	if err := requireJSON(r); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return withStatus(http.StatusRequestEntityTooLarge, session.CodeInvalid,
				fmt.Sprintf("the body is larger than %d bytes", maxBody))
		}
		return withStatus(http.StatusBadRequest, session.CodeInvalid, "the body could not be read")
	}
	return decodeBody(body, v)
}

// requireJSON checks the request's Content-Type is application/json (any
// parameters, e.g. charset=utf-8, are accepted).
func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return withStatus(http.StatusUnsupportedMediaType, session.CodeInvalid,
			"the body must be JSON, sent with Content-Type: application/json")
	}
	return nil
}

// decodeBody decodes one JSON value from body into v, strictly. It is the
// decoder the fuzz test drives.
func decodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return session.Errorf(session.CodeInvalid, "the body is empty: a JSON object is expected")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return session.Errorf(session.CodeInvalid, "malformed JSON: unexpected data after the JSON value")
	}
	return nil
}

// jsonError explains a decoding error to the client.
func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return session.Errorf(session.CodeInvalid, "malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return session.Errorf(session.CodeInvalid, "malformed JSON: the body ends too early")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return session.Errorf(session.CodeInvalid, "the body must be a JSON object, not a JSON %s", typ.Value)
		}
		return &session.Error{Code: session.CodeInvalid, Message: fmt.Sprintf("field %s has the wrong type", field),
			Fields: map[string]string{field: fmt.Sprintf("must be %s, not %s", jsonTypeName(typ.Type.Kind().String()), typ.Value)}}
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return &session.Error{Code: session.CodeInvalid, Message: fmt.Sprintf("unknown field %q", name),
			Fields: map[string]string{name: "unknown field"}}
	}
	return session.Errorf(session.CodeInvalid, "malformed JSON")
}

func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "another type"
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		Error(w, r, fmt.Errorf("encode response: %w", err))
		return
	}
	writeRaw(w, status, append(b, '\n'))
}

// writeRaw answers status with an already encoded JSON body.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// mustJSON encodes a value built by this package (a bug if it fails).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
