package charger

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// verifier checks a charger's password against the registry's hash without
// paying the slow hash on every connect: charger passwords are random machine
// secrets, so a credential verified once against a given hash is remembered
// (as a SHA-256 of hash and password, never the password) and the next
// connect with the same password and the same registry hash costs one
// SHA-256. A changed hash (a new password registered) misses the cache and
// is verified the slow way. The slow checks run at most slots at a time, so
// a reconnect storm queues instead of starving the broker's other work.
//
// When the registry cannot be asked (a slow or failing store), a charger
// whose password was verified before is admitted on the last hash it was
// verified against: refusing it would only make it reconnect again and feed
// the storm (docs/operations.md "Reconnect storms"). An unknown charger or a
// wrong password is still refused.
type verifier struct {
	creds Credentials
	slow  chan struct{} // slots for the slow hash

	slowChecks atomic.Int64 // how many passwords were checked the slow way

	mu   sync.Mutex
	seen map[string]verified // charger id → last verified credential
}

type verified struct {
	hash string
	sum  [32]byte // sha256(hash, 0, password)
}

// How long one registry read may take, and how long a connect may wait for
// a slow-hash slot (the charger's CONNECT waits meanwhile: firmware and paho
// allow 30 s for the CONNACK; a refusal would only bring it back).
const (
	registryTimeout = 5 * time.Second
	slowQueueWait   = 25 * time.Second
)

func newVerifier(creds Credentials, slots int) *verifier {
	if slots < 1 {
		slots = 1
	}
	return &verifier{creds: creds, slow: make(chan struct{}, slots), seen: map[string]verified{}}
}

func credentialSum(hash, pw string) [32]byte {
	h := sha256.New()
	h.Write([]byte(hash))
	h.Write([]byte{0})
	h.Write([]byte(pw))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// outcome of one check, for the broker's log.
type authOutcome int

const (
	authOK          authOutcome = iota
	authOKStale                 // admitted on the last verified hash: the registry did not answer
	authRefused                 // unknown charger or wrong password
	authUnavailable             // the registry did not answer and nothing was verified before
)

// check verifies pw for charger id; ctx ends with the broker. err is the
// registry's error, if any (reported with authOKStale and authUnavailable).
func (v *verifier) check(ctx context.Context, id, pw string) (authOutcome, error) {
	rctx, cancel := context.WithTimeout(ctx, registryTimeout)
	hash, ok, err := v.creds.ChargerPasswordHash(rctx, id)
	cancel()
	v.mu.Lock()
	last, known := v.seen[id]
	v.mu.Unlock()
	switch {
	case err != nil && known:
		if sum := credentialSum(last.hash, pw); subtle.ConstantTimeCompare(last.sum[:], sum[:]) == 1 {
			return authOKStale, err
		}
		return authRefused, nil
	case err != nil:
		return authUnavailable, err
	case !ok:
		v.forget(id)
		return authRefused, nil
	}
	sum := credentialSum(hash, pw)
	if known && last.hash == hash && subtle.ConstantTimeCompare(last.sum[:], sum[:]) == 1 {
		return authOK, nil
	}
	wait := time.NewTimer(slowQueueWait)
	defer wait.Stop()
	select {
	case v.slow <- struct{}{}:
	case <-wait.C:
		return authUnavailable, errors.New("too many password checks waiting")
	case <-ctx.Done():
		return authUnavailable, ctx.Err()
	}
	good := CheckPassword(hash, pw)
	v.slowChecks.Add(1)
	<-v.slow
	if !good {
		return authRefused, nil
	}
	v.mu.Lock()
	v.seen[id] = verified{hash: hash, sum: sum}
	v.mu.Unlock()
	return authOK, nil
}

func (v *verifier) forget(id string) {
	v.mu.Lock()
	delete(v.seen, id)
	v.mu.Unlock()
}
