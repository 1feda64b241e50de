package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/client/webhook"
)

// Verifying one delivery by hand: the raw body first, then parse.
func ExampleVerify() {
	secret := "the CHARGEFLOW_WEBHOOK_SECRET"
	body := []byte(`{"id":"evt_1","type":"session.paid","created_at":"2026-12-02T07:05:20Z","data":{"id":"S1","state":"paid"}}`)
	header := webhook.Sign(secret, body, time.Now()) // what chargeflow sends

	err := webhook.Verify(secret, header, body, 5*time.Minute)
	fmt.Println("genuine:", err)

	tampered := []byte(strings.Replace(string(body), "paid", "refunded", 2))
	err = webhook.Verify(secret, header, tampered, 5*time.Minute)
	fmt.Println("tampered:", errors.Is(err, webhook.ErrNoValidSignature))

	err = webhook.Verify(secret, "", body, 5*time.Minute)
	fmt.Println("unsigned:", errors.Is(err, webhook.ErrNotSigned))

	old := webhook.Sign(secret, body, time.Now().Add(-time.Hour))
	err = webhook.Verify(secret, old, body, 5*time.Minute)
	fmt.Println("replayed an hour later:", errors.Is(err, webhook.ErrTooOld))
	// Output:
	// genuine: <nil>
	// tampered: true
	// unsigned: true
	// replayed an hour later: true
}

// A receiver: store the event (idempotently, by its id), answer 2xx, send
// the WeChat subscription message later.
func ExampleHandler() {
	seen := map[string]bool{} // a table with a unique id, in a real backend
	h := webhook.Handler("the CHARGEFLOW_WEBHOOK_SECRET", 5*time.Minute, func(ctx context.Context, ev webhook.Event) error {
		if seen[ev.ID] {
			return nil // delivered again: already handled
		}
		seen[ev.ID] = true
		switch ev.Type {
		case "session.charging":
			fmt.Println("notify", ev.Data.OpenID, ": charging started")
		case "session.paid":
			fmt.Printf("notify %s: paid ¥%d.%02d\n", ev.Data.OpenID, ev.Data.AmountFen/100, ev.Data.AmountFen%100)
		}
		return nil
	})

	// What chargeflow does, twice (deliveries are at least once).
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := []byte(`{"id":"evt_9","type":"session.paid","created_at":"2026-12-02T07:05:20Z",` +
		`"data":{"id":"S1","state":"paid","openid":"oUser","amount_fen":1230}}`)
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
		req.Header.Set(webhook.SignatureHeader, webhook.Sign("the CHARGEFLOW_WEBHOOK_SECRET", body, time.Now()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	// Output:
	// notify oUser: paid ¥12.30
	// 204
	// 204
}
