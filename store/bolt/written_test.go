package boltstore_test

import (
	"errors"
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// A commit takes the replaced record's version and keys from what the store
// wrote last for that session (written.go) only while the stored bytes are
// those bytes: a record put there by anything else (a restore, a file
// written before Open) is decoded, so its version is the one checked and
// its out_order_no the one removed.
func TestCommitReadsARecordItDidNotWrite(t *testing.T) {
	s := openAt(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	rec := storetest.Session("s", "CP", 1, storetest.T0)
	if err := s.CreateSession(ctx, store.Commit{Session: rec}); err != nil {
		t.Fatal(err)
	}
	rec.Version = 1
	rec.MaxAmountFen = 6000
	if err := s.Commit(ctx, store.Commit{Session: rec, ExpectedVersion: 1}); err != nil {
		t.Fatal(err)
	}
	// Another writer's record under the same id: version 9, another order.
	other := rec
	other.Version, other.OutOrderNo = 9, "OTHER"
	raw, err := store.MarshalSession(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := boltstore.PutRaw(s, "sessions", "s", raw); err != nil {
		t.Fatal(err)
	}
	if err := boltstore.PutRaw(s, "oon", "OTHER", []byte("s")); err != nil {
		t.Fatal(err)
	}
	// At the version this store wrote last: refused, the record is at 9.
	next := rec
	next.Version = 2
	if err := s.Commit(ctx, store.Commit{Session: next, ExpectedVersion: 2}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("commit at version 2 over a record at 9: %v, want a version conflict", err)
	}
	next.Version, next.State = 9, fsm.Cancelled
	if err := s.Commit(ctx, store.Commit{Session: next, ExpectedVersion: 9}); err != nil {
		t.Fatalf("commit at version 9: %v", err)
	}
	if _, err := s.SessionByOutOrderNo(ctx, "OTHER"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the replaced record's out_order_no still finds a session: %v", err)
	}
	got, err := s.SessionByOutOrderNo(ctx, rec.OutOrderNo)
	if err != nil || got.Version != 10 || got.State != fsm.Cancelled {
		t.Fatalf("by %s: version %d state %s, %v; want 10 cancelled", rec.OutOrderNo, got.Version, got.State, err)
	}
	// And what it wrote itself is used again: the next commit at 10 is taken.
	got.MaxAmountFen = 7000
	if err := s.Commit(ctx, store.Commit{Session: got, ExpectedVersion: 10}); err != nil {
		t.Fatalf("commit at version 10: %v", err)
	}
}
