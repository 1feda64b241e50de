package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/store"
)

// The Idempotency-Key rules (docs/api.md).
const (
	// MaxIdempotencyKey bounds an Idempotency-Key (as Stripe does).
	MaxIdempotencyKey = 255
	// DefaultIdempotencyTTL is how long a key is remembered.
	DefaultIdempotencyTTL = 24 * time.Hour
	// DefaultInFlightTimeout is how long a key's record without an answer
	// counts as "the first request is still being served". Older, it is
	// taken as abandoned (the process serving it died) and a retry runs the
	// creation again with the record's session id. It is longer than any
	// creation can take (the Pay Score client's attempts are bounded).
	DefaultInFlightTimeout = 2 * time.Minute
)

// Caller scopes an Idempotency-Key: the same key from two callers is two
// keys. Role and Name are the API caller's (e.g. "app", "miniprogram").
type Caller struct{ Role, Name string }

// CreateAnswer is the answer to a creation under an Idempotency-Key: the
// new session, or Pay Score's refusal, which is the key's answer for good.
type CreateAnswer struct {
	SessionID string
	// View is the session view as first answered (JSON and a newline); a
	// replay is that answer byte for byte.
	View []byte
	// Refused, when set, is the answer instead of a session: Pay Score
	// refused the order (CodePaymentRefused).
	Refused *Error
	// Replayed says the answer was given before to this key.
	Replayed bool
}

// The outcomes an idempotency record keeps in its Status: the HTTP statuses
// the API has always stored there, so records written by an earlier version
// replay the same.
const (
	idemInFlight  = 0   // the first request is being served
	idemCreated   = 201 // answered: the session view
	idemRefused   = 502 // answered: Pay Score's refusal
	idemTemporary = 503 // not an answer: run the creation again
	idemFailed    = 500 // not an answer: run the creation again
)

// rerun reports whether a stored status is "not an answer": a temporary
// failure that a retry of the key runs again.
func rerun(status int) bool { return status >= 500 && status != idemRefused }

