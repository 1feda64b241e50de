package session_test

import (
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/session"
)

// TestNewID: lower-case ULIDs, alphanumeric (they are embedded in
// req_seq_id as is), ordered by time, distinct.
func TestNewID(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := session.NewID(t0.Add(time.Duration(i) * time.Millisecond))
		if len(id) != 26 || seen[id] || id <= prev {
			t.Fatalf("id %q after %q", id, prev)
		}
		for _, c := range id {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
				t.Fatalf("id %q has %q", id, c)
			}
		}
		if rs := payscore.ReqSeqID(id, payscore.StepCreate, 1, "20261204"); rs != "CR000120261204"+id {
			t.Fatalf("req_seq_id %q of %q", rs, id)
		}
		seen[id], prev = true, id
	}
}
