package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/client/webhook"
	"github.com/chargeflow/chargeflow/internal/openapitest"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
)

const webhookSecret = "whsec-e2e-0123456789abcdef"

// receiver is the mini-program's backend in the test: a real HTTP server on
// a fixed address, so that it can go away and come back. It verifies every
// request (client/webhook.Verify), checks it against the document's
// webhooks section, answers 503 to the first failFirst requests and 204
// after, and records every attempt.
type receiver struct {
	t       *testing.T
	addr    string
	checker *openapitest.Checker

	mu        sync.Mutex
	srv       *http.Server
	failFirst int
	hold      chan struct{} // while set, acknowledged events get no answer
	attempts  []attempt
	problems  []string
	sample    struct{ header, body string }
}

type attempt struct {
	ev    webhook.Event
	seq   int64
	acked bool
}

func newReceiver(t *testing.T, failFirst int) *receiver {
	r := &receiver{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), failFirst: failFirst}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hooks/chargeflow" }

func (r *receiver) start() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may still be held for a moment after stop
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("receiver listen: %v", err)
	}
	srv := &http.Server{Handler: r}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop takes the receiver away: connections are refused until start.
func (r *receiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, webhook.MaxBodyBytes))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	header := req.Header.Get(webhook.SignatureHeader)
	ev, verr := webhook.ConstructEvent(webhookSecret, header, body, 0)
	if held := r.record(w, ev, verr, header, body, req.Header); held != nil {
		select { // processed, but the answer never leaves
		case <-held:
		case <-req.Context().Done():
		}
	}
}

// record checks and records one attempt and answers it, except while the
// receiver holds: then it returns the channel to wait on, unanswered.
func (r *receiver) record(w http.ResponseWriter, ev webhook.Event, verr error, header string, body []byte, h http.Header) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if verr != nil {
		r.problems = append(r.problems, fmt.Sprintf("unverifiable event: %v", verr))
		http.Error(w, verr.Error(), http.StatusBadRequest)
		return nil
	}
	if r.checker != nil {
		if err := r.checker.CheckWebhook(ev.Type, h, body); err != nil {
			r.problems = append(r.problems, err.Error())
		}
	}
	_, seq, err := store.ParseEventID(ev.ID)
	if err != nil {
		r.problems = append(r.problems, err.Error())
	}
	r.sample.header, r.sample.body = header, string(body)
	a := attempt{ev: ev, seq: seq}
	if len(r.attempts) >= r.failFirst {
		a.acked = true
	}
	r.attempts = append(r.attempts, a)
	switch {
	case !a.acked:
		http.Error(w, "not now", http.StatusServiceUnavailable)
	case r.hold != nil:
		return r.hold
	default:
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

// setHold makes the receiver process events without answering (on), or
// answer again, releasing the held requests (off).
func (r *receiver) setHold(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case on && r.hold == nil:
		r.hold = make(chan struct{})
	case !on && r.hold != nil:
		close(r.hold)
		r.hold = nil
	}
}

// acks counts the acknowledged attempts of event id.
func (r *receiver) acks(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.attempts {
		if a.acked && a.ev.ID == id {
			n++
		}
	}
	return n
}

// delivered returns a session's events as first acknowledged, one per id.
func (r *receiver) delivered(session string) []webhook.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []webhook.Event
	for _, a := range r.attempts {
		if a.acked && a.ev.Data.ID == session && !seen[a.ev.ID] {
			seen[a.ev.ID] = true
			out = append(out, a.ev)
		}
	}
	return out
}

// checkOrder: no attempt of a session's event came before every earlier
// event of that session had been acknowledged (nothing is given up here).
func (r *receiver) checkOrder(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	firstAck := map[string]int{} // event id → index of its first ack
	for i, a := range r.attempts {
		if _, ok := firstAck[a.ev.ID]; !ok && a.acked {
			firstAck[a.ev.ID] = i
		}
	}
	for i, a := range r.attempts {
		for j, b := range r.attempts {
			if b.ev.Data.ID != a.ev.Data.ID || b.seq >= a.seq {
				continue
			}
			if ack, ok := firstAck[b.ev.ID]; !ok || ack > i {
				t.Errorf("attempt %d of %s (%s) came before %s (%s, seen at %d) was delivered", i, a.ev.ID, a.ev.Type, b.ev.ID, b.ev.Type, j)
			}
		}
	}
}

