package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/client"
	"github.com/chargeflow/chargeflow/internal/openapitest"
)

const secret = "whsec_test"

var t0 = time.Unix(1796193006, 0)

func TestSignKnownVector(t *testing.T) {
	// HMAC-SHA256("whsec_test", `1796193006.{"id":"evt_1"}`), computed apart.
	want := "t=1796193006,v1=2e5917a13e0a8f6fcfe26b2388d6973fd6632737e14955f17222b456f0900d15"
	if got := Sign(secret, []byte(`{"id":"evt_1"}`), t0); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"session.paid"}`)
	good := Sign(secret, body, t0)
	other := Sign("another-secret", body, t0)
	cases := []struct {
		name   string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", good, body, t0, nil},
		{"valid, signed a little earlier", good, body, t0.Add(4 * time.Minute), nil},
		{"valid among several v1 (a rotated secret)", other + "," + strings.TrimPrefix(good, "t=1796193006,"), body, t0, nil},
		{"unknown schemes are skipped", good + ",v2=abc", body, t0, nil},
		{"body altered", good, []byte(`{"id":"evt_1","type":"session.refunded"}`), t0, ErrNoValidSignature},
		{"another secret", other, body, t0, ErrNoValidSignature},
		{"timestamp altered", strings.Replace(good, "t=1796193006", "t=1796193007", 1), body, t0, ErrNoValidSignature},
		{"v1 not hex", "t=1796193006,v1=zz", body, t0, ErrNoValidSignature},
		{"stale (a replay)", good, body, t0.Add(6 * time.Minute), ErrTooOld},
		{"from the future", good, body, t0.Add(-6 * time.Minute), ErrTooOld},
		{"no header", "", body, t0, ErrNotSigned},
		{"no v1", "t=1796193006", body, t0, ErrNotSigned},
		{"no t", strings.TrimPrefix(good, "t=1796193006,"), body, t0, ErrNotSigned},
		{"t not a number", strings.Replace(good, "t=1796193006", "t=soon", 1), body, t0, ErrNotSigned},
		{"garbage", "Bearer abc", body, t0, ErrNotSigned},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := VerifyAt(secret, c.header, c.body, 0, c.now)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("VerifyAt: %v, want %v", err, c.want)
			}
		})
	}
	// A forged signature of a stale body is a forgery, not a staleness.
	if err := VerifyAt(secret, other, body, time.Second, t0.Add(time.Hour)); !errors.Is(err, ErrNoValidSignature) {
		t.Fatalf("forged and stale: %v", err)
	}
	if err := Verify(secret, Sign(secret, body, time.Now()), body, time.Minute); err != nil {
		t.Fatalf("Verify now: %v", err)
	}
}

// apiDocument is the API's OpenAPI document, which documents the events.
func apiDocument(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEventsAsDocumented: the document's example events, signed by Sign,
// are valid deliveries of the document's webhooks (header pattern
// included), and parse into Event with nothing left over.
func TestEventsAsDocumented(t *testing.T) {
	doc := apiDocument(t)
	c, err := openapitest.New(doc)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Components struct {
			Examples map[string]struct {
				Value json.RawMessage `json:"value"`
			} `json:"examples"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, ex := range d.Components.Examples {
		if !strings.HasPrefix(name, "event") {
			continue
		}
		n++
		h := Sign(secret, ex.Value, time.Now())
		ev, err := ConstructEvent(secret, h, ex.Value, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.CheckWebhook(ev.Type, http.Header{SignatureHeader: {h}}, ex.Value); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(ex.Value)))
		dec.DisallowUnknownFields()
		var strict Event
		if err := dec.Decode(&strict); err != nil {
			t.Fatalf("%s: a documented field Event does not have: %v", name, err)
		}
		if ev.Data.ID == "" || SessionType(ev.Data.State) != ev.Type {
			t.Fatalf("%s: %+v", name, ev)
		}
	}
	if n < 2 {
		t.Fatalf("%d example events in the document", n)
	}
}

func TestHandler(t *testing.T) {
	var mu sync.Mutex
	var got []Event
	fail := false
	srv := httptest.NewServer(Handler(secret, time.Minute, func(_ context.Context, ev Event) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return errors.New("database down")
		}
		got = append(got, ev)
		return nil
	}))
	defer srv.Close()
	post := func(header string, body []byte) int {
		t.Helper()
		r, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
		if header != "" {
			r.Header.Set(SignatureHeader, header)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	body, _ := json.Marshal(Event{ID: "evt_1", Type: SessionType(client.StatePaid), CreatedAt: time.Now().UTC(),
		Data: client.Session{ID: "S1", State: client.StatePaid, AmountFen: 550}})
	if s := post(Sign(secret, body, time.Now()), body); s != http.StatusNoContent {
		t.Fatalf("signed: %d", s)
	}
	if s := post("", body); s != http.StatusUnauthorized {
		t.Fatalf("unsigned: %d", s)
	}
	if s := post(Sign("forger", body, time.Now()), body); s != http.StatusBadRequest {
		t.Fatalf("forged: %d", s)
	}
	if s := post(Sign(secret, body, time.Now().Add(-time.Hour)), body); s != http.StatusBadRequest {
		t.Fatalf("stale: %d", s)
	}
	junk := []byte(`not json`)
	if s := post(Sign(secret, junk, time.Now()), junk); s != http.StatusBadRequest {
		t.Fatalf("junk: %d", s)
	}
	big := []byte(strings.Repeat("x", MaxBodyBytes+1))
	if s := post(Sign(secret, big, time.Now()), big); s != http.StatusRequestEntityTooLarge {
		t.Fatalf("too large: %d", s)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if s := post(Sign(secret, body, time.Now()), body); s != http.StatusInternalServerError {
		t.Fatalf("handler failed: %d", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].ID != "evt_1" || got[0].Data.AmountFen != 550 {
		t.Fatalf("events %+v", got)
	}
}
