package storetest

import (
	"time"

	"github.com/chargeflow/chargeflow/store"
)

func testIdempotency(e *env) {
	t := e.t
	rec, created, err := e.s.PutIdempotency(e.ctx, "key-1", "hash-a", time.Minute)
	must(t, err)
	if !created || rec.RequestHash != "hash-a" || rec.Status != 0 {
		t.Fatalf("first put: %+v %v", rec, created)
	}
	rec, created, err = e.s.PutIdempotency(e.ctx, "key-1", "hash-b", time.Minute)
	must(t, err)
	if created || rec.RequestHash != "hash-a" || rec.Status != 0 {
		t.Fatalf("second put (in flight): %+v %v", rec, created)
	}
	wantErr(t, e.s.SaveIdempotentResponse(e.ctx, "key-1", store.IdemRecord{RequestHash: "hash-b", Status: 201}), store.ErrConflict)
	wantErr(t, e.s.SaveIdempotentResponse(e.ctx, "key-404", store.IdemRecord{RequestHash: "hash-a", Status: 201}), store.ErrNotFound)
	must(t, e.s.SaveIdempotentResponse(e.ctx, "key-1", store.IdemRecord{RequestHash: "hash-a", Status: 201, Body: []byte(`{"id":"s1"}`), SessionID: "s1"}))
	e.clock.Add(30 * time.Second)
	rec, created, err = e.s.PutIdempotency(e.ctx, "key-1", "hash-a", time.Minute)
	must(t, err)
	if created || rec.Status != 201 || string(rec.Body) != `{"id":"s1"}` || rec.SessionID != "s1" || !rec.ExpiresAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("replay: %+v %v", rec, created)
	}
	// after the ttl the key is free again
	e.clock.Add(31 * time.Second)
	wantErr(t, e.s.SaveIdempotentResponse(e.ctx, "key-1", store.IdemRecord{RequestHash: "hash-a", Status: 200}), store.ErrNotFound)
	rec, created, err = e.s.PutIdempotency(e.ctx, "key-1", "hash-b", time.Minute)
	must(t, err)
	if !created || rec.RequestHash != "hash-b" || rec.Status != 0 {
		t.Fatalf("put after expiry: %+v %v", rec, created)
	}
	must(t, e.s.DeleteIdempotency(e.ctx, "key-1"))
	must(t, e.s.DeleteIdempotency(e.ctx, "key-1"))
	if _, created, err := e.s.PutIdempotency(e.ctx, "key-1", "hash-c", time.Minute); err != nil || !created {
		t.Fatalf("put after delete: %v %v", created, err)
	}

	for i, want := range []bool{true, false, false} {
		first, err := e.s.MarkProcessed(e.ctx, "txn", "ev-1", time.Hour)
		must(t, err)
		if first != want {
			t.Fatalf("mark %d: first=%v", i, first)
		}
	}
	if first, _ := e.s.MarkProcessed(e.ctx, "meter", "ev-1", time.Hour); !first {
		t.Fatal("scopes are separate")
	}
	e.clock.Add(time.Hour + time.Millisecond)
	if first, _ := e.s.MarkProcessed(e.ctx, "txn", "ev-1", time.Hour); !first {
		t.Fatal("mark did not expire")
	}
}
