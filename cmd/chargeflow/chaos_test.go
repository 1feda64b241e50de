package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// TestChaosEmbedded runs many sessions on the embedded stack (bbolt and the
// embedded broker, the default) while serve is killed with -9 three times
// at random moments, Pay Score fails now and then (5xx, system errors,
// executed calls whose answer is an error, failed debits, lost and
// duplicated notifications), and the chargers reconnect as firmware does
// (back-off with jitter). Every session is paid — none cancelled
// charger_never_started — each got one start cmd_id, and the sandbox
// ledger matches the bills to the fen.
func TestChaosEmbedded(t *testing.T) {
	const chargers, rounds = 12, 3
	bin := buildBinary(t)
	s := newStackWith(t, "embedded", chargers, bin, append([]string{"CHARGEFLOW_CONFIRM_TIMEOUT", "60s"}, windowTimeouts...)...)
	s.wait = 60 * time.Second
	for _, f := range []struct {
		path string
		n    int
		kind sandbox.FaultKind
	}{
		{payscore.PathCompleteOrder, 3, sandbox.FaultExecuted5xx},
		{payscore.PathDebit, 2, sandbox.Fault5xx},
		{payscore.PathQueryOrder, 4, sandbox.FaultSystemError},
		{payscore.PathRegisterDeduction, 2, sandbox.Fault5xx},
	} {
		if err := s.sb.FailNext(f.path, f.n, f.kind); err != nil {
			t.Fatal(err)
		}
	}
	s.sb.FailDebits(2)
	s.sb.LoseNotifications(5)
	s.sb.DuplicateNotifications(true)

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ids  []string
		errs []error
	)
	for i := range chargers {
		cp := fmt.Sprintf("CP-%d", i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				began := time.Now()
				id, err := chaosSession(s, cp, r)
				if d := time.Since(began); d > 15*time.Second {
					t.Logf("%s round %d: session %s took %s", cp, r, id, d.Round(time.Millisecond))
				}
				mu.Lock()
				if id != "" {
					ids = append(ids, id)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s round %d: %w", cp, r, err))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	// Three kill -9 at random moments while the sessions run.
	for range 3 {
		time.Sleep(time.Duration(2000+rand.IntN(3000)) * time.Millisecond)
		s.kill()
		time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
		s.start()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	var total, collected int64
	for _, id := range ids {
		v := s.waitState(id, "paid")
		checkPaid(t, s, v)
		total += v.AmountFen
		var starts []string
		for _, c := range s.fleet.Charger(v.ChargerID).Commands() {
			if c.Type == "start" && c.SessionID == id && !slices.Contains(starts, c.CmdID) {
				starts = append(starts, c.CmdID)
			}
		}
		if len(starts) != 1 {
			t.Errorf("session %s: start cmd_ids %v, want one", id, starts)
		}
	}
	for _, l := range s.sb.Ledger() {
		collected += int64(l.Collected)
	}
	if len(ids) != chargers*rounds || collected != total {
		t.Fatalf("%d sessions paid of %d; sandbox collected %d fen, sessions billed %d", len(ids), chargers*rounds, collected, total)
	}
}

// chaosSession runs one session on cp to paid through a service that may
// be down at any moment: every request is repeated until the service
// answers (a creation with the same Idempotency-Key).
func chaosSession(s *stack, cp string, round int) (string, error) {
	c := s.fleet.Charger(cp)
	if err := c.Plug(1); err != nil {
		return "", err
	}
	var v view
	body := map[string]any{"charger_id": cp, "connector": 1, "openid": "o-" + cp, "max_amount_fen": 5000}
	if err := chaosCall(s, "POST", "/v1/sessions", body, &v, "Idempotency-Key", fmt.Sprintf("chaos-%s-%d", cp, round)); err != nil {
		return "", err
	}
	if err := s.sb.Confirm(v.OutOrderNo); err != nil {
		return v.ID, err
	}
	if err := chaosState(s, v.ID, "charging"); err != nil {
		return v.ID, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for si, ok := c.Session(1); !ok || c.Register(1) < si.StartWh+50+int64(rand.IntN(100)); si, ok = c.Session(1) {
		if time.Now().After(deadline) {
			return v.ID, fmt.Errorf("no energy on %s", cp)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := chaosCall(s, "POST", "/v1/sessions/"+v.ID+"/stop", nil, nil); err != nil {
		return v.ID, err
	}
	if err := chaosState(s, v.ID, "paid"); err != nil {
		return v.ID, err
	}
	return v.ID, c.Unplug(1)
}

// chaosCall sends a request until the service answers it with a 2xx (into
// out, when not nil); a refused connection, a 5xx or a 409 (a creation with
// this key still in progress) is tried again, for up to a minute.
func chaosCall(s *stack, method, path string, body, out any, headers ...string) error {
	raw, _ := json.Marshal(body)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(raw)
		}
		req, err := http.NewRequest(method, s.base+path, r)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+appToken)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := s.http.Do(req)
		code, data := 0, []byte(nil)
		if err == nil {
			data, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
			if code/100 == 2 {
				if out != nil {
					return json.Unmarshal(data, out)
				}
				return nil
			}
			if code/100 != 5 && code != http.StatusConflict {
				return fmt.Errorf("%s %s: %d %s", method, path, code, data)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s: no answer in a minute (last %d %s, %v)", method, path, code, data, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chaosState waits until session id is in state; a terminal state that is
// not it is an error at once.
func chaosState(s *stack, id, state string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var v view
		if err := chaosCall(s, "GET", "/v1/sessions/"+id, nil, &v); err != nil {
			return err
		}
		switch {
		case v.State == state:
			return nil
		case v.State == "cancelled" || v.State == "refunded" || (v.State == "paid" && state != "paid"):
			return fmt.Errorf("session %s %s (%s), want %s; history %+v", id, v.State, v.CancelReason, state, v.History)
		case time.Now().After(deadline):
			return fmt.Errorf("session %s still %s, want %s", id, v.State, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
