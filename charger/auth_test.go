package charger

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// registry is an in-memory charger registry that can be told to fail.
type registry struct {
	mu     sync.Mutex
	hashes map[string]string
	down   error
}

func (r *registry) ChargerPasswordHash(_ context.Context, id string) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return "", false, r.down
	}
	h, ok := r.hashes[id]
	return h, ok, nil
}

func (r *registry) set(t *testing.T, id, pw string) {
	t.Helper()
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.hashes[id] = h
	r.mu.Unlock()
}

func TestVerifierCachesVerifiedCredentials(t *testing.T) {
	ctx := context.Background()
	reg := &registry{hashes: map[string]string{}}
	reg.set(t, "CP-1", "machine-secret-1")
	v := newVerifier(reg, 2)
	expect := func(what, id, pw string, want authOutcome, slow int64) {
		t.Helper()
		if got, err := v.check(ctx, id, pw); got != want {
			t.Fatalf("%s: outcome %d (%v), want %d", what, got, err, want)
		}
		if got := v.slowChecks.Load(); got != slow {
			t.Fatalf("%s: %d slow checks so far, want %d", what, got, slow)
		}
	}
	expect("first connect", "CP-1", "machine-secret-1", authOK, 1)
	expect("reconnect", "CP-1", "machine-secret-1", authOK, 1) // no slow hash
	expect("wrong password", "CP-1", "guess", authRefused, 2)  // never from the cache
	expect("reconnect after a wrong guess", "CP-1", "machine-secret-1", authOK, 2)
	expect("unknown charger", "CP-9", "machine-secret-1", authRefused, 2)

	// A new password registered: the old one is refused, the new verified once.
	reg.set(t, "CP-1", "machine-secret-2")
	expect("old password after a change", "CP-1", "machine-secret-1", authRefused, 3)
	expect("new password", "CP-1", "machine-secret-2", authOK, 4)
	expect("new password again", "CP-1", "machine-secret-2", authOK, 4)

	// The registry does not answer: a charger verified before is admitted
	// on its last verified credential; anything else is not.
	reg.mu.Lock()
	reg.down = errors.New("store timeout")
	reg.mu.Unlock()
	expect("verified charger, registry down", "CP-1", "machine-secret-2", authOKStale, 4)
	expect("old password, registry down", "CP-1", "machine-secret-1", authRefused, 4)
	expect("never seen charger, registry down", "CP-2", "whatever-secret", authUnavailable, 4)

	// A charger removed from the registry is forgotten.
	reg.mu.Lock()
	reg.down = nil
	delete(reg.hashes, "CP-1")
	reg.mu.Unlock()
	expect("removed charger", "CP-1", "machine-secret-2", authRefused, 4)
	reg.mu.Lock()
	reg.down = errors.New("store timeout")
	reg.mu.Unlock()
	expect("removed charger, registry down", "CP-1", "machine-secret-2", authUnavailable, 4)
}

// BenchmarkVerifier: a reconnect of a verified charger against the slow hash
// every connect paid before.
func BenchmarkVerifier(b *testing.B) {
	ctx := context.Background()
	reg := &registry{hashes: map[string]string{}}
	h, err := HashPassword("machine-secret-1")
	if err != nil {
		b.Fatal(err)
	}
	reg.hashes["CP-1"] = h
	b.Run("reconnect", func(b *testing.B) {
		v := newVerifier(reg, 1)
		for b.Loop() {
			if got, _ := v.check(ctx, "CP-1", "machine-secret-1"); got != authOK {
				b.Fatal(got)
			}
		}
	})
	b.Run("slow-hash", func(b *testing.B) {
		for b.Loop() {
			if !CheckPassword(h, "machine-secret-1") {
				b.Fatal("no match")
			}
		}
	})
}
