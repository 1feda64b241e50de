package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// Handler returns the HTTP handler of a receiver: it reads at most
// MaxBodyBytes, verifies the signature over the raw body (ConstructEvent,
// with tolerance), then calls handle. Its answers, which chargeflow acts on:
//   - 204 when handle returned nil: delivered, never sent again;
//   - 401 for an unsigned event, 400 for a forged or stale one or one that
//     does not parse (handle is not called; chargeflow retries any non-2xx,
//     which a forger cannot use);
//   - 413 for a body over MaxBodyBytes;
//   - 500 when handle failed: chargeflow sends the event again later, so
//     handle must be idempotent on Event.ID (it may see an event twice
//     anyway: deliveries are at least once).
//
// handle runs on the request's goroutine with the request's context; keep it
// short (store the event, answer, work later): chargeflow waits 10 s.
func Handler(secret string, tolerance time.Duration, handle func(ctx context.Context, ev Event) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		ev, err := ConstructEvent(secret, r.Header.Get(SignatureHeader), body, tolerance)
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, ErrNotSigned) {
				status = http.StatusUnauthorized
			}
			http.Error(w, err.Error(), status)
			return
		}
		if err := handle(r.Context(), ev); err != nil {
			http.Error(w, "not processed; send it again", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
