package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/session"
)

var bodySeeds = []string{
	`{"charger_id":"CP1","connector":1,"openid":"o1","max_amount_fen":5000}`,
	`{"charger_id":"CP1","connector":2,"openid":"o2","max_amount_fen":1}`,
	`{"charger_id":"CP1","connector":1,"openid":"o1","max_amount_fen":5000}{}`,
	`{"charger_id":"CP1","connector":1.5,"openid":"o1","max_amount_fen":5000}`,
	`{"charger_id":"CP1","connector":1,"openid":"o1","max_amount_fen":99999999999999999999}`,
	`{"charger_id":"../../etc","connector":-1,"openid":"","max_amount_fen":0}`,
	`{"charger_id":"CP1","connector":1,"openid":"\ud800","max_amount_fen":5000,"x":1}`,
	`{"charger_id":null,"connector":null}`,
	`[]`, `null`, `""`, `0`, ``, `{`, `{"a":`, "\xff\xfe", `{"charger_id":"` + strings.Repeat("é", 100) + `"}`,
}

// FuzzCreateSessionBody: any body answers 201 or a 4xx problem, never a
// 5xx and never a panic, through the whole stack (decoder, idempotency,
// engine, Pay Score sandbox).
func FuzzCreateSessionBody(f *testing.F) {
	for _, s := range bodySeeds {
		f.Add([]byte(s))
	}
	st := newStack(f)
	st.setup(f, "CP1")
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := http.NewRequest("POST", st.srv.URL+"/v1/sessions", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+appToken)
		r.Header.Set("Idempotency-Key", newKey())
		resp, err := st.http.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%d with %q", resp.StatusCode, ct)
			}
		default:
			t.Fatalf("body %q: status %d", body, resp.StatusCode)
		}
	})
}

// FuzzDecodeBodies: the strict decoder never panics and either accepts a
// body or refuses it with a client error (code invalid).
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range append(bodySeeds, `{"connectors":[1,2],"tariff_id":"default","password":"12345678"}`,
		`{"periods":[{"from":"00:00","to":"24:00","energy_fen_per_kwh":40,"service_fen_per_kwh":30}]}`,
		`{"reason":"stuck"}`, `{"amount_fen":100,"reason":"x"}`, `{"periods":[{"from":1}]}`) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{&session.CreateRequest{}, &session.ChargerRequest{}, &TariffRequest{}, &CloseRequest{}, &RefundRequest{}}
		for _, v := range targets {
			err := decodeBody(body, v)
			if err == nil {
				continue
			}
			var e *session.Error
			if !errors.As(err, &e) || e.Code != session.CodeInvalid || e.Message == "" {
				t.Fatalf("%q into %T: %v", body, v, err)
			}
		}
	})
}
