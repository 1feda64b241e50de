package session_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// TestConcurrentRefundsLoseNothing: many operators refund one paid session
// at the same moment, each with their own Idempotency-Key, asking together
// for twice what was paid. Every refund the engine accepts is in the
// session's refunds (under its own number, so its own req_seq_id), every
// other one is refused, the total never exceeds what was paid, a repeated
// key returns the same refund, and Huifu refunds exactly what was accepted.
func TestConcurrentRefundsLoseNothing(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st)
		s := h.paid("CP-R")
		paid := s.Payment.PaidFen
		const n = 12
		each := paid / (n / 2) // together twice what was paid
		if each*(n/2) != paid {
			t.Fatalf("paid %d does not split in %d", paid, n/2)
		}

		type outcome struct {
			key string
			id  string
			err error
		}
		out := make([]outcome, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range out {
			out[i].key = fmt.Sprintf("op-%d", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i].id, out[i].err = refund(h, s.ID, each, out[i].key)
			}()
		}
		close(start)
		wg.Wait()

		s = h.get(s.ID)
		byKey := map[string]fsm.Refund{}
		numbers := map[string]bool{}
		for _, r := range s.Refunds {
			byKey[r.Key] = r
			if numbers[r.ID] {
				t.Errorf("refund id %s twice", r.ID)
			}
			numbers[r.ID] = true
		}
		accepted := money.Fen(0)
		for _, o := range out {
			var refused *fsm.RefusedError
			switch {
			case o.err == nil:
				r, ok := byKey[o.key]
				if !ok || r.ID != o.id || r.AmountFen != each {
					t.Errorf("accepted refund %s (%s) is not in the session: %+v", o.key, o.id, s.Refunds)
				}
				accepted += each
			case errors.As(o.err, &refused):
				if _, ok := byKey[o.key]; ok {
					t.Errorf("refused refund %s is in the session", o.key)
				}
			default:
				t.Errorf("refund %s: %v", o.key, o.err)
			}
		}
		if accepted != paid || len(s.Refunds) != n/2 || s.RefundsCommittedFen() != paid {
			t.Fatalf("accepted %d of %d paid; session lists %d refunds, %d committed", accepted, paid, len(s.Refunds), s.RefundsCommittedFen())
		}

		// The same key again: the same refund, nothing more.
		for _, o := range out {
			if o.err != nil {
				continue
			}
			id, err := refund(h, s.ID, each, o.key)
			if err != nil || id != o.id {
				t.Fatalf("replay of %s: %s, %v; want %s", o.key, id, err, o.id)
			}
			break
		}

		// The same key for another amount is refused, and changes nothing.
		for _, o := range out {
			if o.err != nil {
				continue
			}
			var refused *fsm.RefusedError
			if _, err := refund(h, s.ID, each+1, o.key); !errors.As(err, &refused) {
				t.Fatalf("key %s reused for another amount: %v, want refused", o.key, err)
			}
			break
		}
		if got := h.get(s.ID); len(got.Refunds) != n/2 {
			t.Fatalf("a reused key changed the refunds: %+v", got.Refunds)
		}

		// Huifu refunds what was accepted, once each.
		s = h.waitState(s.ID, fsm.Refunded)
		o, _ := h.sb.Order(s.OutOrderNo)
		if len(o.Payments) != 1 || o.Payments[0].Refunded != paid {
			t.Fatalf("sandbox payments %+v, want %d refunded", o.Payments, paid)
		}
		for _, r := range s.Refunds {
			if r.Status != fsm.RefundSucceeded {
				t.Fatalf("refund %+v", r)
			}
		}
	})
}

// refund asks the engine for a refund and returns the refund it accepted.
func refund(h *harness, id string, amount money.Fen, key string) (string, error) {
	s, r, err := h.eng.Refund(bg, id, "ops", amount, "goodwill", key)
	if err != nil {
		return "", err
	}
	if got, ok := s.RefundByKey(key); !ok || got != r {
		return "", fmt.Errorf("refund %s answered %+v, the session has %+v", key, r, s.Refunds)
	}
	return r.ID, nil
}