// TestWebhooksSurviveOutagesAndKill: the receiver refuses the first
// attempts, goes away while sessions move on, the service is killed (-9)
// and restarted meanwhile, then the receiver comes back: every event of
// every session arrives, verifiable, in order per session, once the
// duplicates are dropped by id, and the delivery log says delivered.
func TestWebhooksSurviveOutagesAndKill(t *testing.T) {
	bin := buildBinary(t)
	for _, backend := range []string{"embedded", "external"} {
		t.Run(backend, func(t *testing.T) {
			rcv := newReceiver(t, 3)
			s := newStackWith(t, backend, 2, bin, "CHARGEFLOW_WEBHOOK_URL", rcv.url(),
				"CHARGEFLOW_WEBHOOK_SECRET", webhookSecret, "CHARGEFLOW_WEBHOOK_RETRY", "100ms,300ms")
			s.wait = 60 * time.Second
			doc := s.mustDo("GET", "/openapi.json", "", nil, 200)
			checker, err := openapitest.New(doc)
			if err != nil {
				t.Fatal(err)
			}
			rcv.mu.Lock()
			rcv.checker = checker
			rcv.mu.Unlock()

			// A: paid and partly refunded while the receiver refuses its first attempts.
			a := s.charge("CP-1", 5000)
			s.mustDo("POST", "/v1/sessions/"+a.ID+"/stop", appToken, nil, 202)
			v := s.waitState(a.ID, "paid")
			if v.AmountFen < 2 {
				t.Fatalf("billed %d fen: too little for a partial refund", v.AmountFen)
			}
			s.mustDo("POST", "/v1/sessions/"+a.ID+"/refund", opsToken, map[string]any{"amount_fen": 1, "reason": "e2e"}, 202)
			s.waitFor("refund of "+a.ID, func() bool {
				r := s.get(a.ID).Refunds
				return len(r) == 1 && r[0].Status == "succeeded"
			})

			// B starts while the receiver takes its first event but never
			// answers; the service is killed (-9) in that attempt; the
			// receiver goes away, the service starts again, the receiver
			// comes back. The restarted instance takes the killed attempt's
			// claim back and sends the event again: the receiver sees it
			// twice (at least once).
			rcv.setHold(true)
			b := s.charge("CP-2", 5000)
			var bCreated string
			s.waitFor("B's first event held", func() bool {
				if evs := rcv.delivered(b.ID); len(evs) > 0 {
					bCreated = evs[0].ID
				}
				return bCreated != "" && rcv.acks(bCreated) == 1
			})
			s.kill()
			rcv.stop()
			rcv.setHold(false)
			s.start()
			s.waitCharger("CP-2", true)
			rcv.start()
			s.mustDo("POST", "/v1/sessions/"+b.ID+"/stop", appToken, nil, 202)
			s.waitState(b.ID, "paid")

			for _, id := range []string{a.ID, b.ID} {
				want := []string{}
				for _, h := range s.get(id).History {
					want = append(want, "session."+h.To)
				}
				if id == a.ID {
					want = append(want, webhook.TypeRefundSucceeded)
				}
				var got []string
				s.waitFor("every event of "+id, func() bool {
					got = nil
					for _, ev := range rcv.delivered(id) {
						got = append(got, ev.Type)
					}
					return len(got) >= len(want)
				})
				if !slices.Equal(got, want) {
					t.Errorf("session %s: delivered %v, want %v", id, got, want)
				}
				evs := rcv.delivered(id)
				for i := 1; i < len(evs); i++ {
					if evs[i].Data.Version <= evs[i-1].Data.Version && evs[i].Type != webhook.TypeRefundSucceeded {
						t.Errorf("session %s: %s carries version %d after %s's %d", id, evs[i].Type, evs[i].Data.Version, evs[i-1].Type, evs[i-1].Data.Version)
					}
				}
				var log struct {
					Deliveries []struct {
						ID       string `json:"id"`
						Status   string `json:"status"`
						Attempts int    `json:"attempts"`
					} `json:"deliveries"`
				}
				s.waitFor("the log of "+id+" says delivered", func() bool {
					if err := json.Unmarshal(s.mustDo("GET", "/v1/webhooks/deliveries?session_id="+id, opsToken, nil, 200), &log); err != nil {
						t.Fatal(err)
					}
					for _, d := range log.Deliveries {
						if d.Status != "delivered" {
							return false
						}
					}
					return len(log.Deliveries) == len(want)
				})
			}
			if n := rcv.acks(bCreated); n < 2 {
				t.Errorf("the event whose answer was lost with the killed service was received %d times, want it again", n)
			}
			rcv.checkOrder(t)
			rcv.mu.Lock()
			problems, sample, n := rcv.problems, rcv.sample, len(rcv.attempts)
			rcv.mu.Unlock()
			t.Logf("%d attempts reached the receiver for %d+%d events", n, len(rcv.delivered(a.ID)), len(rcv.delivered(b.ID)))
			for _, p := range problems {
				t.Error(p)
			}

			// A forged or a stale event is refused by the verifier.
			if err := webhook.Verify(webhookSecret, sample.header, []byte(sample.body+" "), 0); !errors.Is(err, webhook.ErrNoValidSignature) {
				t.Errorf("altered body: %v", err)
			}
			if err := webhook.Verify("another-secret-0123456789", sample.header, []byte(sample.body), 0); !errors.Is(err, webhook.ErrNoValidSignature) {
				t.Errorf("another secret: %v", err)
			}
			if err := webhook.VerifyAt(webhookSecret, sample.header, []byte(sample.body), time.Minute, time.Now().Add(time.Hour)); !errors.Is(err, webhook.ErrTooOld) {
				t.Errorf("stale: %v", err)
			}
		})
	}
}
