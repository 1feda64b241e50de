// Package webhook verifies and reads the events chargeflow POSTs to the
// mini-program's backend (CHARGEFLOW_WEBHOOK_URL; docs/integration.md): one
// JSON event {"id","type","created_at","data"} per session transition and
// refund outcome, signed in the Chargeflow-Signature header
//
//	Chargeflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//
// with the shared secret CHARGEFLOW_WEBHOOK_SECRET. Deliveries are at least
// once and retried for 24 h: deduplicate on Event.ID, and answer 2xx only
// once the event is stored.
//
// The rules of stripe-go's webhook package, which this follows: cap the
// body, verify the signature over the raw bytes before parsing anything,
// compare in constant time, refuse an old timestamp (a replay), accept any of
// several v1 signatures (a secret being rotated), and report each failure as
// its own sentinel error. Sign is the other half, for tests of a receiver.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/client"
)

// SignatureHeader is the header that carries the signature.
const SignatureHeader = "Chargeflow-Signature"

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock when Verify is given a tolerance <= 0.
const DefaultTolerance = 5 * time.Minute

// MaxBodyBytes is the largest event Handler reads (a session view with a
// long history is a few KiB).
const MaxBodyBytes = 1 << 20

// The errors of Verify (compare with errors.Is).
var (
	// ErrNotSigned: no signature header, or not of the form t=…,v1=….
	ErrNotSigned = errors.New("webhook: not signed: no " + SignatureHeader + " of the form t=<unix>,v1=<hex>")
	// ErrNoValidSignature: no v1 signature matches the body and the secret
	// (a forged or altered event, or another secret).
	ErrNoValidSignature = errors.New("webhook: no valid signature")
	// ErrTooOld: the signature is valid but its timestamp is outside the
	// tolerance (a replayed event, or a clock far off).
	ErrTooOld = errors.New("webhook: the signature's timestamp is outside the tolerance")
)

// Event types: "session.<state>" for a transition into that state (creation
// included), and the outcomes of a refund.
const (
	TypeRefundSucceeded = "refund.succeeded"
	TypeRefundFailed    = "refund.failed"
)

// SessionType is the event type of a transition into state s
// ("session.charging", "session.paid", …).
func SessionType(s client.State) string { return "session." + string(s) }

// Event is one webhook event.
type Event struct {
	// ID is unique per event: the receiver's deduplication key.
	ID string `json:"id"`
	// Type is SessionType(state) or TypeRefundSucceeded / TypeRefundFailed.
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	// Data is the session view at the time of the event. Of two events of
	// one session, the one whose Data.Version is higher is the newer.
	Data client.Session `json:"data"`
}

// Sign returns the Chargeflow-Signature value for body sent at t with
// secret: what chargeflow sends, and what a receiver's tests send to it.
func Sign(secret string, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks that header (the Chargeflow-Signature value) signs body with
// secret and that its timestamp is within tolerance of now (DefaultTolerance
// when tolerance <= 0). It returns nil, ErrNotSigned, ErrNoValidSignature
// or ErrTooOld (possibly wrapped). The signature is checked first, so
// ErrTooOld means an authentic but stale event.
func Verify(secret, header string, body []byte, tolerance time.Duration) error {
	return VerifyAt(secret, header, body, tolerance, time.Now())
}

// VerifyAt is Verify with the receiver's clock given.
func VerifyAt(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, sigs, err := parseHeader(header)
	if err != nil {
		return err
	}
	want := mac(secret, ts, body)
	valid := false
	for _, s := range sigs {
		if hmac.Equal(s, want) { // constant time
			valid = true
		}
	}
	if !valid {
		return ErrNoValidSignature
	}
	unix, _ := strconv.ParseInt(ts, 10, 64)
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s ago, tolerance %s", ErrTooOld, d.Round(time.Second), tolerance)
	}
	return nil
}

// parseHeader reads t and every v1 of a signature header; other schemes
// (a future v2) are skipped.
func parseHeader(header string) (ts string, sigs [][]byte, err error) {
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			if _, perr := strconv.ParseInt(v, 10, 64); perr != nil {
				return "", nil, ErrNotSigned
			}
			ts = v
		case "v1":
			b, derr := hex.DecodeString(v)
			if derr != nil || len(b) != sha256.Size {
				continue // not one of ours: it cannot match
			}
			sigs = append(sigs, b)
		}
	}
	if ts == "" || !strings.Contains(header, "v1=") {
		return "", nil, ErrNotSigned
	}
	return ts, sigs, nil
}

// ConstructEvent verifies body (Verify) and only then parses it.
func ConstructEvent(secret, header string, body []byte, tolerance time.Duration) (Event, error) {
	if err := Verify(secret, header, body, tolerance); err != nil {
		return Event{}, err
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return Event{}, fmt.Errorf("webhook: decode event: %w", err)
	}
	if ev.ID == "" || ev.Type == "" {
		return Event{}, errors.New("webhook: decode event: no id or type")
	}
	return ev, nil
}
