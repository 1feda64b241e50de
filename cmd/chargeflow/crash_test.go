package main

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// buildBinary builds chargeflow once per test for a real process to kill.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chargeflow")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestKillDashNine kills the service (SIGKILL) in the middle of sessions at
// different stages — waiting for the user, charging, a complete whose reply
// never came, a debit whose reply never came, already paid — restarts it,
// and checks that every session finishes and the sandbox ledger matches the
// sessions to the fen.
func TestKillDashNine(t *testing.T) {
	bin := buildBinary(t)
	for _, backend := range []string{"external", "embedded"} {
		t.Run(backend, func(t *testing.T) {
			// A grace long enough for the chargers to reconnect to a
			// restarted embedded broker.
			s := newStackWith(t, backend, 5, bin, "CHARGEFLOW_OFFLINE_GRACE", "15s")
			// CP-1: paid before the crash.
			paid := s.charge("CP-1", 5000)
			s.mustDo("POST", "/v1/sessions/"+paid.ID+"/stop", appToken, nil, 202)
			s.waitState(paid.ID, "paid")

			// CP-2: waiting for the user's confirmation.
			_ = s.fleet.Charger("CP-2").Plug(1)
			waiting := s.create("CP-2", 5000)

			// CP-3: charging.
			charging := s.charge("CP-3", 5000)

			// CP-4: complete executed at Pay Score, its reply lost.
			completing := s.charge("CP-4", 5000)
			if err := s.sb.FailNext(payscore.PathCompleteOrder, 1, sandbox.FaultLostReply); err != nil {
				t.Fatal(err)
			}
			s.mustDo("POST", "/v1/sessions/"+completing.ID+"/stop", appToken, nil, 202)
			s.waitFor("complete executed", func() bool { o, _ := s.sb.Order(completing.OutOrderNo); return o.Completes == 1 })

			// CP-5: debit executed, its reply lost.
			debiting := s.charge("CP-5", 5000)
			if err := s.sb.FailNext(payscore.PathDebit, 1, sandbox.FaultLostReply); err != nil {
				t.Fatal(err)
			}
			s.sb.LoseNotifications(1) // and the payment notification too
			s.mustDo("POST", "/v1/sessions/"+debiting.ID+"/stop", appToken, nil, 202)
			s.waitFor("debit executed", func() bool { return s.ledger(debiting.OutOrderNo).Collected > 0 })

			// The restarted instance (same instance id) takes back the
			// claims of the killed one at once.
			s.kill()
			time.Sleep(300 * time.Millisecond) // chargers keep charging and queue what they send
			s.start()
			for _, cp := range []string{"CP-1", "CP-2", "CP-3", "CP-4", "CP-5"} {
				s.waitCharger(cp, true)
			}

			if err := s.sb.Confirm(waiting.OutOrderNo); err != nil {
				t.Fatal(err)
			}
			s.waitState(waiting.ID, "charging")
			c2 := s.fleet.Charger("CP-2")
			s.waitFor("energy on CP-2", func() bool { si, ok := c2.Session(1); return ok && c2.Register(1) > si.StartWh+50 })
			s.mustDo("POST", "/v1/sessions/"+waiting.ID+"/stop", appToken, nil, 202)
			s.mustDo("POST", "/v1/sessions/"+charging.ID+"/stop", appToken, nil, 202)

			var total int64
			for _, id := range []string{paid.ID, waiting.ID, charging.ID, completing.ID, debiting.ID} {
				v := s.waitState(id, "paid")
				checkPaid(t, s, v)
				total += v.AmountFen
			}
			var collected int64
			for _, l := range s.sb.Ledger() {
				collected += int64(l.Collected)
			}
			if collected != total {
				t.Fatalf("sandbox collected %d fen, sessions billed %d", collected, total)
			}
		})
	}
}
