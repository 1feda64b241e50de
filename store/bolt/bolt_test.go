package boltstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	"github.com/chargeflow/chargeflow/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// opener reaches a fresh bbolt file; the store currently open on it is
// kept so CorruptSession can write through it (bbolt locks the file).
func opener(t *testing.T) storetest.Opener {
	dir := t.TempDir()
	var mu sync.Mutex
	var cur *boltstore.Store
	return storetest.Opener{
		Open: func(t *testing.T, now func() time.Time) store.Store {
			s, err := boltstore.Open(dir, boltstore.Options{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			cur = s
			mu.Unlock()
			return s
		},
		CorruptSession: func(t *testing.T, id string, raw []byte) {
			mu.Lock()
			defer mu.Unlock()
			if err := boltstore.PutRaw(cur, "sessions", id, raw); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestConformance(t *testing.T) { storetest.Run(t, opener) }

// A second Open of a held file fails after Options.Timeout instead of
// waiting forever, and says the store is unavailable (retryable).
func TestOpenLockedFileTimesOut(t *testing.T) {
	dir := t.TempDir()
	s, err := boltstore.Open(dir, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = boltstore.Open(dir, boltstore.Options{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, store.ErrUnavailable) || !store.IsRetryable(err) {
		t.Fatalf("second open: %v", err)
	}
	if _, err := filepath.Glob(filepath.Join(dir, boltstore.FileName)); err != nil {
		t.Fatal(err)
	}
}

// Expired records are swept, and a closed store refuses work.
func TestSweepAndClosed(t *testing.T) {
	clock := storetest.NewClock(storetest.T0)
	s, err := boltstore.Open(t.TempDir(), boltstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := s.PutIdempotency(ctx, "k", "h", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkProcessed(ctx, "txn", "e", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before expiry: %d %v", n, err)
	}
	clock.Add(90 * time.Second)
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	clock.Add(time.Minute)
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
	if _, err := s.ReadChanges(ctx, "", 1, time.Second); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("read changes after close: %v", err)
	}
}