// ValidIdempotencyKey checks an Idempotency-Key: 1 to MaxIdempotencyKey
// printable ASCII characters, or empty when it is not required.
func ValidIdempotencyKey(key string, required bool) error {
	switch {
	case key == "" && required:
		return &Error{Code: CodeInvalid, Message: "an Idempotency-Key header is required",
			Fields: map[string]string{"Idempotency-Key": "required: a unique string per intended session, reused on retries"}}
	case len(key) > MaxIdempotencyKey || !printableASCII(key):
		return Invalid(map[string]string{"Idempotency-Key": fmt.Sprintf("1 to %d printable ASCII characters", MaxIdempotencyKey)})
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CreateIdempotent runs Create under caller c's Idempotency-Key key (the
// store's IdemRecord, keyed by caller and key, holding the hash of the
// caller and the canonical request):
//   - a new key: the record is created first, then a session id is drawn
//     and saved in it BEFORE Pay Score is called, so every retry of this key
//     uses the same id, hence the same req_seq_id;
//   - the same key and request after an answer: that answer again
//     (Replayed), the session view byte for byte;
//   - the same key and another request: a CodeConflict error;
//   - the same key while the first request is being served: CodeConflict,
//     retry later;
//   - a client error found before anything was done (invalid, unknown
//     charger, connector offline or busy) is not kept: the record is
//     deleted so the client can fix things and retry;
//   - Pay Score's refusal is the key's answer (Refused);
//   - a temporary failure is kept as "not an answer": a retry runs the
//     creation again with the same session id (Create is idempotent per
//     id) until it gets a real answer;
//   - a record left without an answer longer than InFlightTimeout (its
//     process died) is treated like a temporary failure.
//
// An error is never the key's answer: it was not stored as one.
func (e *Engine) CreateIdempotent(ctx context.Context, c Caller, key string, req CreateRequest) (CreateAnswer, error) {
	if err := ValidIdempotencyKey(key, true); err != nil {
		return CreateAnswer{}, err
	}
	canonical, err := json.Marshal(req)
	if err != nil {
		return CreateAnswer{}, err
	}
	sum := sha256.Sum256([]byte("POST /v1/sessions\n" + c.Role + "\n" + c.Name + "\n" + string(canonical)))
	hash := hex.EncodeToString(sum[:])
	storeKey := "create-session\x00" + c.Role + "\x00" + c.Name + "\x00" + key

	rec, created, err := e.store.PutIdempotency(ctx, storeKey, hash, e.cfg.IdempotencyTTL)
	if err != nil {
		return CreateAnswer{}, fmt.Errorf("idempotency record: %w", err)
	}
	id := ""
	if !created {
		if rec.RequestHash != hash {
			return CreateAnswer{}, Errorf(CodeConflict, "this Idempotency-Key was used with another request body: use a new key for a new session")
		}
		switch {
		case rec.Status != idemInFlight && !rerun(rec.Status):
			return replay(rec), nil
		case rec.Status == idemInFlight && e.now().Sub(rec.ExpiresAt.Add(-e.cfg.IdempotencyTTL)) < e.cfg.InFlightTimeout &&
			!e.abandoned(rec.Body, e.now().Sub(rec.ExpiresAt.Add(-e.cfg.IdempotencyTTL))):
			return CreateAnswer{}, Errorf(CodeConflict, "a request with this Idempotency-Key is still being served: retry in a few seconds")
		}
		// A temporary failure, or an abandoned attempt: run it again with
		// the same id (a new one if the attempt died before saving one:
		// then nothing was sent to Pay Score under any id).
		id = rec.SessionID
	}
	if id == "" {
		id = NewID(e.now())
	}
	// Claim the record for this attempt and fix the id in it before any
	// payment call is made under that id.
	if err := e.store.SaveIdempotentResponse(ctx, storeKey, store.IdemRecord{RequestHash: hash, SessionID: id, Body: e.inFlightOwner()}); err != nil {
		return CreateAnswer{}, fmt.Errorf("idempotency record: %w", err)
	}
	save := func(status int, body []byte) {
		err := e.store.SaveIdempotentResponse(context.WithoutCancel(ctx), storeKey,
			store.IdemRecord{RequestHash: hash, SessionID: id, Status: status, Body: body})
		if err != nil {
			// Only means a retry runs the (idempotent) creation again.
			e.log.Warn("save idempotent answer", "session", id, "err", err)
		}
	}

	sess, cerr := e.Create(ctx, id, req)
	if cerr != nil {
		switch code := ErrorCode(cerr); code {
		case CodePaymentRefused:
			refused := &Error{Code: code, Message: ErrorMessage(cerr)}
			b, _ := json.Marshal(storedRefusal{Code: refused.Code, Detail: refused.Message})
			save(idemRefused, append(b, '\n'))
			return CreateAnswer{SessionID: id, Refused: refused}, nil
		case CodeInvalid, CodeNotFound, CodeConflict, CodeForbidden, CodeUnauthorized:
			// Found before anything was done: forget the key.
			if derr := e.store.DeleteIdempotency(context.WithoutCancel(ctx), storeKey); derr != nil {
				e.log.Warn("drop idempotency record", "err", derr)
			}
			return CreateAnswer{}, cerr
		case CodeUnavailable:
			save(idemTemporary, nil)
			return CreateAnswer{}, cerr
		default:
			save(idemFailed, nil)
			return CreateAnswer{}, cerr
		}
	}
	_, history, err := e.Get(ctx, id)
	if err != nil {
		// The session exists: a retry of the key will render it.
		save(idemTemporary, nil)
		return CreateAnswer{}, err
	}
	b, err := json.Marshal(NewView(sess, history))
	if err != nil {
		return CreateAnswer{}, err
	}
	b = append(b, '\n')
	save(idemCreated, b)
	return CreateAnswer{SessionID: id, View: b}, nil
}

// storedRefusal is a refusal kept as a key's answer. Its members are those
// of the problem document earlier versions stored, so those replay too.
type storedRefusal struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// replay is the answer a record keeps.
func replay(rec store.IdemRecord) CreateAnswer {
	a := CreateAnswer{SessionID: rec.SessionID, Replayed: true}
	if rec.Status != idemRefused {
		a.View = rec.Body
		return a
	}
	var r storedRefusal
	if json.Unmarshal(rec.Body, &r) != nil || r.Code == "" {
		r = storedRefusal{Code: CodePaymentRefused, Detail: "Pay Score refused the order"}
	}
	a.Refused = &Error{Code: r.Code, Message: r.Detail}
	return a
}
