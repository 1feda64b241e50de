package client_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/client"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

var bg = context.Background()

func newClient(t *testing.T, st *stack, tr http.RoundTripper, token string) *client.Client {
	t.Helper()
	c, err := client.New(st.url, token, client.Options{HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func req(cp string, conn int) client.CreateSessionRequest {
	return client.CreateSessionRequest{ChargerID: cp, Connector: conn, OpenID: "oUser_" + cp, MaxAmountFen: 5000}
}

func TestCreateGetCancelStop(t *testing.T) {
	st := newStack(t)
	tr := newCounting(t)
	c := newClient(t, st, tr, appToken)

	s, err := c.CreateSession(bg, client.NewIdempotencyKey(), req("CP1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if s.State != client.StateCreated || s.Package == "" || s.OutOrderNo == "" || len(s.History) != 1 || s.CreatedAt == nil {
		t.Fatalf("created %+v", s)
	}
	got, err := c.GetSession(bg, s.ID)
	if err != nil || got.ID != s.ID || got.State != client.StateCreated || got.Tariff.ID != "default" {
		t.Fatalf("get: %+v %v", got, err)
	}
	// Stop before charging is a conflict, typed.
	_, err = c.StopSession(bg, s.ID)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusConflict || e.Code != client.CodeConflict || e.Detail == "" || e.RequestID == "" {
		t.Fatalf("stop before charging: %#v", err)
	}
	got, err = c.CancelSession(bg, s.ID)
	if err != nil || got.State != client.StateCancelled || got.CancelReason != "user_cancelled" || !got.State.Final() {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	if got, err = c.CancelSession(bg, s.ID); err != nil || got.State != client.StateCancelled {
		t.Fatalf("cancel again: %+v %v", got, err)
	}

	// A session that charges stops.
	s, err = c.CreateSession(bg, client.NewIdempotencyKey(), req("CP1", 2))
	if err != nil {
		t.Fatal(err)
	}
	st.charging(s.ID)
	got, err = c.GetSession(bg, s.ID)
	if err != nil || got.State != client.StateCharging || got.Live == nil || got.StartedAt == nil {
		t.Fatalf("charging: %+v %v", got, err)
	}
	if _, err := c.CancelSession(bg, s.ID); client.ErrorCode(err) != client.CodeConflict {
		t.Fatalf("cancel while charging: %v", err)
	}
	got, err = c.StopSession(bg, s.ID)
	if err != nil || got.State != client.StateStopping {
		t.Fatalf("stop: %+v %v", got, err)
	}
	if n := tr.requests.Load(); n != 9 {
		t.Fatalf("%d requests for 9 calls: something was retried", n)
	}
}

func TestErrorsAreTypedAndNotRetried(t *testing.T) {
	st := newStack(t)
	tr := newCounting(t)
	c := newClient(t, st, tr, appToken)
	if _, err := c.CreateSession(bg, client.NewIdempotencyKey(), req("CP1", 1)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		call   func() error
		status int
		code   string
		field  string
	}{
		{"unknown charger", func() error { _, err := c.CreateSession(bg, client.NewIdempotencyKey(), req("NOPE", 1)); return err },
			404, client.CodeNotFound, ""},
		{"busy connector", func() error { _, err := c.CreateSession(bg, client.NewIdempotencyKey(), req("CP1", 1)); return err },
			409, client.CodeConflict, ""},
		{"invalid fields", func() error {
			_, err := c.CreateSession(bg, client.NewIdempotencyKey(), client.CreateSessionRequest{ChargerID: "CP1", Connector: 1})
			return err
		}, 400, client.CodeInvalid, "openid"},
		{"unknown session", func() error { _, err := c.GetSession(bg, "no-such-session"); return err }, 404, client.CodeNotFound, ""},
		{"a wrong token", func() error {
			_, err := newClient(t, st, tr, "wrong").GetSession(bg, "x")
			return err
		}, 401, client.CodeUnauthorized, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tr.requests.Load()
			err := tc.call()
			var e *client.Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || !strings.Contains(err.Error(), tc.code) {
				t.Fatalf("%#v, want %d %s", err, tc.status, tc.code)
			}
			if tc.field != "" && e.Errors[tc.field] == "" {
				t.Fatalf("no message for %s: %v", tc.field, e.Errors)
			}
			if n := tr.requests.Load() - before; n != 1 {
				t.Fatalf("%d attempts for a definite answer", n)
			}
		})
	}
	if _, err := c.CreateSession(bg, "", req("CP2", 1)); err == nil {
		t.Fatal("a creation without an idempotency key")
	}
}

// TestCreateRetriesWithTheSameKey: a 503 (Pay Score executed the create but
// its reply was lost) and a reply lost on the way back to the client are
// retried with the same Idempotency-Key: one session, one Pay Score order.
func TestCreateRetriesWithTheSameKey(t *testing.T) {
	st := newStack(t)
	tr := newCounting(t)
	c := newClient(t, st, tr, appToken)

	if err := st.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultExecuted5xx); err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSession(bg, client.NewIdempotencyKey(), req("CP1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if n := tr.requests.Load(); n != 2 {
		t.Fatalf("%d attempts, want a 503 then a 201", n)
	}
	if n := len(st.sb.Orders()); n != 1 {
		t.Fatalf("%d Pay Score orders", n)
	}

	// The service creates the session, the answer never reaches the client:
	// the retry gets the very same session back.
	tr.requests.Store(0)
	tr.lose.Store(1)
	key := client.NewIdempotencyKey()
	s2, err := c.CreateSession(bg, key, req("CP1", 2))
	if err != nil {
		t.Fatal(err)
	}
	if n := tr.requests.Load(); n != 2 || s2.ID == s.ID {
		t.Fatalf("%d attempts, session %s", n, s2.ID)
	}
	if n := len(st.sb.Orders()); n != 2 {
		t.Fatalf("%d Pay Score orders after a lost reply", n)
	}
	again, err := c.CreateSession(bg, key, req("CP1", 2))
	if err != nil || again.ID != s2.ID {
		t.Fatalf("same key later: %+v %v", again, err)
	}

	// Network errors until the attempts are spent: the transport's error.
	tr.requests.Store(0)
	tr.lose.Store(100)
	_, err = c.GetSession(bg, s.ID)
	if !errors.Is(err, errLost) || tr.requests.Load() != client.DefaultMaxAttempts {
		t.Fatalf("%v after %d attempts", err, tr.requests.Load())
	}
	tr.lose.Store(0)

	// A cancelled context stops the retries at once.
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, err := c.GetSession(ctx, s.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNew(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := client.New(u, "tok", client.Options{}); err == nil {
			t.Errorf("base URL %q accepted", u)
		}
	}
	if _, err := client.New("http://localhost:8080", "", client.Options{}); err == nil {
		t.Error("no token accepted")
	}
	if a, b := client.NewIdempotencyKey(), client.NewIdempotencyKey(); a == b || len(a) != 32 {
		t.Errorf("keys %q %q", a, b)
	}
}

// TestSessionTypeIsTheDocument: client.Session has exactly the fields of
// the document's session view, so nothing the API sends is dropped and
// nothing is read that it does not send.
func TestSessionTypeIsTheDocument(t *testing.T) {
	b, err := os.ReadFile("../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	decode(t, b, &doc)
	for schema, typ := range map[string]reflect.Type{
		"SessionFields": reflect.TypeFor[client.Session](), "Line": reflect.TypeFor[client.Line](),
		"Tariff": reflect.TypeFor[client.Tariff](), "Period": reflect.TypeFor[client.Period](),
		"Payment": reflect.TypeFor[client.Payment](), "Refund": reflect.TypeFor[client.Refund](),
		"HistoryEntry": reflect.TypeFor[client.HistoryEntry](), "Live": reflect.TypeFor[client.Live](),
		"Timer": reflect.TypeFor[client.Timer](), "CreateSessionRequest": reflect.TypeFor[client.CreateSessionRequest](),
		"Problem": reflect.TypeFor[client.Error](),
	} {
		var fields []string
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			fields = append(fields, name)
		}
		var props []string
		for p := range doc.Components.Schemas[schema].Properties {
			props = append(props, p)
		}
		slices.Sort(fields)
		slices.Sort(props)
		if !slices.Equal(fields, props) {
			t.Errorf("%s: Go fields %v, document properties %v", typ.Name(), fields, props)
		}
	}
}
